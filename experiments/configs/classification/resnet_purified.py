r"""Pipeline 3: a quarter-width ResNet-18 on purified images (hairs and ruler marks detected classically and
filled by the partial-convolution inpainter; training and test images alike, and each photo in predict).

  python -m experiments.train --config=experiments/configs/purification/pconv_inpainter.py --workdir=runs/inpainter
  python -m experiments.train --config=experiments/configs/classification/resnet_purified.py --workdir=runs/resnet_purified \
      [--config.purify.inpainter_workdir=runs/inpainter]

Wall time: about 10 minutes after the inpainter on a 2-core CPU. Measured: docs/results/pipeline3_purification_generation.md.
"""
from lesion_jax.tasks import classification


def get_config() -> classification.ClassifierConfig:
  return classification.ClassifierConfig(
      model=classification.ClassifierModelConfig(name="resnet18", width=0.25), source="purified",
      purify=classification.PurifyConfig(inpainter_workdir="runs/inpainter"))
