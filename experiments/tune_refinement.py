r"""Chooses the superpixel refinement's parameters for a trained segmenter on a training or
validation split (never the split you report), by a small grid.

  python -m experiments.tune_refinement --workdir=runs/fcn --split=validation \
      [--fusion_weights=0.3,0.5,0.7,1.0] [--sigmas=5,10,20] [--seeds=0.8:0.2,0.7:0.3,0.9:0.1]

Scores every combination (JA, thresholded JA, Dice, HD95, boundary F), the network's own mask
(no refinement) first, and writes refine_grid_<split>.json into the workdir, best by --select
first. Copy the winner into a run with --superpixel_refine.fusion_weight=... etc., or evaluate
with it. The network runs once per combination (cheap beside the refinement); the superpixels
are computed once and stored.
"""
import dataclasses
import itertools
import os

from absl import app, flags, logging

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.tasks import runner, segmentation
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A segmentation run's --workdir.")
flags.mark_flag_as_required("workdir")
flags.DEFINE_string("split", "validation", "Split to tune on: a training or validation split, not the reported one.")
flags.DEFINE_list("fusion_weights", ["0.3", "0.5", "0.7", "1.0"], "Weights of the local map.")
flags.DEFINE_list("sigmas", ["5", "10", "20"], "Colour scales of the graph weights.")
flags.DEFINE_list("seeds", ["0.8:0.2", "0.7:0.3", "0.9:0.1"], "high:low seed thresholds.")
flags.DEFINE_string("select", "jaccard", "Score that ranks the grid (higher is better; hd95: lower).")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")


def grid() -> list[dict[str, float]]:
  seeds = [tuple(float(v) for v in s.split(":")) for s in FLAGS.seeds]
  return [{"fusion_weight": float(w), "sigma": float(s), "high": h, "low": lo}
          for w, s, (h, lo) in itertools.product(FLAGS.fusion_weights, FLAGS.sigmas, seeds)]


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  task = runner.load(FLAGS.workdir)
  if not isinstance(task, segmentation.SegmentationTask):
    raise config_lib.ConfigError(f"--workdir={FLAGS.workdir}: a {task.name!r} run; refinement tunes segmenters")
  mesh = sharding.make_mesh()
  state = runner.restore(task, FLAGS.workdir, common.checkpoint_flag_value(FLAGS.checkpoint), mesh)
  predict = task.jit_predict(state, mesh)
  keys = ("jaccard", "jaccard_thresholded", "dice", "hd95", "boundary_f", "refined_images")
  plain = type(task)(dataclasses.replace(task.config, refine="none")).evaluate(state, FLAGS.split, mesh, predict).scores
  rows = [{"refine": "none", **{k: plain.get(k) for k in keys}}]
  for params in grid():
    refine = dataclasses.replace(task.config.superpixel_refine, **params)
    tuned = type(task)(dataclasses.replace(task.config, refine="superpixel", superpixel_refine=refine))
    scores = tuned.evaluate(state, FLAGS.split, mesh, predict).scores
    rows.append({"refine": "superpixel", **params, **{k: scores.get(k) for k in keys}})
    logging.info("%s: %s", params, {k: round(scores[k], 4) for k in keys if k in scores})
  sign = 1.0 if FLAGS.select != "hd95" else -1.0
  rows.sort(key=lambda r: -sign * r[FLAGS.select])
  path = os.path.join(FLAGS.workdir, f"refine_grid_{FLAGS.split}.json")
  io.write_json(path, {"split": FLAGS.split, "select": FLAGS.select, "rows": rows})
  print(f"{'refine':10s} {'w':>4s} {'sigma':>5s} {'high':>4s} {'low':>4s} " + " ".join(f"{k[:10]:>10s}" for k in keys))
  for r in rows:
    print(f"{r['refine']:10s} {r.get('fusion_weight', ''):>4} {r.get('sigma', ''):>5} {r.get('high', ''):>4} "
          f"{r.get('low', ''):>4} " + " ".join(f"{r[k]:10.4f}" if r.get(k) is not None else f"{'':>10s}" for k in keys))
  print(f"wrote {path}")


if __name__ == "__main__":
  common.run(main)
