r"""Trains a lesion segmenter (U-Net) and scores it on the test split.

  python -m experiments.train_segmenter --workdir=runs/unet [--dataset=synthetic_lesions] \
      [--model=unet] [--image_size=64] [--num_steps=2000] [--batch_size=16] [--seed=0]

Every field of the task config (lesion_jax/tasks/segmentation.py: SegmenterConfig) is a flag,
by its dotted path (`--model.features=32`, `--optimizer.warmup_steps=50`) and, where the name is
unique, by its last part (`--features=32`). `--labels=kmeans` (K-means pseudo-masks, settings
`--kmeans.k`, `--kmeans_k`, ...) and `--input_norm=dataset` (input statistics) are built before
training by SegmentationTask.prepare, stored under the input's artifact root (--artifact_dir).
Writes config.json, metrics.json (test/jaccard, test/jaccard_thresholded, test/dice, ...),
checkpoints/ (latest and best by val/jaccard), TensorBoard events, history.json and figures/.
"""
from absl import app, flags

from experiments import common
from lesion_jax.tasks import runner, segmentation

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_segmenter_flags()


def main(argv):
  del argv
  common.init_distributed()
  config = common.segmenter_config_from_flags()
  common.run_directory(FLAGS.workdir)
  scores = runner.run(segmentation.SegmentationTask(config), FLAGS.workdir)
  common.print_scores(scores)


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/segmentation/unet.py")
