r"""The best measured U-Net on the ISIC 2017 sample: letterbox input, Shades of Gray colour constancy,
BCE + Dice, 128 px, 1500 steps on every Training image (no selection split: the last checkpoint is kept),
scored on Validation; evaluate / predict with --tta --fallback (flips at tta_scales).

  python -m experiments.train --config=experiments/configs/segmentation/unet_isic2017.py --workdir=runs/unet_isic \
      --config.input.manual_dir=/data/isic2017

Wall time: about 15 minutes on a 2-core CPU. Measured: Validation JA 0.651, 0.663 with TTA + fallback
(docs/results/isic2017_levers.md).
"""
import dataclasses

from lesion_jax.tasks import segmentation


def get_config() -> segmentation.SegmenterConfig:
  base = segmentation.SegmenterConfig()
  data = dataclasses.replace(base.input, dataset="isic2017", image_size=128, batch_size=8, geometry="letterbox",
                             color_constancy="shades_of_gray", augment=dataclasses.replace(base.input.augment, color=0.5))
  run = dataclasses.replace(base.run, num_steps=1500, eval_every=250, val_split="", test_split="validation")
  return dataclasses.replace(base, input=data, run=run, loss="bce_dice", tta_scales=(112, 128, 160))
