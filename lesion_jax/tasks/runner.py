"""The one runner: train / resume / restore / evaluate / predict for every registered task.

    task = segmentation.SegmentationTask(config)
    metrics = runner.run(task, workdir)                 # train (or resume), score, metrics.json
    task = runner.load(workdir)                         # from config.json, any task or pipeline
    state = runner.restore(task, workdir, "best")
    task, state = runner.predictor(workdir)             # what predicts on photos (folds, pipelines too)
    records = task.predict_images(state, images)        # per photo: mask, probabilities, ...
    scores = runner.evaluate(task, state, "test", workdir=workdir)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from lesion_jax import checkpoint, io, run_lock
from lesion_jax import config as config_lib
from lesion_jax.eval import figures, inference
from lesion_jax.tasks import base
from lesion_jax.train import loop, sharding

# Config fields (by leaf name, e.g. run.num_steps) that only say how long or how often, or which
# split is scored at the end (not what was trained): a resumed run may change them.
RESUMABLE_CHANGES = frozenset({"num_steps", "eval_every", "log_every", "checkpoint_every", "test_split",
                               "num_generated", "duplicate_threshold",  # these two: what a GAN generates after
                               "calibrate"})  # a classifier's temperature, fitted after training
# Fields that say where things are, not what the run computes, are marked on the config field
# (config.field(..., location=True)): a moved or copied workdir, data directory, archive or run
# it reads still resumes. Artifact stores are compared by what names their content
# (<dataset>/<kind>/<parameters>), not by where they are.
ARTIFACT_FIELDS = frozenset({"mask_artifacts", "image_artifacts"})


def _defines_the_run(path: str, old: Any, new: Any, locations: frozenset[str]) -> bool:
  leaf = path.rsplit(".", 1)[-1]
  if leaf in RESUMABLE_CHANGES or path.removeprefix("config.") in locations:
    return False
  if leaf in ARTIFACT_FIELDS and old and new:
    tail = lambda p: os.path.normpath(p).split(os.sep)[-3:]
    return tail(old) != tail(new)
  return True


def config_path(workdir: str) -> str:
  return os.path.join(workdir, "config.json")


def write_config(workdir: str, task: base.Task | dict[str, Any], config: Any = None) -> None:
  """Records the task and its config (or a pipeline's record, `{"task": name, "config":
  to_dict(config)}` with its `config`) in `workdir`/config.json. A workdir already holding
  another run's config is refused unless only RESUMABLE_CHANGES, fields marked as locations or
  artifact-store roots differ, so runs are never mixed."""
  path = config_path(workdir)
  new = task.describe() if isinstance(task, base.Task) else task
  config = task.config if isinstance(task, base.Task) else config
  locations = config_lib.location_paths(config) if config is not None else frozenset()
  if os.path.exists(path) and not _nothing_trained(workdir):
    old = _read_record(path)
    if old.get("task") == new["task"] and (isinstance(task, base.Task) or config is not None):
      try:  # fields added to the config since that run was written take their defaults, moved ones
        # (config.MOVED) their new place
        old = (base.from_record(old, path).describe() if isinstance(task, base.Task) else
               {**old, "config": config_lib.to_dict(config_lib.from_dict(type(config), old["config"]))})
      except (config_lib.ConfigError, ValueError, KeyError, TypeError):
        pass  # an unreadable record is compared as it is (and refused)
    changed = {k: v for k, v in config_lib.diff(old, new).items() if _defines_the_run(k, *v, locations)}
    if changed:
      raise ValueError(f"{path} was written by a run with other flags {changed} (old, new); use a "
                       "new `workdir` or the same flags to resume")
  io.write_json(path, new)


def _nothing_trained(workdir: str) -> bool:
  """True when a workdir's config.json has nothing behind it (no checkpoint, no metrics): a run
  that was refused or failed before its first checkpoint (e.g. diverged at once) does not keep
  the corrected command out."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
  # A pipeline's record (two-stage, self-learning, cross-validation) has its runs in subfolders.
  stages = [d for d in os.listdir(workdir) if os.path.exists(os.path.join(workdir, d, "config.json"))]
  return not steps and not stages and not os.path.exists(os.path.join(workdir, "metrics.json"))


def _read_record(path: str) -> dict[str, Any]:
  try:
    record = io.read_json(path)
  except ValueError as e:  # truncated or hand-edited
    raise config_lib.ConfigError(f"{path} is not valid JSON ({e}): restore it, or delete the run") from None
  if not isinstance(record, dict):
    raise config_lib.ConfigError(f"{path} holds {type(record).__name__}, not a run record")
  return record


class RunNotFoundError(FileNotFoundError):
  """A workdir with no run record in it."""


def load(workdir: str, kind: type[base.Task] | type[base.Pipeline] | None = None, field: str = "workdir"
         ) -> base.Task | base.Pipeline:
  """The task (and config) of the run in `workdir`. With `kind`, the one way to ask for a run of
  one kind: another kind is refused with a ConfigError naming `field` (the config field, or the
  program's option, that gave `workdir`) and both kinds, before anything is restored."""
  path = config_path(workdir)
  if not os.path.exists(path):
    raise RunNotFoundError(f"{path} not found: is {workdir!r} the `{field}` of a training run?")
  try:
    task = base.from_record(_read_record(path), path)
  except (TypeError, KeyError) as e:  # a record of the right keys but the wrong shapes
    raise config_lib.ConfigError(f"{path}: not a readable run record ({type(e).__name__}: {e})") from None
  if kind is not None and not isinstance(task, kind):
    raise config_lib.ConfigError(f"`{field}`={workdir}: holds a {task.name!r} run, not a {kind.name!r} run")
  return task


def restore(task: base.Task, workdir: str, which: checkpoint.Which = "best",
            mesh: jax.sharding.Mesh | None = None) -> Any:
  """The state saved in `workdir` (its best checkpoint by default), replicated on `mesh`."""
  mesh = mesh or sharding.make_mesh()
  # Restored straight into the mesh's sharding (on several hosts, arrays committed to one local
  # device could not be moved onto the global mesh afterwards), from the state's abstract shape:
  # nothing is initialised only to be overwritten.
  template = sharding.replicated_abstract(jax.eval_shape(task.init_state, jax.random.key(0)), mesh)
  with loop.checkpoints_for(workdir, task.loop_config(), read_only=True) as ckpts:
    step = ckpts.best_step() if which == "best" else ckpts.latest_step() if which == "latest" else which
    state = ckpts.restore(template, which)
  logging.info("Restored %s from %s (step %s).", task.name, workdir, step)
  return state


def predictor(workdir: str, which: checkpoint.Which = "best", mesh: jax.sharding.Mesh | None = None,
              predict: str = "predict") -> tuple[base.Task, Any]:
  """(task, state) that predicts for the run in `workdir` on a user's photos
  (`task.predict_images(state, images, predict=predict)`): a task run's checkpoint `which` (with what
  the run fitted after training for it and `predict`, `Task.with_post_hoc`: a classifier's
  temperature for plain or TTA predictions); a cross-validated run's
  fold models (a tuple of states, whose outputs are averaged); a pipeline's own predictor. A
  pipeline predicts with the checkpoints its stages chose (each stage's best, the LIN's its
  `checkpoint` field), one for each of several runs, so a `which` other than "best" is refused
  (PredictionUnsupported, naming the stages' runs, which take any checkpoint) rather than ignored."""
  loaded = load(workdir)
  if isinstance(loaded, base.Pipeline):
    if which != "best":
      runs = ", ".join(loaded.stages(workdir).values())
      raise base.PredictionUnsupported(
          f"checkpoint {which!r}: a {loaded.name!r} pipeline predicts with the checkpoints its stages chose, "
          f"not one of its own; predict with one of its runs for another checkpoint ({runs})")
    return loaded.predictor(workdir, predict)
  folds = sorted(d for d in os.listdir(workdir) if d.startswith("fold_") and os.path.isdir(os.path.join(workdir, d)))
  if folds and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return loaded, tuple(restore(loaded, os.path.join(workdir, d), which, mesh) for d in folds)
  return loaded.with_post_hoc(workdir, which, predict), restore(loaded, workdir, which, mesh)


def process_local_predictor(task: base.Task, workdir: str, mesh: jax.sharding.Mesh | None = None
                            ) -> tuple[Any, jax.sharding.Mesh, Callable, int]:
  """(state, process-local mesh, jitted predict, step) of the best checkpoint of `workdir`, for an
  artifact stage: each host predicts only its share of the images not yet stored, so hosts run
  different numbers of batches; on a process-local mesh none waits for the others
  (sharding.process_local)."""
  mesh = mesh or sharding.make_mesh()
  state = restore(task, workdir, "best", mesh)
  step = int(jax.device_get(state.step))
  local, state = sharding.process_local(state, mesh)
  return state, local, task.jit_predict(state, local), step


def train(task: base.Task, workdir: str, mesh: jax.sharding.Mesh | None = None) -> Any:
  """Trains (or resumes) `task` in `workdir`, keeping the latest and the best checkpoint by the
  task's validation metric; returns the best state."""
  mesh = mesh or sharding.make_mesh()
  task.check(mesh)
  with run_lock.hold(workdir):
    write_config(workdir, task)
    rng_init, rng_train = jax.random.split(jax.random.key(task.seed))
    # Made only when the run does not resume; one replicated copy lives on the device.
    initial = loop.InitialState(jax.eval_shape(task.init_state, rng_init),
                                lambda: task.warm_start(task.init_state(rng_init)))
    validate = None
    if task.val_split:
      jitted: list[Callable] = []  # jitted once, for the state the loop trains (its static fields)

      def validate(s):
        jitted[:] = jitted or [task.jit_predict(s, mesh)]
        return task.validate(s, mesh, jitted[0])
    # Batches leave the host with their input images in the precision policy's dtype.
    batches_from = lambda start_step: map(task.host_inputs, task.train_batches(start_step))
    loop.train(initial, task.train_step(), batches_from, validate, workdir, task.loop_config(),
               rng_train, mesh, hooks=task.hooks(workdir, mesh))
    return restore(task, workdir, "best", mesh)


def evaluate(task: base.Task, state: Any, split: str, mesh: jax.sharding.Mesh | None = None,
             workdir: str | None = None, prefix: str | None = None, predict: str = "predict",
             figures_too: bool = True, ensemble: bool = False) -> tuple[dict[str, Any], base.Evaluation]:
  """Scores `state` on `split` with the task's predict function `predict`; with `workdir`, writes
  the task's figures (named by `prefix`, default the split) into `workdir`/figures. With
  `ensemble`, `state` is a tuple of states whose outputs are averaged (Task.jit_predict). Returns
  the scores prefixed by `prefix` (with `<prefix>/split`) and the Evaluation."""
  mesh = mesh or sharding.make_mesh()
  prefix = prefix or split
  result = task.evaluate(state, split, mesh, task.jit_predict(state, mesh, predict, ensemble),
                         keep_examples=16 if workdir and figures_too else 0)
  if workdir and figures_too:
    fig_dir = os.path.join(workdir, "figures")
    task.write_figures(result, fig_dir, prefix)
    save_curves(workdir)
  # "<prefix>/split" names the split scored: the prefix is its role ("test"), the split may be another
  # (the ISIC recipes report Validation).
  return {f"{prefix}/{k}": v for k, v in result.scores.items()} | {f"{prefix}/split": split}, result


def save_curves(workdir: str) -> None:
  history = os.path.join(workdir, "history.json")
  if os.path.exists(history):
    figures.save_curves(os.path.join(workdir, "figures", "curves.png"), io.read_json(history))


def write_results(workdir: str, metrics: dict[str, Any], predictions: dict[str, Any]) -> None:
  if predictions:
    io.write_json(os.path.join(workdir, "predictions.json"), predictions)
  io.write_json(os.path.join(workdir, "metrics.json"), metrics)


def run(task: base.Task, workdir: str, test_split: str | None = None,
        mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Trains (or resumes) and scores the task's final splits (`test_split`: the config's
  `run.test_split` unless given); writes metrics.json (and predictions.json where the task keeps
  per-example predictions). Returns the metrics. A task with `folds` > 1 is cross-validated
  instead (`cross_validate`)."""
  mesh = mesh or sharding.make_mesh()
  test_split = task.config.run.test_split if test_split is None else test_split
  task = with_holdout(task)  # refuses a holdout with folds
  if task.folds > 1:
    return cross_validate(task, workdir, test_split, mesh)
  # Every split the run reads is checked before the first step, not after training.
  task.check(mesh, [("run.test_split", split) for prefix, split in task.final_splits(test_split) if prefix == "test"])
  with run_lock.hold(workdir):
    task = task.prepare(run_splits(task, test_split))
    return _train_and_score(task, workdir, test_split, mesh)


def with_holdout(task: base.Task) -> base.Task:
  """`task` with `run.holdout` resolved: train_split and val_split become the two parts of the
  train split (explicit TFDS slices, stratified by the task's `stratify_key`), holdout 0."""
  run = task.config.run
  if not run.holdout:
    return task
  from lesion_jax.data import selection  # pylint: disable=g-import-not-at-top  (TensorFlow)
  if task.folds > 1:
    raise config_lib.ConfigError(f"`run.holdout`={run.holdout}: a cross-validated run (`folds`={task.folds}) "
                                 "selects on its folds")
  try:
    fit, held_out = selection.holdout_splits(task.builder, run.train_split, run.holdout, run.holdout_seed,
                                             task.stratify_key)
  except ValueError as e:
    raise config_lib.ConfigError(f"`run.holdout`={run.holdout}: {e}") from None
  logging.info("Selection split: %s of %s held out (%s)", run.holdout, run.train_split,
               selection.split_name(held_out))
  resolved = dataclasses.replace(run, train_split=fit, val_split=held_out, holdout=0.0)
  return type(task)(dataclasses.replace(task.config, run=resolved))


def run_splits(task: base.Task, test_split: str) -> list[str]:
  """Every split a run reads (train, validation, the final ones), once each: what `prepare` builds for."""
  c = task.config.run
  return [s for s in dict.fromkeys([c.train_split, c.val_split, *(s for _, s in task.final_splits(test_split))]) if s]


def _train_and_score(task: base.Task, workdir: str, test_split: str, mesh) -> dict[str, Any]:
  state = train(task, workdir, mesh)
  task = task.fit_post_hoc(state, workdir, mesh)  # e.g. a classifier's temperature, on the selection split
  metrics: dict[str, Any] = {}
  predictions: dict[str, Any] = {}
  for prefix, split in task.final_splits(test_split):
    scores, result = evaluate(task, state, split, mesh, workdir, prefix, figures_too=prefix != "train")
    metrics.update(scores)
    if result.predictions is not None:
      predictions[f"{prefix}/_predictions"] = result.predictions
    if split == task.val_split:  # scores of the split that picked the checkpoint are optimistic
      metrics[f"{prefix}/used_for_selection"] = True
  metrics.update(task.after_training(state, workdir, mesh))
  save_curves(workdir)
  write_results(workdir, metrics, predictions)
  return metrics


def predict_examples(task: base.Task, state: Any, examples: list[Any], mesh=None,
                     predict: str | Callable = "predict") -> list[Any]:
  """The task's `predict` function over model-input examples (pytrees), batched and padded."""
  mesh = mesh or sharding.make_mesh()
  fn = predict if callable(predict) else task.jit_predict(state, mesh, predict)
  return inference.predict_examples(fn, state, examples, task.batch_size, mesh, task.host_inputs)


def fold_splits(split: str, num_examples: int, folds: int, fold: int) -> tuple[str, str]:
  """(train, held-out) TFDS split strings of fold `fold` of a `folds`-fold split of `split`
  (contiguous index ranges, so every example is held out exactly once)."""
  if not 0 <= fold < folds or folds < 2:
    raise ValueError(f"fold {fold} of {folds} is not valid (need folds >= 2 and 0 <= fold < folds)")
  a, b = fold * num_examples // folds, (fold + 1) * num_examples // folds
  train_split = "+".join(p for p in ((f"{split}[:{a}]" if a > 0 else ""),
                                     (f"{split}[{b}:]" if b < num_examples else "")) if p)
  return train_split, f"{split}[{a}:{b}]"


def cross_validate(task: base.Task, workdir: str, test_split: str | None = None,
                   mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """k-fold cross-validation over the task's train split (`task.folds` folds; fold models in
  `workdir`/fold_i, each validated on its held-out part). Reports the pooled held-out predictions
  (`cv/*`, via `task.pooled`) and the mean/std over folds of `task.summary_keys`; writes
  metrics.json and figures (the cross-validation members of base.Task)."""
  mesh = mesh or sharding.make_mesh()
  test_split = task.config.run.test_split if test_split is None else test_split
  task.check(mesh, [("run.test_split", test_split)])
  if task.folds > task.builder.info.splits[task.config.run.train_split].num_examples:
    raise config_lib.ConfigError(f"`folds`={task.folds}: more folds than examples in {task.config.run.train_split!r}")
  with run_lock.hold(workdir):
    task = task.prepare(run_splits(task, test_split))
    return _cross_validate(task, workdir, test_split, mesh)


def _cross_validate(task: base.Task, workdir: str, test_split: str, mesh) -> dict[str, Any]:
  write_config(workdir, task)
  split = task.config.run.train_split
  n = task.builder.info.splits[split].num_examples
  per_fold, held_out_results = [], []
  for fold in range(task.folds):
    train_split, held_out = fold_splits(split, n, task.folds, fold)
    fold_task = task.with_splits(train_split, held_out)
    fold_dir = os.path.join(workdir, f"fold_{fold}")
    state = train(fold_task, fold_dir, mesh)
    scores: dict[str, Any] = {}
    for prefix, fold_split, figs in (("train", train_split, False), ("cv", held_out, False),
                                     ("test", test_split, True)):
      s, result = evaluate(fold_task, state, fold_split, mesh, fold_dir if figs else None, prefix)
      scores.update(s)
      if result.predictions is not None:
        scores[f"{prefix}/_predictions"] = result.predictions
      if prefix == "cv":
        held_out_results.append(result)
    io.write_json(os.path.join(fold_dir, "metrics.json"), scores)
    per_fold.append(scores)
  pooled = task.pooled(held_out_results)
  metrics = {f"cv/{k}": v for k, v in pooled.scores.items()}
  for prefix in ("train", "cv", "test"):
    for k in task.summary_keys:
      values = [f[f"{prefix}/{k}"] for f in per_fold if f.get(f"{prefix}/{k}") is not None]
      if values:
        metrics[f"{prefix}/{k}_fold_mean"] = float(np.mean(values))
        metrics[f"{prefix}/{k}_fold_std"] = float(np.std(values))
  metrics["folds"] = task.folds
  metrics["test/split"] = test_split  # the pooled cv/ scores name no single split
  task.write_figures(pooled, os.path.join(workdir, "figures"), "cv")
  write_results(workdir, metrics, {})
  return metrics
