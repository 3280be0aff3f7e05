r"""Pipeline 4 as a row of ISIC 2017 Task 3 at challenge scale: the modified AlexNet of
classification/alexnet_crops_5fold.py (SGD, AlexNet's recipe) on lesions cropped and blacked out (the skin
around them set to black) by a segmenter's masks, three-way on `label` over all 2000 Training images of a Part
3-only download (`isic2017/part3_512`, which has no lesion masks: the self-learned U-Net of
segmentation/unet_selflearned_isic2017.py, trained on K-means pseudo-masks, masks it; a Mask R-CNN run serves
the same way). Input, steps and selection are the Task 3 ResNet's (classification/resnet_isic2017_task3.py: 128
px, Shades of Gray; checkpoint and softmax temperature chosen on a stratified fifth of Training, run.holdout, by
mean_roc_auc; Validation scored once), so the row shares its data and split with the other pipelines' rows.

  python -m experiments.train --config=experiments/configs/segmentation/unet_selflearned_isic2017.py \
      --workdir=runs/unet_sl_isic --config.input.manual_dir=/data/isic2017_256
  python -m experiments.train --config=experiments/configs/classification/alexnet_crops_isic2017_task3.py \
      --workdir=runs/task3_alexnet_crops --config.input.manual_dir=/data/isic2017_256 \
      [--config.crop.segmenter_workdir=runs/unet_sl_isic]

The paper's protocol instead (5-fold cross-validation over Training, each fold selecting on its held-out part;
Validation as test/*_fold_mean, no single temperature):
  ... --config.folds=5 --config.run.holdout=0 --config.calibrate=false

Budget, sized for a 2-core CPU: the U-Net's 2000 steps (segmentation/unet_selflearned_isic2017.py), one
segmentation pass over the 2150 images (about 1 minute), then 4000 steps of 32 crops at 128 px. Wall time:
about 45 minutes of training alone (76 minutes measured on 2026-12-07 while benchmarks paused it). Measured
(its row on docs/results/isic2017_task3.md): mean ROC AUC (melanoma, keratosis) 0.745 on the selection split,
0.776 on Validation (0.785 with `evaluate --tta`: melanoma 0.718, keratosis 0.852); the ResNet of
resnet_isic2017_task3.py is better on the selection split (0.831).
"""
import dataclasses
import os

from experiments import common
from lesion_jax.tasks import classification

HERE = os.path.dirname(__file__)


def get_config() -> classification.ClassifierConfig:
  task3 = common.load_config_file(os.path.join(HERE, "resnet_isic2017_task3.py"))
  alexnet = common.load_config_file(os.path.join(HERE, "alexnet_crops_5fold.py"))
  return dataclasses.replace(alexnet, input=task3.input, run=task3.run, label_key=task3.label_key,
                             best_metric=task3.best_metric, calibrate=task3.calibrate, folds=1,
                             crop=dataclasses.replace(alexnet.crop, segmenter_workdir="runs/unet_sl_isic"))
