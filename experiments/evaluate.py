r"""Scores a trained model from its workdir, on any split, with the task's figures.

  python -m experiments.evaluate --workdir=runs/unet [--split=test] [--checkpoint=best] [--tta] \
      [--refine=superpixel]

Works for every task's workdir (segmenter, classifier, ...): the task and its config come from
the run's config.json, so the scores equal those in metrics.json. Writes eval_<split>.json and
figures/eval_<split>_*.png. With --tta (segmentation), probabilities are averaged over the four
flips of each image (files end in _tta). With --refine=superpixel (segmentation), each map is
refined on SLIC superpixels first (eval/superpixel_refine.py; files end in _superpixel; the
superpixels of the split are computed and stored on first use).
"""
import os

from absl import app, flags

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.tasks import runner

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a training run (any task).")
flags.mark_flag_as_required("workdir")
flags.DEFINE_string("split", "test", "Split to score (train, validation, test, or a TFDS slice).")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_bool("tta", False, "Test-time augmentation (segmentation): average over horizontal/vertical flips.")
flags.DEFINE_enum("refine", None, ["none", "superpixel"],
                  "Segmentation: post-processing before scoring (default: the run's own --refine).")


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  task = runner.load(FLAGS.workdir)
  if FLAGS.refine is not None:
    if not hasattr(task.config, "refine"):
      raise config_lib.ConfigError(f"--refine: a {task.name!r} run has no refinement (segmentation runs do)")
    task = type(task)(config_lib.replace(task.config, {"refine": FLAGS.refine}))
  state = runner.restore(task, FLAGS.workdir, common.checkpoint_flag_value(FLAGS.checkpoint))
  tag = FLAGS.split.replace("[", "_").replace("]", "").replace(":", "-").replace("%", "pct")
  tag += "_tta" if FLAGS.tta else ""
  tag += "_superpixel" if getattr(task.config, "refine", "none") == "superpixel" else ""
  scores, _ = runner.evaluate(task, state, FLAGS.split, workdir=FLAGS.workdir, prefix=f"eval_{tag}",
                              predict="flip_tta" if FLAGS.tta else "predict")
  scores = {k.replace(f"eval_{tag}/", f"{FLAGS.split}/"): v for k, v in scores.items()}
  scores["checkpoint"] = FLAGS.checkpoint
  scores["tta"] = FLAGS.tta
  scores["refine"] = getattr(task.config, "refine", None)
  io.write_json(os.path.join(FLAGS.workdir, f"eval_{tag}.json"), scores)
  common.print_scores(scores)


if __name__ == "__main__":
  app.run(common.main_with_usage_errors(main))
