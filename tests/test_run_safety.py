"""What a run keeps when things go wrong (the fault cases of the correctness review, each as a
test): a preempted run saves and resumes exactly; a diverged state is never checkpointed or
ranked; a damaged checkpoint is never restored (training falls back past it, evaluate refuses by
name); one process per workdir; numbers out of range are refused before anything is written;
a full disk ends in one line; the reported split is recorded by name."""
import dataclasses
import errno
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lesion_jax import checkpoint, run_lock
from lesion_jax import config as config_lib
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.tasks import base, runner
from lesion_jax.train import loop
from tests.hole_task import HoleConfig, HoleTask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def task(tiny_data_dir, tiny_dataset):
  return HoleTask(HoleConfig(input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir,
                                                        image_size=32, batch_size=8),
                             run=RunConfig(num_steps=6, eval_every=4, log_every=2)))


@pytest.fixture(scope="module")
def straight(task, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  runner.run(task, workdir, test_split="validation")
  return workdir


def _signal_at(task, step: int, signum: int):
  """`task` whose training input sends `signum` to this process as batch `step` is drawn."""
  hit = HoleTask(task.config)
  original = hit.train_batches

  def batches(start_step):
    for i, batch in enumerate(original(start_step)):
      if start_step + i + 1 == step:
        os.kill(os.getpid(), signum)
      yield batch

  hit.train_batches = batches
  return hit


@pytest.mark.parametrize("signum, stop_at", [(signal.SIGTERM, 3), (signal.SIGINT, 4)])
def test_a_preempted_run_saves_and_resumes_exactly(task, straight, tmp_path, signum, stop_at):
  workdir = str(tmp_path / "run")
  with pytest.raises(loop.Preempted) as stopped:
    runner.run(_signal_at(task, stop_at, signum), workdir, test_split="validation")
  assert stopped.value.step == stop_at and stopped.value.exit_code == 128 + signum
  # Off the checkpoint schedule (step 3) and on it (step 4, with its evaluation) alike.
  assert checkpoint.Checkpoints(f"{workdir}/checkpoints").latest_step() == stop_at
  assert not os.path.exists(os.path.join(workdir, "metrics.json"))
  assert signal.getsignal(signum) is not None  # the loop put the previous handlers back
  runner.run(task, workdir, test_split="validation")  # the same command resumes
  for name in ("metrics.json", "predictions.json"):
    if os.path.exists(os.path.join(straight, name)):
      assert open(os.path.join(workdir, name), "rb").read() == open(os.path.join(straight, name), "rb").read()
  history = lambda d: json.load(open(os.path.join(d, "history.json")))["val/accuracy"]
  assert history(workdir) == history(straight)


def test_the_reported_split_is_recorded_by_name(straight):
  metrics = json.load(open(os.path.join(straight, "metrics.json")))
  assert metrics["test/split"] == "validation" and "test/accuracy" in metrics


def _nan_after(step_fn, step: int):
  def train_step(state, batch, rng):
    state, metrics = step_fn(state, batch, rng)
    poison = jnp.where(state.step >= step, jnp.nan, 1.0)
    return state.replace(params=jax.tree.map(lambda p: p * poison, state.params)), metrics
  return train_step


def test_a_diverged_state_is_never_checkpointed(task, tmp_path):
  workdir = str(tmp_path / "diverged")
  config = loop.LoopConfig(num_steps=6, batch_size=8, eval_every=2, log_every=6)
  with pytest.raises(checkpoint.NonFiniteStateError, match="diverged at step 4"):
    # The losses are only checked on log steps (6): the state is checked before every save.
    loop.train(task.init_state(jax.random.key(0)), _nan_after(task.train_step(), 3), task.train_batches,
               None, workdir, config, jax.random.key(1))
  ckpts = checkpoint.Checkpoints(f"{workdir}/checkpoints")
  assert ckpts.all_steps() == [2]
  restored = ckpts.restore(jax.eval_shape(lambda: task.init_state(jax.random.key(0))), 2)
  assert not checkpoint.non_finite_leaves(restored)
  with pytest.raises(checkpoint.NonFiniteStateError, match="refusing to checkpoint step 9"):
    ckpts.save(9, jax.tree.map(lambda x: x * jnp.nan, restored))


def test_a_non_finite_validation_score_never_ranks(tmp_path):
  with checkpoint.Checkpoints(tmp_path / "c", "val/jaccard", keep_latest=3, keep_best=1) as ckpts:
    for step, score in ((1, 0.2), (2, math.nan), (3, 0.1)):
      ckpts.save(step, {"step": jnp.int32(step), "w": jnp.ones(2)}, {"val/jaccard": score})
    ckpts.wait()
    assert ckpts.best_step() == 1


def test_a_run_that_wrote_nothing_does_not_lock_its_workdir(task, tmp_path):
  workdir = str(tmp_path / "w")
  runner.write_config(workdir, task)  # e.g. a run that diverged before its first checkpoint
  runner.write_config(workdir, HoleTask(dataclasses.replace(task.config, hole_size=4)))  # accepted
  assert runner.load(workdir).config.hole_size == 4
  os.makedirs(os.path.join(workdir, "round_0"))  # a pipeline whose first stage has a run of its own
  runner.write_config(os.path.join(workdir, "round_0"), task)
  with pytest.raises(ValueError, match="other flags"):
    runner.write_config(workdir, task)


def _data_files(step_dir: str) -> list[str]:
  files = [f for f in glob.glob(os.path.join(step_dir, "default", "**", "d", "*"), recursive=True)]
  return sorted(files, key=os.path.getsize)


def _flip_a_byte(path: str) -> None:
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


def test_a_damaged_checkpoint_is_refused_by_name(task, straight, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "copy")
  shutil.copytree(straight, workdir)
  step = checkpoint.Checkpoints(f"{workdir}/checkpoints").latest_step()
  _flip_a_byte(_data_files(os.path.join(workdir, "checkpoints", str(step)))[-1])
  with pytest.raises(checkpoint.CheckpointDamagedError, match=f"checkpoints/{step} is damaged: .* checksum"):
    runner.restore(task, workdir, "latest")
  assert runner.restore(task, straight, "latest") is not None  # the original verifies


def test_training_resumes_past_a_damaged_newest_checkpoint(task, tmp_path, caplog):
  config = loop.LoopConfig(num_steps=4, batch_size=8, eval_every=2, log_every=2, keep_latest=2)
  state = task.init_state(jax.random.key(0))
  fit = lambda workdir: loop.train(state, task.train_step(), task.train_batches, None, workdir, config,
                                   jax.random.key(1))
  reference = jax.device_get(fit(str(tmp_path / "a")).params)
  workdir = str(tmp_path / "b")
  fit(workdir)
  _flip_a_byte(_data_files(os.path.join(workdir, "checkpoints", "4"))[-1])
  again = jax.device_get(fit(workdir).params)  # resumes from step 2, not stuck on step 4
  assert "does not match its recorded checksum" in caplog.text
  assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "4"))
  for x, y in zip(jax.tree.leaves(reference), jax.tree.leaves(again)):
    np.testing.assert_array_equal(x, y)


