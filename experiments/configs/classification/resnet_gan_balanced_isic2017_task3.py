r"""Pipeline 3 (generation) as a row of ISIC 2017 Task 3 at challenge scale: the Task 3 ResNet-18 of
classification/resnet_isic2017_task3.py (three-way on `label` over all 2000 Training images of a Part 3-only
download, `isic2017/part3_512`; 128 px, half width, Shades of Gray; checkpoint and softmax temperature chosen on
a stratified fifth of Training, run.holdout, by mean_roc_auc; Validation scored once) whose scarce classes
(melanoma, seborrheic keratosis) are filled up to the nevi with a de-coupled DCGAN run's generated images
(near-copies left out) instead of class-balanced resampling. The DCGANs train on the classifier's own training
part only: the same stratified fifth of Training is held out (run.holdout=0.2, the same seed), so no image
that selects the checkpoint shaped a generated one. Nothing reads a lesion mask.

  python -m experiments.train --config=experiments/configs/gan/dcgan.py --workdir=runs/gan_isic \
      --config.input.dataset=isic2017/part3_512 --config.input.manual_dir=/data/isic2017_256 --config.run.holdout=0.2
  python -m experiments.train --config=experiments/configs/classification/resnet_gan_balanced_isic2017_task3.py \
      --workdir=runs/task3_resnet_gan --config.input.manual_dir=/data/isic2017_256 [--config.generated=runs/gan_isic]

Budget, sized for a 2-core CPU: the DCGANs' 2000 rounds of 32 images per class at 64 px (gan/dcgan.py's), then
the classifier's 4000 steps of 32 images at 128 px (the Task 3 ResNet's). Wall time: not yet measured. Results:
not yet measured; the Task 3 rows go on docs/results/isic2017_task3.md
(`experiments.report --metrics=test/melanoma_roc_auc,test/keratosis_roc_auc,test/mean_roc_auc`).
"""
import dataclasses
import os

from experiments import common
from lesion_jax.tasks import classification

TASK3 = os.path.join(os.path.dirname(__file__), "resnet_isic2017_task3.py")


def get_config() -> classification.ClassifierConfig:
  return dataclasses.replace(common.load_config_file(TASK3), generated="runs/gan_isic", balanced=False)
