"""Task configs from flat flag values, and the learning-rate schedules they name."""
import numpy as np
import pytest

from lesion_jax.data.augment import AugmentConfig
from lesion_jax.tasks import classification, segmentation
from lesion_jax.train.state import learning_rate_schedule


def test_flat_values_split_between_the_task_and_its_input():
  values = {"num_steps": 7, "model": "dilated_unet", "image_size": 32, "batch_size": 4,
            "color_jitter": 0.25, "num_classes": 3}  # num_classes belongs to neither: ignored
  config = segmentation.SegmenterConfig.from_flat_dict(values)
  assert (config.num_steps, config.model) == (7, "dilated_unet")
  assert (config.input.image_size, config.input.batch_size) == (32, 4)
  assert config.input.augment == AugmentConfig(color=0.25)
  off = classification.ClassifierConfig.from_flat_dict({"augment": False, "num_steps": 3})
  assert off.input.augment == AugmentConfig.off() and off.num_steps == 3


def test_cosine_schedule_warms_up_then_decays_to_one_percent():
  schedule = learning_rate_schedule("cosine", 1e-3, num_steps=100, warmup_steps=10)
  values = np.array([float(schedule(i)) for i in (0, 5, 10, 55, 100)])
  np.testing.assert_allclose(values[[0, 1, 2, 4]], [0.0, 5e-4, 1e-3, 1e-5], rtol=1e-5, atol=1e-9)
  assert 1e-5 < values[3] < 1e-3
  # Warm-up never takes more than half the run.
  assert float(learning_rate_schedule("cosine", 1.0, num_steps=20, warmup_steps=50)(10)) == pytest.approx(1.0)
  assert float(learning_rate_schedule("constant", 0.1, num_steps=5)(4)) == pytest.approx(0.1)
  with pytest.raises(ValueError, match="unknown lr_schedule"):
    learning_rate_schedule("step", 0.1, num_steps=5)
