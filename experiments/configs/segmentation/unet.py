r"""U-Net on `synthetic_lesions` (64 px): the segmentation default.

  python -m experiments.train --config=experiments/configs/segmentation/unet.py --workdir=runs/unet

Wall time: about 8 minutes on a 2-core CPU. Measured: test JA 0.92-0.93 (docs/results/segmentation.md,
"U-Net on synthetic_lesions"). On an archive: --config.input.dataset=isic2017
--config.input.manual_dir=/data/isic2017 (or use unet_isic2017.py).
"""
from lesion_jax.tasks import segmentation


def get_config() -> segmentation.SegmenterConfig:
  return segmentation.SegmenterConfig()
