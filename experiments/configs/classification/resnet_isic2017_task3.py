r"""ISIC 2017 Part 3 (Task 3) at challenge scale: nevus / melanoma / seborrheic keratosis, softmax over the three
diagnoses of all 2000 Training images of a Part 3-only download (`isic2017/part3_512`), ResNet-18 from scratch at
128 px (half width), Shades of Gray, class-balanced batches, flips / rotations / crops / colour jitter. The
checkpoint is chosen by the challenge's ranking score (mean of the melanoma and keratosis ROC AUCs) on a stratified
fifth of Training (run.holdout), where the softmax temperature is fitted too (calibrate); Validation is scored
once.

  python -m experiments.train --config=experiments/configs/classification/resnet_isic2017_task3.py \
      --workdir=runs/task3_resnet18 --config.input.manual_dir=/data/isic2017_256
  python -m experiments.evaluate --workdir=runs/task3_resnet18 --split=validation --tta
  python -m experiments.predict --workdir=runs/task3_resnet18 --images='photos/*.jpg' --out=out --tta

The best single network of docs/results/isic2017_task3.md (chosen on the selection split): predict gives
its calibrated nevus / melanoma / seborrheic keratosis probabilities (p_<class> columns). The ablation
rows of that page are overrides of this file (each row's command).
Wall time: about 45 minutes on a 2-core CPU (4000 steps of 32 at 128 px, ~60 img/s alone).
Measured (2026-12-07, best checkpoint step 3000): selection split mean ROC AUC 0.830 (0.831 with TTA);
Validation melanoma / keratosis / mean 0.676 / 0.821 / 0.749, with TTA 0.700 / 0.836 / 0.768; Validation
ECE 0.156, 0.050 at the fitted temperature 1.94. Averaged with the colour baseline
(experiments.abcd_classifier --features=colour) and the 96 px run, 0.855 / 0.791 (selection / Validation).
"""
import dataclasses

from lesion_jax.tasks import classification


def get_config() -> classification.ClassifierConfig:
  base = classification.ClassifierConfig()
  data = dataclasses.replace(base.input, dataset="isic2017/part3_512", image_size=128, color_constancy="shades_of_gray",
                             augment=dataclasses.replace(base.input.augment, color=0.1))
  model = dataclasses.replace(base.model, name="resnet18", width=0.5)
  run = dataclasses.replace(base.run, num_steps=4000, eval_every=500, holdout=0.2, test_split="validation")
  return dataclasses.replace(base, input=data, model=model, run=run, label_key="label", best_metric="mean_roc_auc",
                             calibrate=True)
