"""The task contract end to end with what the next pipelines need: a task whose batches are
nested dicts, whose model takes two inputs (image, hole mask: an inpainter's shape) and whose
predictions are pytrees, run through the one runner (train, resume, evaluate, predict), with a
periodic hook; plus the loop's state contract."""
import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax.data import pipeline
from lesion_jax.tasks import runner
from lesion_jax.train import loop, sharding
from tests.hole_task import HoleConfig, HoleTask


@pytest.fixture(scope="module")
def task(tiny_data_dir, tiny_dataset):
  return HoleTask(HoleConfig(input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir,
                                                        image_size=32, batch_size=8)))


@pytest.fixture(scope="module")
def straight(task, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("hole"))
  return workdir, runner.run(task, workdir)


def test_nested_batches_reach_a_two_input_model(task):
  batch = next(task.train_batches(0))
  assert set(batch) >= {"id", "inputs", "targets"} and set(batch["inputs"]) == {"image", "hole"}
  assert batch["inputs"]["hole"].shape == (8, 32, 32, 1) and batch["inputs"]["hole"].sum() == 8 * 8 * 8
  device = sharding.shard_batch(sharding.device_fields(batch), sharding.make_mesh())
  assert set(device) == {"inputs", "targets"}  # ids stay on the host, nothing else is dropped
  with pytest.raises(TypeError, match=r"\['id'\].*device_fields"):
    sharding.shard_batch(batch, sharding.make_mesh())  # a string leaf is never dropped silently


def test_train_evaluate_and_record(task, straight, caplog):
  workdir, metrics = straight
  assert 0.0 <= metrics["test/accuracy"] <= 1.0 and metrics["test/num_images"] == 16
  record = json.load(open(os.path.join(workdir, "config.json")))
  assert record["task"] == "test_hole_segmentation"
  assert config_lib.from_dict(HoleConfig, record["config"]) == task.config  # round trip
  history = json.load(open(os.path.join(workdir, "history.json")))
  assert "train/hole_loss" in history and [s for s, _ in history["val/accuracy"]] == [2, 4]
  # The hook ran every 3 steps and at the end, seeing the state of that step.
  assert open(os.path.join(workdir, "hook_steps.txt")).read().split("\n")[:2] == ["3 3", "4 4"]
  # evaluate from the workdir alone: the task comes back from config.json, the scores are equal.
  loaded = runner.load(workdir)
  with caplog.at_level("WARNING"):
    state = runner.restore(loaded, workdir, "best")
  assert "read only" not in caplog.text  # orbax's notice on every read-only open is dropped
  scores, result = runner.evaluate(loaded, state, "test")
  assert scores["test/accuracy"] == metrics["test/accuracy"] and len(result.ids) == 16


