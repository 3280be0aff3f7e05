r"""Pipeline 3 (generation): a quarter-width ResNet-18 whose scarce classes are filled with a DCGAN run's
generated images (near-copies of training images left out), on the imbalanced synthetic archive.

  python -m experiments.train --config=experiments/configs/gan/dcgan.py --workdir=runs/gan
  python -m experiments.train --config=experiments/configs/classification/resnet_gan_balanced.py --workdir=runs/resnet_gan \
      [--config.generated=runs/gan]

Wall time: about 10 minutes after the GAN on a 2-core CPU. Measured: docs/results/pipeline3_purification_generation.md.
"""
from lesion_jax.data import pipeline
from lesion_jax.tasks import classification


def get_config() -> classification.ClassifierConfig:
  return classification.ClassifierConfig(
      input=pipeline.InputConfig(dataset="synthetic_lesions/imbalanced2017", batch_size=32),
      model=classification.ClassifierModelConfig(name="resnet18", width=0.25), label_key="label",
      balanced=False, generated="runs/gan")
