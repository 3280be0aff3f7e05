r"""Trains the Mask R-CNN lesion segmenter (pipeline 4, the mask-then-AlexNet paper) and scores it.

  python -m experiments.train_maskrcnn --workdir=runs/maskrcnn [--dataset=synthetic_lesions/s128] \
      [--image_size=128] [--depth=50] [--num_steps=2000] [--batch_size=4] [--paste=top]

Every field of MaskRCNNConfig (lesion_jax/pipelines/maskrcnn/task.py) is a flag (`--model.depth=101`,
`--rois_per_image=512`). Scores each image at its native resolution as the segmentation task
does (JA, thresholded JA, Dice, ...), plus box AP at IoU 0.5 / 0.75, the images where no lesion
was found, and the paper's Table I (lesion / background pixel confusion). Then
`train_classifier --model=alexnet --source=crops --segmenter_workdir=<this workdir> --folds=5`
classifies the blacked-out lesions.
"""
from absl import app, flags

from experiments import common
from lesion_jax.pipelines.maskrcnn import task as maskrcnn
from lesion_jax.tasks import runner
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_augment_flag()
common.define_config_flags(maskrcnn.MaskRCNNConfig(), aliases={"optimizer": "optimizer.name"},
                           skip={"mask_artifacts"})


def main(argv):
  del argv
  common.init_distributed()
  config = common.without_augmentation(common.config_from_flags(maskrcnn.MaskRCNNConfig()))
  task = maskrcnn.MaskRCNNTask(config)
  task.check(sharding.make_mesh(), [("run.test_split", config.run.test_split)])
  common.run_directory(FLAGS.workdir)
  common.print_scores(runner.run(task, FLAGS.workdir))


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/maskrcnn/maskrcnn.py")
