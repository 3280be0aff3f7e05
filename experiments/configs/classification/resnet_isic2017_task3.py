r"""ISIC 2017 Part 3 (Task 3) at challenge scale: nevus / melanoma / seborrheic keratosis, softmax over the three
diagnoses of all 2000 Training images of a Part 3-only download (`isic2017/part3_512`), ResNet-18 from scratch at
128 px (half width), Shades of Gray, class-balanced batches, flips / rotations / crops / colour jitter. The
checkpoint is chosen by the challenge's ranking score (mean of the melanoma and keratosis ROC AUCs) on a stratified
fifth of Training (run.holdout), where the softmax temperature is fitted too (calibrate); Validation is scored
once.

  python -m experiments.train --config=experiments/configs/classification/resnet_isic2017_task3.py \
      --workdir=runs/task3_resnet18 --config.input.manual_dir=/data/isic2017_256
  python -m experiments.evaluate --workdir=runs/task3_resnet18 --split=validation --tta

The ablation rows of docs/results/isic2017_task3.md are overrides of this file (its header lists them).
Wall time: about 45 minutes on a 2-core CPU (4000 steps of 32 at 128 px, ~50 img/s alone).
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
