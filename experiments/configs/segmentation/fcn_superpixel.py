r"""Pipeline 2: an FCN whose coarse map is refined on SLIC superpixels, fused and cut by Otsu
(eval/superpixel_refine.py); scored with the refinement.

  python -m experiments.train --config=experiments/configs/segmentation/fcn_superpixel.py --workdir=runs/fcn
  python -m experiments.evaluate --workdir=runs/fcn --config.refine=none   # the FCN alone, same checkpoint

Wall time: about 10 minutes on a 2-core CPU. Measured: docs/results/pipeline2_superpixel.md.
"""
import dataclasses

from lesion_jax.tasks import segmentation


def get_config() -> segmentation.SegmenterConfig:
  base = segmentation.SegmenterConfig()
  return dataclasses.replace(base, model=dataclasses.replace(base.model, name="fcn"), refine="superpixel")
