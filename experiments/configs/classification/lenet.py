r"""LeNet-5 on whole images, melanoma (malignant) vs the rest, class-balanced sampling.

  python -m experiments.train --config=experiments/configs/classification/lenet.py --workdir=runs/lenet

Wall time: about 2 minutes on a 2-core CPU. Measured: not yet as this config (800 steps); the nearest is the
main job's raw-image LeNet-5 (1500 steps), test accuracy 76.5 % (docs/results/main_job.md).
"""
from lesion_jax.tasks import classification


def get_config() -> classification.ClassifierConfig:
  return classification.ClassifierConfig()
