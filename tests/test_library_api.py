"""The curated library namespaces a notebook uses: models whose defaults are the trained defaults,
lesion_jax.metrics, lesion_jax.data.builder."""
import numpy as np
import pytest

from lesion_jax import data, metrics, models
from lesion_jax.tasks import segmentation


def test_a_unet_built_in_a_notebook_is_the_trained_default():
  config = segmentation.SegmenterModelConfig()
  net = models.UNet()
  for name in ("features", "levels", "norm", "upsample"):
    assert getattr(net, name) == getattr(config, name), name
  assert config.build() == models.get(config.name, features=config.features, levels=config.levels,
                                      norm=config.norm, upsample=config.upsample)


def test_metrics_by_their_public_names():
  pred = np.zeros((2, 8, 8), bool)
  pred[:, :, :4] = True
  truth = np.zeros((2, 8, 8), bool)
  truth[:, :, :2] = True
  assert metrics.jaccard(pred, truth) == pytest.approx(0.5)  # 16 of 32 pixels
  assert metrics.dice(pred[0], truth[0]) == pytest.approx(2 / 3)
  assert metrics.jaccard(truth, truth) == 1.0
  assert metrics.classification_scores is not None and metrics.segmentation_scores is not None


def test_a_dataset_by_name(tiny_data_dir, tiny_dataset):
  builder = data.builder(tiny_dataset, tiny_data_dir)
  assert builder.info.splits["train"].num_examples == 64 and "mask" in builder.info.features
