r"""Pipeline 3 (generation): de-coupled DCGANs, one per scarce class, then generated images (duplicate
check included) ready for a classifier's `generated`.

  python -m experiments.train --config=experiments/configs/gan/dcgan.py --workdir=runs/gan

Wall time on a 2-core CPU (measured 2026-12-07, 100 rounds): 7 img/s at this size (64 px, 64 features), so the
2000 rounds take about 2.5 hours; the earlier "about 20 minutes" was wrong. At CPU size (--config.input.image_size=32
--config.model.generator_features=32 --config.model.discriminator_features=32 --config.run.num_steps=1000), as
pipeline 3's Task 3 row ran it on the 1600 Training images of isic2017/part3_512: 5.4 minutes.
Measured: docs/results/pipeline3_purification_generation.md.
"""
from lesion_jax.data import pipeline
from lesion_jax.pipelines.gan import task


def get_config() -> task.GANConfig:
  base = task.GANConfig()
  return task.GANConfig(input=pipeline.InputConfig(dataset="synthetic_lesions/imbalanced2017", batch_size=32,
                                                   image_size=64, augment=base.input.augment))
