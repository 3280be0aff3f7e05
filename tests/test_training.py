"""The shared loop through the segmentation task: resume is exact, runs are deterministic,
checkpoints keep latest and best, and the step jits once."""
import dataclasses
import os

import jax
import numpy as np
import pytest

from lesion_jax import checkpoint, io
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.tasks import runner, segmentation
from lesion_jax.train.state import OptimizerConfig


def train(config, workdir):
  return runner.train(segmentation.SegmentationTask(config), workdir)


@pytest.fixture(scope="module")
def config(tiny_data_dir, tiny_dataset):
  return segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      model=segmentation.SegmenterModelConfig(features=4, levels=2),
      run=RunConfig(num_steps=6, eval_every=3, log_every=3),
      # the cosine schedule depends on num_steps, which the resume test varies
      optimizer=OptimizerConfig(learning_rate=1e-3, lr_schedule="constant"))


@pytest.fixture(scope="module")
def straight_run(config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  train(config, workdir)
  return workdir


def _params(workdir, config, which):
  return jax.device_get(runner.restore(segmentation.SegmentationTask(config), workdir, which).params)


def test_resumed_run_equals_uninterrupted_run(config, straight_run, tmp_path):
  workdir = str(tmp_path)
  train(dataclasses.replace(config, run=dataclasses.replace(config.run, num_steps=3)), workdir)  # "interrupted" at step 3
  with checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), "val/jaccard", read_only=True) as c:
    assert c.latest_step() == 3
  train(config, workdir)  # resumes from step 3 up to 6
  a, b = _params(straight_run, config, "latest"), _params(workdir, config, "latest")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  history = io.read_json(os.path.join(workdir, "history.json"))
  steps = [s for s, _ in history["train/loss"]]
  assert steps == sorted(set(steps)) and steps[-1] == 6  # no duplicated steps after resuming


def test_same_seed_same_metrics_other_seed_differs(config, straight_run, tmp_path):
  train(config, str(tmp_path / "again"))
  first = io.read_json(os.path.join(straight_run, "history.json"))
  again = io.read_json(str(tmp_path / "again" / "history.json"))
  assert first["train/loss"] == again["train/loss"]
  assert first["val/jaccard"] == again["val/jaccard"]
  other = dataclasses.replace(config, input=dataclasses.replace(config.input, seed=1),
                              run=dataclasses.replace(config.run, num_steps=3))
  train(other, str(tmp_path / "other"))
  other_hist = io.read_json(str(tmp_path / "other" / "history.json"))
  assert other_hist["train/loss"][0] != first["train/loss"][0]


def test_checkpoints_keep_latest_and_best(config, straight_run):
  with checkpoint.Checkpoints(os.path.join(straight_run, "checkpoints"), "val/jaccard", read_only=True) as c:
    steps = c.all_steps()
    assert c.latest_step() == 6 and c.best_step() in steps and len(steps) <= 2
    best = c.metrics(c.best_step())["val/jaccard"]
    history = io.read_json(os.path.join(straight_run, "history.json"))
    assert best == pytest.approx(max(v for _, v in history["val/jaccard"]))


def test_training_reduces_loss(config, tmp_path):
  longer = dataclasses.replace(config, run=dataclasses.replace(config.run, num_steps=30, eval_every=30, log_every=5),
                               optimizer=dataclasses.replace(config.optimizer, learning_rate=3e-3))
  train(longer, str(tmp_path))
  losses = [v for _, v in io.read_json(str(tmp_path / "history.json"))["train/loss"]]
  assert losses[-1] < 0.8 * losses[0]


def test_train_batches_resume_mid_stream(config):
  task = segmentation.SegmentationTask(dataclasses.replace(
      config, input=dataclasses.replace(config.input, augment=AugmentConfig())))
  full = task.train_batches(0)
  batches = [next(full) for _ in range(10)]  # 80 examples: crosses the 64-example epoch boundary
  resumed = task.train_batches(7)
  for expected in batches[7:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["id"], expected["id"])
    np.testing.assert_allclose(got["image"], expected["image"])
  ids = np.concatenate([b["id"] for b in batches[:8]])
  assert len(set(ids)) == 64  # the first epoch sees every example exactly once


def test_eval_batches_cover_split_once_with_padding(config):
  task = segmentation.SegmentationTask(dataclasses.replace(
      config, input=dataclasses.replace(config.input, batch_size=6)))
  batches = list(task.eval_batches("test"))
  weights = np.concatenate([b["weight"] for b in batches])
  ids = np.concatenate([b["id"] for b in batches])[weights > 0]
  assert len(ids) == 16 and len(set(ids)) == 16
  assert all(b["image"].shape == (6, 32, 32, 3) for b in batches)
  assert weights.sum() == 16 and weights[-2:].sum() == 0  # 18 rows, 2 of padding


def test_batch_size_must_divide_devices(config, tmp_path):
  from lesion_jax.train import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  assert sharding.check_batch_size(8, mesh) == 8
  with pytest.raises(ValueError, match="more than|only"):
    sharding.make_mesh(len(jax.devices()) + 1)
