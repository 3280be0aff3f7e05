r"""Pipeline 3 (generation): a coupled DCGAN (CoGAN) over all classes, sharing its first layers.

  python -m experiments.train --config=experiments/configs/gan/cogan.py --workdir=runs/cogan

Wall time on a 2-core CPU (measured 2026-12-07, 20 rounds): 1.9 img/s at this size (64 px, 64 features, the seven
classes of ham7 coupled), so the 2000 rounds take about 9 hours; the earlier "about 20 minutes" was wrong. Shrink
it as gan/dcgan.py's docstring says (32 px, 32 features, fewer rounds) for a CPU run.
Measured: docs/results/pipeline3_purification_generation.md.
"""
import dataclasses

from lesion_jax.data import pipeline
from lesion_jax.pipelines.gan import task


def get_config() -> task.GANConfig:
  base = task.GANConfig()
  return dataclasses.replace(
      base, model=dataclasses.replace(base.model, coupled=True),
      input=dataclasses.replace(base.input, dataset="synthetic_lesions/ham7"))
