r"""Pipeline 5 as a row of ISIC 2017 Task 3 at challenge scale: the LIN's FCRNs (lesion_index/fcrn_dr.py, DR; DM
by --config.augmentation=dm) on all 2000 Training images of a Part 3-only download (`isic2017/part3_512`, three
diagnoses, no lesion masks). The per-pixel classes (1 + diagnosis inside the lesion) are built from the masks of
the self-learned U-Net (segmentation/unet_selflearned_isic2017.py, trained on K-means pseudo-masks: no manual
mask anywhere), stored once by `segmenter_workdir`. 128 px training crops, tested at 128 and 160 px; each FCRN's
checkpoint is chosen on a stratified fifth of Training (run.holdout, the classifiers' split) by the LICU index's
mean_roc_auc; Validation is scored once. The LIN (lesion_index/lin.py) sums the two FCRNs' maps on Validation;
its test/ scores are the row (its segmentation scores there measure agreement with the U-Net's masks).

  python -m experiments.train --config=experiments/configs/segmentation/unet_selflearned_isic2017.py \
      --workdir=runs/unet_sl_isic --config.input.manual_dir=/data/isic2017_256
  python -m experiments.train --config=experiments/configs/lesion_index/fcrn_isic2017_task3.py \
      --workdir=runs/task3_fcrn_dr --config.input.manual_dir=/data/isic2017_256 [--config.segmenter_workdir=runs/unet_sl_isic]
  python -m experiments.train --config=experiments/configs/lesion_index/fcrn_isic2017_task3.py \
      --workdir=runs/task3_fcrn_dm --config.input.manual_dir=/data/isic2017_256 --config.augmentation=dm
  python -m experiments.train --config=experiments/configs/lesion_index/lin.py --workdir=runs/task3_lin \
      --config.dr_workdir=runs/task3_fcrn_dr --config.dm_workdir=runs/task3_fcrn_dm --config.split=validation

Budget, sized for a 2-core CPU: the U-Net's 2000 steps, one segmentation pass over the 2150 images, then 2000
steps of 8 crops at 128 px per FCRN (fcrn_small). Wall time: about 1 minute of training each (the segmenter-mask pass
about 1 minute, once), the LIN about 1 minute. Measured 2026-12-07 (docs/results/isic2017_task3.md): both FCRNs
chose step 500; LIN mean ROC AUC 0.702 on the selection split (`lin.py --config.split=selection`, the
FCRNs' own held-out fifth), 0.676 on Validation (melanoma 0.687, keratosis 0.665): far below the image classifiers at this
budget. With --config.run.num_steps=8000 --config.input.batch_size=16 (about 20 minutes each): 0.720 on the
selection split, 0.707 on Validation (melanoma 0.632, keratosis 0.781): little gain for 8x the images.
"""
import dataclasses
import os

from experiments import common
from lesion_jax.pipelines.lesion_index import task

DR = os.path.join(os.path.dirname(__file__), "fcrn_dr.py")


def get_config() -> task.LesionIndexConfig:
  base = common.load_config_file(DR)
  data = dataclasses.replace(base.input, dataset="isic2017/part3_512", image_size=128)
  run = dataclasses.replace(base.run, holdout=0.2, test_split="validation")
  return dataclasses.replace(base, input=data, run=run, test_scales=(128, 160), best_metric="mean_roc_auc",
                             segmenter_workdir="runs/unet_sl_isic")
