"""One source of configuration: nested dataclasses, exact round trips, typos refused; and the
learning-rate schedules the optimizer config names."""
import json

import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.tasks import base, classification, segmentation, two_stage
from lesion_jax.train.state import learning_rate_schedule


def test_config_json_round_trips_exactly():
  seg = config_lib.replace(segmentation.SegmenterConfig(), {
      "model.name": "dilated_unet", "input.image_size": 32, "input.augment.color": 0.25,
      "checkpoint_every": 7, "mask_artifacts": "/tmp/masks"})
  for config in (seg, classification.ClassifierConfig(folds=5), two_stage.TwoStageConfig()):
    record = json.loads(json.dumps(config_lib.to_dict(config)))  # what config.json holds
    assert config_lib.from_dict(type(config), record) == config
  task = base.from_record(json.loads(json.dumps(segmentation.SegmentationTask(seg).describe())))
  assert isinstance(task, segmentation.SegmentationTask) and task.config == seg
  assert seg.model.name == "dilated_unet" and seg.input.augment == AugmentConfig(color=0.25)


def test_a_mistyped_key_is_refused_with_its_name():
  with pytest.raises(config_lib.ConfigError, match=r"'input.image_sise'.*did you mean 'image_size'"):
    config_lib.from_dict(segmentation.SegmenterConfig, {"input": {"image_sise": 32}})
  with pytest.raises(config_lib.ConfigError, match="'model.featurs'"):
    config_lib.replace(segmentation.SegmenterConfig(), {"model.featurs": 8})
  with pytest.raises(config_lib.ConfigError, match="'num_steps' must be int"):
    config_lib.from_dict(segmentation.SegmenterConfig, {"num_steps": "many"})
  record = {"task": "segmentation", "config": {"learning_rate": 1e-3}}  # a flat, pre-runner key
  with pytest.raises(config_lib.ConfigError, match=r"config.json: unknown config key 'learning_rate'"):
    base.from_record(record)
  with pytest.raises(ValueError, match="unknown task 'segmentatoin'"):
    base.from_record({"task": "segmentatoin", "config": {}})


def test_defaults_live_in_the_dataclasses():
  # The command-line defaults of train_segmenter / train_classifier are these (flags are
  # generated from the fields), and two_stage's U-Net keeps its own, smaller learning rate.
  seg, cls = segmentation.SegmenterConfig(), classification.ClassifierConfig()
  assert (seg.num_steps, seg.eval_every, seg.optimizer.learning_rate, seg.optimizer.warmup_steps) == (2000, 500, 2e-3, 100)
  assert (cls.num_steps, cls.eval_every, cls.optimizer.learning_rate, cls.input.batch_size) == (800, 200, 1e-3, 32)
  assert two_stage.TwoStageConfig().segmenter.optimizer.learning_rate == 1e-3
  paths = [leaf.path for leaf in config_lib.leaves(seg)]
  assert "optimizer.warmup_steps" in paths and "input.augment.color" in paths
  assert "input.joins" not in paths  # set in code (artifact joins), not from the command line


def test_config_diff_names_dotted_paths():
  a = config_lib.to_dict(segmentation.SegmenterConfig())
  b = config_lib.to_dict(config_lib.replace(segmentation.SegmenterConfig(), {"model.norm": "group", "num_steps": 9}))
  assert config_lib.diff(a, b) == {"model.norm": ("batch", "group"), "num_steps": (2000, 9)}


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
