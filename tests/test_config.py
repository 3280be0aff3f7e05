"""One source of configuration: nested dataclasses, exact round trips, typos refused; and the
learning-rate schedules the optimizer config names."""
import dataclasses
import json

import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.pipelines.self_learning import two_stage
from lesion_jax.tasks import base, classification, segmentation
from lesion_jax.train.state import learning_rate_schedule


def test_config_json_round_trips_exactly():
  seg = config_lib.replace(segmentation.SegmenterConfig(), {
      "model.name": "dilated_unet", "input.image_size": 32, "input.augment.color": 0.25,
      "run.checkpoint_every": 7, "mask_artifacts": "/tmp/masks"})
  for config in (seg, classification.ClassifierConfig(folds=5), two_stage.TwoStageConfig()):
    record = json.loads(json.dumps(config_lib.to_dict(config)))  # what config.json holds
    assert config_lib.from_dict(type(config), record) == config
  task = base.from_record(json.loads(json.dumps(segmentation.SegmentationTask(seg).describe())))
  assert isinstance(task, segmentation.SegmentationTask) and task.config == seg
  assert seg.model.name == "dilated_unet" and seg.input.augment == AugmentConfig(color=0.25)


def test_a_mistyped_key_is_refused_with_its_name():
  with pytest.raises(config_lib.ConfigError, match=r"`input.image_sise`: no such config key; did you mean `input.image_size`"):
    config_lib.from_dict(segmentation.SegmenterConfig, {"input": {"image_sise": 32}})
  with pytest.raises(config_lib.ConfigError, match="`model.featurs`"):
    config_lib.replace(segmentation.SegmenterConfig(), {"model.featurs": 8})
  with pytest.raises(config_lib.ConfigError, match="`run.num_steps`='many': must be int"):
    config_lib.from_dict(segmentation.SegmenterConfig, {"run": {"num_steps": "many"}})
  record = {"task": "segmentation", "config": {"learning_rate": 1e-3}}  # a flat, pre-runner key
  with pytest.raises(config_lib.ConfigError, match=r"config.json: `learning_rate`: no such config key"):
    base.from_record(record)
  with pytest.raises(ValueError, match="unknown task 'segmentatoin'"):
    base.from_record({"task": "segmentatoin", "config": {}})


def test_defaults_live_in_the_dataclasses():
  # The command-line defaults of train_segmenter / train_classifier are these (flags are
  # generated from the fields), and two_stage's U-Net keeps its own, smaller learning rate.
  seg, cls = segmentation.SegmenterConfig(), classification.ClassifierConfig()
  assert (seg.run.num_steps, seg.run.eval_every, seg.optimizer.learning_rate, seg.optimizer.warmup_steps) == (2000, 500, 2e-3, 100)
  assert (cls.run.num_steps, cls.run.eval_every, cls.optimizer.learning_rate, cls.input.batch_size) == (800, 200, 1e-3, 32)
  assert two_stage.TwoStageConfig().segmenter.optimizer.learning_rate == 1e-3
  paths = [leaf.path for leaf in config_lib.leaves(seg)]
  assert "optimizer.warmup_steps" in paths and "input.augment.color" in paths
  assert "input.joins" not in paths  # set in code (artifact joins), not from the command line


def _old_shape(record: dict) -> dict:
  """A config dict as written before RunConfig: the run fields at the top of the task's config."""
  run = dict(record.pop("run"))
  for new in ("test_split", "holdout", "holdout_seed"):  # new with RunConfig
    del run[new]
  model = {**record.pop("model"), "dtype": run.pop("precision")}  # each model's own until run.precision
  return {**record, **run, "model": model}


def test_records_written_before_run_config_load_with_each_tasks_defaults():
  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.gan import task as gan
  from lesion_jax.pipelines.lesion_index import feature_network
  from lesion_jax.pipelines.lesion_index import task as lesion_index
  from lesion_jax.pipelines.maskrcnn import task as maskrcnn
  from lesion_jax.pipelines.purification import task as inpainting
  from lesion_jax.pipelines.self_learning import self_learning
  # pylint: enable=g-import-not-at-top
  configs = [segmentation.SegmenterConfig(), classification.ClassifierConfig(), maskrcnn.MaskRCNNConfig(),
             lesion_index.LesionIndexConfig(), feature_network.FeatureNetworkConfig(), inpainting.InpainterConfig(),
             gan.GANConfig(), config_lib.replace(classification.ClassifierConfig(), {"run.val_split": "", "run.num_steps": 4})]
  for config in configs:
    old = _old_shape(config_lib.to_dict(config))
    assert "num_steps" in old and "run" not in old
    assert config_lib.from_dict(type(config), old) == config, type(config).__name__
    # a partial old record: the fields it lacks keep the task's own defaults, not RunConfig's
    assert config_lib.from_dict(type(config), {"log_every": 3}).run == dataclasses.replace(type(config)().run, log_every=3)
  assert gan.GANConfig().run.val_split == "train" and feature_network.FeatureNetworkConfig().run.num_steps == 3000
  # Pipelines: two-stage's segmenter, and self-learning's own test split (now its segmenter's).
  two = two_stage.TwoStageConfig()
  old = config_lib.to_dict(two)
  old["segmenter"] = _old_shape(old["segmenter"])
  assert config_lib.from_dict(two_stage.TwoStageConfig, old) == two
  seg = config_lib.replace(segmentation.SegmenterConfig(), {"run.test_split": "validation", "run.num_steps": 4})
  sl = self_learning.SelfLearningConfig(segmenter=seg)
  old = config_lib.to_dict(sl)
  old["segmenter"] = _old_shape(old["segmenter"])
  old["test_split"] = "validation"
  assert config_lib.from_dict(self_learning.SelfLearningConfig, old) == sl
  with pytest.raises(config_lib.ConfigError, match="`num_steps` and `run.num_steps` are the same field"):
    config_lib.from_dict(segmentation.SegmenterConfig, {"num_steps": 4, "run": {"num_steps": 5}})


def test_config_diff_names_dotted_paths():
  a = config_lib.to_dict(segmentation.SegmenterConfig())
  b = config_lib.to_dict(config_lib.replace(segmentation.SegmenterConfig(), {"model.norm": "group", "run.num_steps": 9}))
  assert config_lib.diff(a, b) == {"model.norm": ("batch", "group"), "run.num_steps": (2000, 9)}


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
