r"""The best measured single melanoma classifier on the ISIC 2017 sample: LeNet-5 on whole images with
Shades of Gray colour constancy, 64 px, class-balanced sampling, checkpoint chosen by ROC AUC on a
stratified fifth of Training (run.holdout), Validation scored once.

  python -m experiments.train --config=experiments/configs/classification/lenet_isic2017.py --workdir=runs/lenet_isic \
      --config.input.manual_dir=/data/isic2017

Wall time: about 2.5 minutes on a 2-core CPU. Measured: Validation melanoma AUC 0.62-0.65
(docs/results/isic2017_levers.md).
"""
import dataclasses

from lesion_jax.tasks import classification


def get_config() -> classification.ClassifierConfig:
  base = classification.ClassifierConfig()
  data = dataclasses.replace(base.input, dataset="isic2017", image_size=64, color_constancy="shades_of_gray")
  run = dataclasses.replace(base.run, num_steps=1500, eval_every=250, holdout=0.2, test_split="validation")
  return dataclasses.replace(base, input=data, run=run)
