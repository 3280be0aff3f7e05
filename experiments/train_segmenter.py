r"""Trains a lesion segmenter (U-Net) and scores it on the test split.

  python -m experiments.train_segmenter --workdir=runs/unet [--dataset=synthetic_lesions] \
      [--model=unet] [--image_size=64] [--num_steps=2000] [--batch_size=16] [--seed=0]

Every field of the task config (lesion_jax/tasks/segmentation.py: SegmenterConfig) is a flag,
by its dotted path (`--model.features=32`, `--optimizer.warmup_steps=50`) and, where the name is
unique, by its last part (`--features=32`). Writes config.json, metrics.json (test/jaccard,
test/jaccard_thresholded, test/dice, ...), checkpoints/ (latest and best by val/jaccard),
TensorBoard events, history.json and figures/.
"""
import dataclasses

from absl import app, flags

from experiments import common
from lesion_jax.data import pipeline
from lesion_jax.tasks import runner, segmentation
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_enum("labels", "ground_truth", ["ground_truth", "kmeans"],
                  "Train on the dataset's masks, or on K-means pseudo-masks (self-learning: no "
                  "manual labels; computed and stored first if missing). Test scores use ground truth.")
flags.DEFINE_enum("input_norm", "none", ["none", "dataset"],
                  "U-Nets: standardise the input per channel with the training split's mean and std "
                  "(measured here and stored in config.json; the purification paper's dilated U-Net does).")
common.define_segmenter_flags()


def main(argv):
  del argv
  common.init_distributed()
  config = common.segmenter_config_from_flags()
  # Refuse bad flags before minutes of annotation (and before config.json is written).
  segmentation.SegmentationTask(config).check(sharding.make_mesh(), [("test_split", config.run.test_split)])
  if FLAGS.input_norm == "dataset" and config.model.channel_mean is None:
    mean, std = pipeline.channel_statistics(config.input, config.run.train_split)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, channel_mean=mean, channel_std=std))
  if FLAGS.labels == "kmeans":
    store = common.ensure_kmeans_masks(config.input, [config.run.train_split, config.run.val_split])
    config = dataclasses.replace(config, mask_artifacts=store)
  common.run_directory(FLAGS.workdir)
  scores = runner.run(segmentation.SegmentationTask(config), FLAGS.workdir)
  common.print_scores(scores)


if __name__ == "__main__":
  common.run(main)