def test_one_process_per_workdir(task, tmp_path, caplog):
  workdir = str(tmp_path / "busy")
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from lesion_jax import run_lock\n"
       "with run_lock.hold(sys.argv[1]):\n  print('held', flush=True); time.sleep(120)", workdir],
      cwd=REPO, stdout=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(run_lock.WorkdirBusyError, match=f"in use by process {holder.pid} "):
      runner.run(task, workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))
  finally:
    holder.kill()
    holder.wait()
  with run_lock.hold(workdir):  # the dead holder's lock is taken over, with a warning
    with run_lock.hold(workdir):  # and held re-entrantly by one process
      pass
  assert f"process {holder.pid}" in caplog.text and "is gone" in caplog.text


@pytest.mark.parametrize("override, message", [
    ({"optimizer.learning_rate": math.nan}, "`optimizer.learning_rate`=nan: must be a finite number"),
    ({"optimizer.learning_rate": math.inf}, "`optimizer.learning_rate`=inf: must be a finite number"),
    ({"optimizer.learning_rate": 1e6}, r"`optimizer.learning_rate`=1000000.0: must be in \(0, 10\]"),
    ({"optimizer.learning_rate": -1.0}, "`optimizer.learning_rate`=-1.0: must be in"),
    ({"optimizer.warmup_steps": -5}, r"`optimizer.warmup_steps`=-5: must be in \[0, inf\)"),
    ({"model.features": 0}, r"`model.features`=0: must be in \[1, inf\)"),
    ({"model.levels": 0}, "`model.levels`=0: must be in"),
    ({"tta_scales": (128, 0)}, "`tta_scales`=128,0: must be in"),
])
def test_numbers_out_of_range_are_refused_by_name(override, message):
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.replace(segmentation.SegmenterConfig(), override)
  record = config_lib.to_dict(segmentation.SegmenterConfig())
  node = record
  *parents, leaf = next(iter(override)).split(".")
  for p in parents:
    node = node[p]
  node[leaf] = override[next(iter(override))]
  with pytest.raises(config_lib.ConfigError, match=message):  # a hand-edited config.json too
    config_lib.from_dict(segmentation.SegmenterConfig, record)


