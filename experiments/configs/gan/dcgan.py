r"""Pipeline 3 (generation): de-coupled DCGANs, one per scarce class, then generated images (duplicate
check included) ready for a classifier's `generated`.

  python -m experiments.train --config=experiments/configs/gan/dcgan.py --workdir=runs/gan

Wall time: about 20 minutes on a 2-core CPU. Measured: docs/results/pipeline3_purification_generation.md.
"""
from lesion_jax.data import pipeline
from lesion_jax.pipelines.gan import task


def get_config() -> task.GANConfig:
  base = task.GANConfig()
  return task.GANConfig(input=pipeline.InputConfig(dataset="synthetic_lesions/imbalanced2017", batch_size=32,
                                                   image_size=64, augment=base.input.augment))
