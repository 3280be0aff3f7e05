r"""Scores a trained model from its workdir, on any split, with the task's figures.

  python -m experiments.evaluate --workdir=runs/unet [--split=test] [--checkpoint=best] [--tta]

Works for every task's workdir (segmenter, classifier, ...): the task and its config come from
the run's config.json, so the scores equal those in metrics.json. Writes eval_<split>.json and
figures/eval_<split>_*.png. With --tta (segmentation), probabilities are averaged over the four
flips of each image (files end in _tta).
"""
import os

from absl import app, flags

from experiments import common
from lesion_jax import io
from lesion_jax.tasks import runner

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a training run (any task).")
flags.mark_flag_as_required("workdir")
flags.DEFINE_string("split", "test", "Split to score (train, validation, test, or a TFDS slice).")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_bool("tta", False, "Test-time augmentation (segmentation): average over horizontal/vertical flips.")


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  task = runner.load(FLAGS.workdir)
  state = runner.restore(task, FLAGS.workdir, common.checkpoint_flag_value(FLAGS.checkpoint))
  tag = FLAGS.split.replace("[", "_").replace("]", "").replace(":", "-").replace("%", "pct")
  tag += "_tta" if FLAGS.tta else ""
  scores, _ = runner.evaluate(task, state, FLAGS.split, workdir=FLAGS.workdir, prefix=f"eval_{tag}",
                              predict="flip_tta" if FLAGS.tta else "predict")
  scores = {k.replace(f"eval_{tag}/", f"{FLAGS.split}/"): v for k, v in scores.items()}
  scores["checkpoint"] = FLAGS.checkpoint
  scores["tta"] = FLAGS.tta
  io.write_json(os.path.join(FLAGS.workdir, f"eval_{tag}.json"), scores)
  common.print_scores(scores)


if __name__ == "__main__":
  app.run(common.main_with_usage_errors(main))