def test_every_default_config_is_in_range():
  import lesion_jax.tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registers)
  for name, cls in sorted(base._REGISTRY.items()):  # pylint: disable=protected-access
    if name.startswith("test_"):
      continue
    config_lib.check_ranges(cls.config_cls())


def test_the_task_check_covers_a_config_made_in_code(task):
  bad = HoleTask(dataclasses.replace(task.config, optimizer=dataclasses.replace(
      task.config.optimizer, learning_rate=math.nan)))
  with pytest.raises(config_lib.ConfigError, match="`optimizer.learning_rate`=nan"):
    bad.check(None)


def test_a_truncated_config_json_is_named(straight, tmp_path):
  workdir = tmp_path / "cut"
  workdir.mkdir()
  text = open(os.path.join(straight, "config.json")).read()
  (workdir / "config.json").write_text(text[: len(text) // 2])
  with pytest.raises(config_lib.ConfigError, match=r"config.json is not valid JSON"):
    runner.load(str(workdir))


def test_a_full_disk_ends_in_one_line_naming_the_path(tmp_path, monkeypatch):
  ckpts = checkpoint.Checkpoints(tmp_path / "full")

  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "full" / "1"))

  monkeypatch.setattr(ckpts._manager, "save", no_space)  # pylint: disable=protected-access
  with pytest.raises(checkpoint.DiskFullError) as e:
    ckpts.save(1, {"step": jnp.int32(1), "w": jnp.ones(2)})
  assert str(tmp_path / "full") in str(e.value) and "MiB free" in str(e.value)
  assert "\n" not in str(e.value)
  ckpts.close()


# --- through the command line: the signal as a scheduler sends it, and one-line errors ----------

def test_sigterm_on_the_command_line_saves_logs_and_exits_143(tiny_data_dir, tiny_dataset, tmp_path):
  workdir = str(tmp_path / "cli")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.train_segmenter", f"--workdir={workdir}", f"--dataset={tiny_dataset}",
       f"--data_dir={tiny_data_dir}", "--num_steps=100000", "--image_size=32", "--batch_size=8",
       "--model.features=4", "--levels=2", "--eval_every=50000", "--log_every=1", "--alsologtostderr"],
      cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
  lines = []
  deadline = time.monotonic() + 300
  for line in proc.stderr:
    lines.append(line)
    if "step 2/100000" in line or time.monotonic() > deadline:
      break
  proc.send_signal(signal.SIGTERM)
  rest = proc.stderr.read()
  proc.wait(timeout=120)
  log = "".join(lines) + rest
  assert proc.returncode == 143, log[-3000:]
  assert "Received SIGTERM" in log and "Stopped by SIGTERM at step" in log
  assert "Traceback" not in log
  step = int(log.split("Stopped by SIGTERM at step ")[1].split(":")[0])
  assert checkpoint.Checkpoints(f"{workdir}/checkpoints").latest_step() == step >= 2


