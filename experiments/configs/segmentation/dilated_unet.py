r"""Pipeline 3's segmenter: the purification paper's dilated U-Net, inputs standardised with the training
split's per-channel statistics (measured first and recorded in config.json).

  python -m experiments.train --config=experiments/configs/segmentation/dilated_unet.py --workdir=runs/dilated_unet

Wall time: about 10 minutes on a 2-core CPU. Measured: docs/results/pipeline3_purification_generation.md.
"""
import dataclasses

from lesion_jax.tasks import segmentation


def get_config() -> segmentation.SegmenterConfig:
  base = segmentation.SegmenterConfig()
  return dataclasses.replace(base, model=dataclasses.replace(base.model, name="dilated_unet"), input_norm="dataset")
