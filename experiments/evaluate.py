r"""Scores a trained segmenter from its workdir, on any split, with overlay figures.

  python -m experiments.evaluate --workdir=runs/unet [--split=test] [--checkpoint=best] [--tta]

Restores the checkpoint, recomputes the metrics with the run's own config (so the test scores
equal those in metrics.json), writes eval_<split>.json and figures/eval_<split>_*.png. With
--tta, probabilities are averaged over the four flips of each image (files end in _tta).
"""
import os

from absl import app, flags

from experiments import common

from lesion_jax import io
from lesion_jax.tasks import segmentation

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a train_segmenter run.")
flags.mark_flag_as_required("workdir")
flags.DEFINE_string("split", "test", "Split to score (train, validation, test, or a TFDS slice).")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_bool("tta", False, "Test-time augmentation: average over horizontal/vertical flips.")


def main(argv):
  del argv
  common.init_distributed()
  config = segmentation.load_config(FLAGS.workdir)
  which = int(FLAGS.checkpoint) if FLAGS.checkpoint.isdigit() else FLAGS.checkpoint
  state = segmentation.restore(FLAGS.workdir, config, which)
  tag = FLAGS.split.replace("[", "_").replace("]", "").replace(":", "-").replace("%", "pct")
  tag += "_tta" if FLAGS.tta else ""
  scores = segmentation.score_split(state, config, FLAGS.workdir, FLAGS.split, prefix=f"eval_{tag}",
                                    tta=FLAGS.tta)
  scores = {k.replace(f"eval_{tag}/", f"{FLAGS.split}/"): v for k, v in scores.items()}
  scores["checkpoint"] = FLAGS.checkpoint
  scores["tta"] = FLAGS.tta
  io.write_json(os.path.join(FLAGS.workdir, f"eval_{tag}.json"), scores)
  print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()))


if __name__ == "__main__":
  app.run(main)