def test_help_exits_zero_and_usage_errors_are_one_line(tiny_data_dir, tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  helped = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--helpshort"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert helped.returncode == 0 and "--workdir" in helped.stdout
  refused = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert refused.returncode != 0
  errors = [line for line in refused.stderr.splitlines() if "error" in line.lower()]
  assert errors and "config.json not found" in refused.stderr
  assert len(refused.stderr.splitlines()) < 10, refused.stderr  # not absl's page of help


def test_a_moved_run_that_a_run_reads_still_resumes(tmp_path):
  """Locations are marked on the config fields: an inpainter fine-tuned from a run that has moved
  (or a classifier whose crops' segmenter has) resumes; a field that defines the run may not change."""
  from lesion_jax.pipelines.purification import task as inpainting  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.self_learning import two_stage  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import classification  # pylint: disable=g-import-not-at-top
  assert {"finetune_from", "perceptual_workdir", "input.data_dir", "input.manual_dir"} <= \
      config_lib.location_paths(inpainting.InpainterConfig())
  assert {"crop.segmenter_workdir", "generated", "model.init_from", "model.init_weights"} <= \
      config_lib.location_paths(classification.ClassifierConfig())
  workdir = str(tmp_path / "w")
  first = inpainting.InpaintingTask(inpainting.InpainterConfig(finetune_from="/runs/initial"))
  runner.write_config(workdir, first)
  os.makedirs(os.path.join(workdir, "checkpoints", "5"))  # something trained: the record is binding
  runner.write_config(workdir, inpainting.InpaintingTask(inpainting.InpainterConfig(finetune_from="/moved/initial")))
  with pytest.raises(ValueError, match="other flags"):
    runner.write_config(workdir, inpainting.InpaintingTask(inpainting.InpainterConfig(
        finetune_from="/moved/initial", perceptual_layers=2)))
  pipeline_dir = str(tmp_path / "p")  # a pipeline's record names its config for the same rule
  config = two_stage.TwoStageConfig(data_dir="/data/a")
  runner.write_config(pipeline_dir, two_stage.describe(config), config)
  open(os.path.join(pipeline_dir, "metrics.json"), "w").write("{}")
  moved = two_stage.TwoStageConfig(data_dir="/data/b")
  runner.write_config(pipeline_dir, two_stage.describe(moved), moved)
  with pytest.raises(ValueError, match="other flags"):
    other = two_stage.TwoStageConfig(data_dir="/data/b", seed=1)
    runner.write_config(pipeline_dir, two_stage.describe(other), other)


def test_a_restored_run_changes_only_its_declared_evaluation_settings():
  from lesion_jax.pipelines.lesion_index import task as lesion_index  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import classification, segmentation  # pylint: disable=g-import-not-at-top
  seg = segmentation.SegmentationTask(segmentation.SegmenterConfig())
  assert seg.with_overrides(fallback=True, tta_scales=(64, 80)).config.tta_scales == (64, 80)
  assert seg.with_overrides() is seg
  with pytest.raises(config_lib.ConfigError, match=r"`num_steps`: a 'segmentation' run cannot change \['num_steps'\]"):
    seg.with_overrides(num_steps=5)
  with pytest.raises(config_lib.ConfigError, match="`fallback_max_fraction`"):  # and the values are checked
    segmentation.SegmentationTask(segmentation.SegmenterConfig(fallback_max_fraction=1.5)).with_overrides(fallback=True)
  assert lesion_index.LesionIndexTask(lesion_index.LesionIndexConfig()).with_overrides(
      test_scales=(32,)).config.test_scales == (32,)
  with pytest.raises(config_lib.ConfigError, match="may change: none"):
    HoleTask(HoleConfig()).with_overrides(hole_size=2)
  assert "image_artifacts" in classification.ClassificationTask.evaluation_overrides


def test_zero_means_off_where_a_field_says_so():
  from lesion_jax.pipelines.lesion_index import feature_network  # pylint: disable=g-import-not-at-top
  # decay_every=0: the LFN uses optimizer.lr_schedule instead of its step decay.
  config = config_lib.replace(feature_network.FeatureNetworkConfig(), {"decay_every": 0})
  assert config.decay_every == 0
  with pytest.raises(config_lib.ConfigError, match=r"`decay_factor`=0.0: must be in \(0, 1\]"):
    config_lib.replace(config, {"decay_factor": 0.0})
