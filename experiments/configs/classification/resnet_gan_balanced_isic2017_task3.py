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

Budget: the DCGANs' 2000 rounds of 32 images per class at 64 px (gan/dcgan.py's) ran at 6 img/s on the
2-core CPU (about 3 hours) and were stopped; measured instead (2026-12-07, docs/results/isic2017_task3.md) at
CPU size: DCGANs at 32 px, 32 features, 1000 rounds (`--config.input.image_size=32
--config.model.generator_features=32 --config.model.discriminator_features=32 --config.run.num_steps=1000`;
Wall time: 5 minutes), then this classifier at 96 px for 2000 steps (`--config.input.image_size=96
--config.run.num_steps=2000`, about 25 minutes alone): mean ROC AUC 0.822 on the selection split (0.831 with
TTA; class-balanced resampling at the same budget 0.829) and 0.784 on Validation (0.794 with TTA; resampling
0.759).
"""
import dataclasses
import os

from experiments import common
from lesion_jax.tasks import classification

TASK3 = os.path.join(os.path.dirname(__file__), "resnet_isic2017_task3.py")


def get_config() -> classification.ClassifierConfig:
  return dataclasses.replace(common.load_config_file(TASK3), generated="runs/gan_isic", balanced=False)
