r"""Pipeline 3 (generation): a coupled DCGAN (CoGAN) over all classes, sharing its first layers.

  python -m experiments.train --config=experiments/configs/gan/cogan.py --workdir=runs/cogan

Wall time: about 20 minutes on a 2-core CPU. Measured: docs/results/pipeline3_purification_generation.md.
"""
import dataclasses

from lesion_jax.data import pipeline
from lesion_jax.pipelines.gan import task


def get_config() -> task.GANConfig:
  base = task.GANConfig()
  return dataclasses.replace(
      base, model=dataclasses.replace(base.model, coupled=True),
      input=dataclasses.replace(base.input, dataset="synthetic_lesions/ham7"))
