r"""Pipeline 1's classifier: LeNet-5 on lesion crops made with a segmenter run's masks (mask AND image,
cropped to the lesion, resized; stored once, and replayed by predict on each photo).

  python -m experiments.train --config=experiments/configs/segmentation/unet_selflearned.py --workdir=runs/unet_selflearned
  python -m experiments.train --config=experiments/configs/classification/lenet_crops.py --workdir=runs/lenet_crops \
      [--config.crop.segmenter_workdir=runs/unet_selflearned]

Wall time: about 2 minutes after the segmenter. Measured: not yet as this config; the nearest is the main
job's crop + LeNet-5 row (its own U-Net, 1500 steps): test accuracy 66.0 % (docs/results/main_job.md).
"""
from lesion_jax.tasks import classification


def get_config() -> classification.ClassifierConfig:
  return classification.ClassifierConfig(
      source="crops", crop=classification.LesionCropConfig(segmenter_workdir="runs/unet_selflearned"))
