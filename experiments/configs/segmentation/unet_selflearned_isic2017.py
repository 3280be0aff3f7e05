r"""Pipeline 1's segmenter at archive scale: a U-Net trained on the K-means pseudo-masks of all 2000 ISIC 2017
Training images of a Part 3-only download (`isic2017/part3_512`: images and diagnoses, no lesion mask), with
no manual mask anywhere in training or checkpoint selection (the checkpoint is picked on the pseudo-masks of
a 10 % part of Training). The archive has no masks to score on, so the run scores nothing itself
(run.test_split=""); `evaluate` scores it on an archive with masks, e.g. the ISIC 2017 sample's Validation:

  python -m experiments.train --config=experiments/configs/segmentation/unet_selflearned_isic2017.py \
      --workdir=runs/unet_sl_isic --config.input.manual_dir=/data/isic2017_256
  python -m experiments.evaluate --workdir=runs/unet_sl_isic --split=validation \
      --config.input.dataset=isic2017 --config.input.manual_dir=/data/isic2017_sample [--tta --fallback]

Inputs are stretched to 128 px squares (the 256 px archive images are stretched squares already, so the
letterbox geometry that helped on the sample's true-aspect images means nothing here), Shades of Gray
colour constancy and BCE + Dice as in the best supervised recipe (unet_isic2017.py).

Wall time: about 20 minutes alone on a 2-core CPU (14 img/s; 40 minutes when shared). Measured (2026-12-07,
docs/results/isic2017_self_learning.md): the sample's Validation JA 0.616 (its K-means masks: 0.567; a U-Net
on the sample's 150 manual masks: 0.651), 0.615 with TTA + fallback; the sample's 150 Training masks 0.754.
Semi-supervised, the sample's 150 Training masks in place of those images' K-means masks
(--config.manual_masks.dataset=isic2017 --config.manual_masks.manual_dir=/data/isic2017_sample): Validation 0.627.
"""
import dataclasses

from lesion_jax.tasks import segmentation


def get_config() -> segmentation.SegmenterConfig:
  base = segmentation.SegmenterConfig()
  data = dataclasses.replace(base.input, dataset="isic2017/part3_512", image_size=128, batch_size=8,
                             color_constancy="shades_of_gray", augment=dataclasses.replace(base.input.augment, color=0.5))
  run = dataclasses.replace(base.run, num_steps=2000, eval_every=500, holdout=0.1, test_split="")
  return dataclasses.replace(base, input=data, run=run, loss="bce_dice", labels="kmeans", tta_scales=(112, 128, 160))