def test_scores_of_the_selection_split_are_labelled(task, straight, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, metrics = straight
  assert "test/used_for_selection" not in metrics  # test != validation
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  again = runner.run(task, copy, test_split=task.config.run.val_split)  # resumes at the last step
  assert again["test/used_for_selection"] is True


def test_a_run_written_before_a_config_field_existed_still_resumes(task, straight, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, _ = straight
  copy = str(tmp_path / "old")
  shutil.copytree(workdir, copy)
  record = json.load(open(os.path.join(copy, "config.json")))
  del record["config"]["input"]["geometry"]  # as written by the code before the field was added
  json.dump(record, open(os.path.join(copy, "config.json"), "w"))
  runner.write_config(copy, task)  # not refused
  record["config"]["input"]["seed"] = 7
  json.dump(record, open(os.path.join(copy, "config.json"), "w"))
  with pytest.raises(ValueError, match="other flags"):
    runner.write_config(copy, task)


def test_a_run_recorded_before_run_config_loads_and_resumes(task, straight, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, metrics = straight
  copy = str(tmp_path / "old")
  shutil.copytree(workdir, copy)
  path = os.path.join(copy, "config.json")
  record = json.load(open(path))
  config = dict(record["config"])
  run = dict(config.pop("run"))
  # As written before RunConfig: its fields at the top, without those added since (this task's
  # config has no model, so no model.dtype to become run.precision).
  for new in ("test_split", "holdout", "holdout_seed", "precision"):
    del run[new]
  old = {**record, "config": {**config, **run}}
  json.dump(old, open(path, "w"))
  assert runner.load(copy).config == task.config
  again = runner.run(task, copy)  # the same flags resume (at the last step): nothing is refused
  assert again["test/accuracy"] == metrics["test/accuracy"]
  assert json.load(open(path)) == record  # rewritten in the new shape
  json.dump(old, open(path, "w"))
  runner.write_config(copy, HoleTask(config_lib.replace(task.config, {"run.test_split": "validation"})))
  json.dump(old, open(path, "w"))
  with pytest.raises(ValueError, match=r"other flags \{'config.run.train_split': \('train', 'train\[:8\]'\)\}"):
    runner.write_config(copy, HoleTask(config_lib.replace(task.config, {"run.train_split": "train[:8]"})))


def test_resume_equals_uninterrupted(task, straight, tmp_path):
  workdir = str(tmp_path)
  runner.train(HoleTask(config_lib.replace(task.config, {"run.num_steps": 2})), workdir)
  runner.train(task, workdir)  # resumes at 2, runs to 4
  a = runner.restore(task, straight[0], "latest")
  b = runner.restore(task, workdir, "latest")
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match=r"other flags \{'config.hole_size': \(8, 4\)\}"):
    runner.train(HoleTask(dataclasses.replace(task.config, hole_size=4)), workdir)


def test_predict_returns_a_pytree_per_example(task, straight):
  state = runner.restore(task, straight[0])
  examples = [{"inputs": {"image": np.zeros((32, 32, 3), np.float32),
                          "hole": np.full((32, 32, 1), float(i % 2), np.float32)}} for i in range(11)]
  out = runner.predict_examples(task, state, examples)  # 11 examples: two batches, one padded
  assert len(out) == 11 and out[0]["prob"].shape == (32, 32)
  assert [float(o["hole_area"]) for o in out] == [float(i % 2) for i in range(11)]


def test_loop_checks_the_state_and_leaves_the_callers_state_alone(task, tmp_path):
  with pytest.raises(TypeError, match="needs a state with a `step` attribute"):
    loop.train({"params": 1}, None, None, None, str(tmp_path), loop.LoopConfig(1, 8), jax.random.key(0))
  state = task.init_state(jax.random.key(0))
  before = jax.device_get(state.params)
  loop.train(state, task.train_step(), task.train_batches, None, str(tmp_path / "run"),
             loop.LoopConfig(num_steps=2, batch_size=8, eval_every=2, log_every=1), jax.random.key(1))
  after = jax.device_get(state.params)  # still readable (not donated) and unchanged
  for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(x, y)


def test_divergence_guard_covers_every_loss():
  loop.check_finite_losses(1, {"train/loss": 0.5, "train/accuracy": float("nan")})
  with pytest.raises(FloatingPointError, match="train/g_loss"):
    loop.check_finite_losses(3, {"train/loss": 0.5, "train/g_loss": float("inf")})


class _TwoBatchesOnly(HoleTask):
  """A run cut short: its input ends after 2 batches (as if the job were killed at step 3)."""
  name = "test_hole_two_batches"

  def train_batches(self, start_step):
    it = super().train_batches(start_step)
    return iter([next(it), next(it)])


def test_checkpoints_have_their_own_cadence(task, tmp_path):
  config = config_lib.replace(task.config, {"run.num_steps": 4, "run.eval_every": 4, "run.checkpoint_every": 2})
  with pytest.raises(RuntimeError, match="ran out at step 3"):
    runner.train(_TwoBatchesOnly(config), str(tmp_path))
  from lesion_jax import checkpoint  # pylint: disable=g-import-not-at-top
  with checkpoint.Checkpoints(os.path.join(str(tmp_path), "checkpoints"), read_only=True) as c:
    assert c.latest_step() == 2  # saved at step 2 although nothing was evaluated there
  assert "val/accuracy" not in json.load(open(os.path.join(str(tmp_path), "history.json")))


def test_a_moved_workdir_and_data_dir_still_resume(task, tmp_path, tiny_data_dir):
  import shutil  # pylint: disable=g-import-not-at-top
  first = str(tmp_path / "a")
  runner.train(HoleTask(config_lib.replace(task.config, {"run.num_steps": 2})), first)
  moved_data = str(tmp_path / "moved_tfds")
  shutil.copytree(tiny_data_dir, moved_data)
  shutil.copytree(first, str(tmp_path / "b"))
  moved = HoleTask(dataclasses.replace(task.config, input=dataclasses.replace(task.config.input, data_dir=moved_data)))
  runner.train(moved, str(tmp_path / "b") + "/./")  # another spelling of the folder, too
  with pytest.raises(ValueError, match="other flags"):  # what the run computes still may not change
    runner.train(HoleTask(dataclasses.replace(moved.config, hole_size=4)), str(tmp_path / "b"))
  history = json.load(open(tmp_path / "b" / "history.json"))
  assert [s for s, _ in history["val/accuracy"]] == [2, 4]  # resumed at 2, not started over


def test_bad_config_is_refused_before_anything_is_written(task, tmp_path):
  bad = {"num_steps": 0, "eval_every": 0, "batch_size": 0, "val_split": "valid"}
  for field_name, value in bad.items():
    if field_name == "batch_size":
      config = dataclasses.replace(task.config, input=dataclasses.replace(task.config.input, batch_size=0))
    else:
      config = dataclasses.replace(task.config, run=dataclasses.replace(task.config.run, **{field_name: value}))
    field = {"batch_size": "input.batch_size"}.get(field_name, f"run.{field_name}")
    with pytest.raises(config_lib.ConfigError, match=f"`{field}`="):  # the field, by its dotted path
      runner.run(HoleTask(config), str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")
  with pytest.raises(config_lib.ConfigError, match=r"`run.test_split`='test\[:2\]\+nope'"):
    runner.run(task, str(tmp_path), test_split="test[:2]+nope")
  assert not os.path.exists(tmp_path / "config.json")
