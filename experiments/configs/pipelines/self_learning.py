r"""Pipeline 1, iterated: K-means pseudo-masks -> U-Net -> the U-Net relabels every unlabelled image ->
a new U-Net on its confident masks -> ... (rounds); each round is a segmentation run in round_<r>/.

  python -m experiments.train --config=experiments/configs/pipelines/self_learning.py --workdir=runs/self_learning

Wall time: about 25 minutes on a 2-core CPU (3 U-Nets). Measured: docs/results/pipeline1_self_learning.md.
"""
from lesion_jax.pipelines.self_learning import self_learning


def get_config() -> self_learning.SelfLearningConfig:
  return self_learning.SelfLearningConfig()
