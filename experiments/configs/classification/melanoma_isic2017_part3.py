r"""Paper 1's Table 2 at ISIC 2017 scale: melanoma vs the rest on all 2000 Training images of a Part 3-only
download (`isic2017/part3_512`), LeNet-5 at 64 px with Shades of Gray and class-balanced sampling; the
checkpoint is chosen by ROC AUC on a stratified fifth of Training (run.holdout) and Validation is scored once.
The table's other rows are overrides of this file (the ResNet, the self-learned U-Net's lesion crops):

  python -m experiments.train --config=experiments/configs/classification/melanoma_isic2017_part3.py \
      --workdir=runs/t2_lenet_raw --config.input.manual_dir=/data/isic2017_256
  ... --workdir=runs/t2_resnet_raw --config.model.name=resnet18 --config.model.width=0.25
  ... --workdir=runs/t2_lenet_crops --config.source=crops --config.crop.segmenter_workdir=runs/unet_sl_isic

Wall time: about 5 minutes on a 2-core CPU (ResNet-18 at quarter width: 6; with crops add the segmenter's
pass over 2150 images). Measured (2026-12-07, docs/results/isic2017_table2.md), Validation melanoma ROC AUC:
LeNet-5 raw 0.688, on crops 0.675; ResNet-18 quarter width raw 0.723, on crops 0.708 (the crops do not help).
"""
import dataclasses

from lesion_jax.tasks import classification


def get_config() -> classification.ClassifierConfig:
  base = classification.ClassifierConfig()
  data = dataclasses.replace(base.input, dataset="isic2017/part3_512", image_size=64, color_constancy="shades_of_gray")
  run = dataclasses.replace(base.run, num_steps=2000, eval_every=250, holdout=0.2, test_split="validation")
  return dataclasses.replace(base, input=data, run=run)
