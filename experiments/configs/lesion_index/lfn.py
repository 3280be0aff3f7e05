r"""Pipeline 5: the Lesion Feature Network (ISIC 2017 task 2: dermoscopic features) on superpixel patches.

  python -m experiments.train --config=experiments/configs/lesion_index/lfn.py --workdir=runs/lfn
  # ISIC 2017 task 2: --config.input.dataset=isic2017_features --config.input.manual_dir=/data/isic2017

Wall time: about 15 minutes on a 2-core CPU. Measured: docs/results/pipeline5_lin.md (LFN).
"""
from lesion_jax.data import pipeline
from lesion_jax.pipelines.lesion_index import feature_network


def get_config() -> feature_network.FeatureNetworkConfig:
  base = feature_network.FeatureNetworkConfig()
  return feature_network.FeatureNetworkConfig(
      input=pipeline.InputConfig(dataset="synthetic_lesions/features64", batch_size=base.input.batch_size))
