"""The one training loop, shared by every task (lesion_jax/tasks runs it through tasks/runner.py).

    state = loop.train(state, train_step, batches_from, evaluate, workdir, LoopConfig(...), rng)

- `state` is any pytree with an integer scalar `step` attribute that the train step advances by
  one (flax's TrainState, or a GAN's two-player state); it is checked on entry with a clear
  error. The caller's `state` stays valid: the loop trains a replicated copy (and donates that).
- `train_step(state, batch, rng) -> (state, metrics)` is a pure function; it is jitted here once,
  with the state donated and the batch (any pytree of arrays) sharded over the device mesh.
- `batches_from(start_step)` returns an iterator of host (numpy) batches starting at `start_step`,
  so a resumed run sees the same data it would have seen without the interruption. String
  fields (ids) stay on the host.
- `evaluate(state) -> dict` computes validation metrics on the host side every `eval_every`
  steps; its result is logged and stored with the checkpoint written at that step.
- Checkpoints are written every `checkpoint_every` steps (default: with each evaluation), and at
  the end; the latest and the best (by `best_metric`) are kept.
- Every metric whose name contains "loss" is checked on log steps, and the state itself before
  every evaluation and save: a non-finite value stops the run, and a non-finite state is never
  written as a checkpoint (checkpoint.NonFiniteStateError).
- `hooks`: periodic actions `hook(step, state, writer)` every `hook.every` steps (sample grids,
  image summaries), see `PeriodicHook`.
- Re-running with the same workdir resumes from the latest intact checkpoint (a damaged newer one
  is moved aside with a warning). `state` may be an `InitialState`: the state is then only made
  when the run does not resume, and resuming restores into its abstract shape (no throw-away
  initialisation, no second copy on the device).
- SIGTERM (a scheduler's or a TPU preemption's notice) and SIGINT (Ctrl-C) stop the run at the end
  of the current step, on every host at the same step: a checkpoint of that step is written and
  `Preempted` raised (the command-line entry points exit with 143 / 130). The same command
  resumes exactly where it stopped. A second Ctrl-C interrupts at once.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from typing import Any, Callable, Iterator, Literal, Sequence

import jax
import numpy as np
from absl import logging

from lesion_jax import checkpoint
from lesion_jax.train import sharding
from lesion_jax.train.summary import MetricWriter


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  num_steps: int
  batch_size: int  # global batch size, for images/s
  eval_every: int = 500
  log_every: int = 50
  checkpoint_every: int | None = None  # None: with each evaluation
  best_metric: str | None = None  # e.g. "val/jaccard"; None keeps only the latest checkpoint
  best_mode: Literal["max", "min"] = "max"
  keep_latest: int = 1
  keep_best: int = 1


@dataclasses.dataclass(frozen=True)
class PeriodicHook:
  """`fn(step, state, writer)` every `every` steps (and at the last step), on every process;
  write outputs only where `writer.enabled` (process 0)."""
  every: int
  fn: Callable[[int, Any, MetricWriter], None]
  name: str = "hook"

  def __call__(self, step: int, state: Any, writer: MetricWriter) -> None:
    self.fn(step, state, writer)


@dataclasses.dataclass(frozen=True)
class InitialState:
  """A train state that is made only if the run does not resume: `make()` builds it (e.g. the
  task's initialisation plus pretrained weights); `abstract` is its shape (`jax.eval_shape` of the
  initialisation), what a resumed run restores into."""
  abstract: Any
  make: Callable[[], Any]


class Preempted(RuntimeError):
  """Training stopped by a signal after saving a checkpoint; re-running resumes."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step = signum, step
    self.exit_code = 128 + signum  # what a shell reports for a process ended by the signal
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved in "
                     f"{workdir}/checkpoints: re-run the same command to resume")


def check_state(state: Any) -> None:
  """The loop's one requirement on a train state (or its abstract shape): an integer scalar `step`."""
  step = getattr(state, "step", None)
  if step is None:
    raise TypeError(f"the training loop needs a state with a `step` attribute (an integer scalar "
                    f"array the train step increments), got {type(state).__name__}")
  dtype = step.dtype if hasattr(step, "dtype") else np.asarray(step).dtype
  if getattr(step, "shape", ()) != () or not np.issubdtype(dtype, np.integer):
    raise TypeError(f"state.step must be an integer scalar, got {step!r}")


class _StopSignals:
  """Records SIGTERM / SIGINT instead of dying, so the loop can save and stop after the step in
  flight. Installed only from the main thread (where Python delivers signals)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: int | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):
    if self.received == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the save
    self.received = signum
    logging.warning("Received %s: stopping after the current step, with a checkpoint (a second "
                    "Ctrl-C interrupts at once).", signal.Signals(signum).name)

  def __enter__(self) -> "_StopSignals":
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def agreed(self) -> int | None:
    """The signal received by any host (0 for none), the same on every host; on several hosts a
    tiny collective per step, so all hosts stop (and save) at the same step."""
    if jax.process_count() == 1:
      return self.received
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    codes = np.asarray(multihost_utils.process_allgather(np.int32(self.received or 0)))
    return int(codes.max()) or None


def check_finite_losses(step: int, means: dict[str, float]) -> None:
  """Stops a diverged run: every loss-like metric (name contains 'loss') must be finite."""
  bad = {k: v for k, v in means.items() if "loss" in k and not math.isfinite(v)}
  if bad:
    raise FloatingPointError(f"training diverged at step {step}: {bad}")


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def checkpoints_for(workdir: str, config: LoopConfig, read_only: bool = False) -> checkpoint.Checkpoints:
  """The run's checkpoints (`workdir`/checkpoints), ranked as `config` says."""
  return checkpoint.Checkpoints(f"{workdir}/checkpoints", config.best_metric, config.best_mode,
                                config.keep_latest, config.keep_best, read_only=read_only)


def train(state: Any, train_step: Callable, batches_from: Callable[[int], Iterator[dict]],
          evaluate: Callable[[Any], dict[str, float]] | None, workdir: str,
          config: LoopConfig, rng: jax.Array, mesh: jax.sharding.Mesh | None = None,
          writer: MetricWriter | None = None, hooks: Sequence[PeriodicHook] = ()) -> Any:
  """Trains until `config.num_steps`, resuming from `workdir`/checkpoints if a run was cut short.

  Returns the final state (the best checkpoint is restored separately, by the caller, with
  `checkpoint.Checkpoints.restore(template, 'best')`).
  """
  mesh = mesh or sharding.make_mesh()
  initial = state if isinstance(state, InitialState) else InitialState(jax.eval_shape(lambda: state), lambda: state)
  check_state(initial.abstract)
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.meet_hosts()
  ckpts = checkpoints_for(workdir, config)
  own_writer = writer is None
  writer = writer or MetricWriter(workdir)
  try:
    state, start_step = _resume_or_start(initial, ckpts, mesh)
    if start_step:
      writer.truncate(start_step)
      logging.info("Resumed from %s at step %d.", ckpts.directory, start_step)
    step_fn = sharding.jit_train_step(train_step, state, mesh)
    if start_step >= config.num_steps:
      logging.info("Already trained for %d steps; nothing to do.", start_step)
    else:
      with _StopSignals() as signals:
        state = _run_steps(state, step_fn, batches_from, evaluate, ckpts, writer, config, rng, mesh,
                           start_step, hooks, signals)
  except OSError as e:
    full = checkpoint.disk_full_error(e, workdir)
    if full is None:
      raise
    raise full from None
  finally:  # also when a step fails: checkpoints already started are completed, not left torn
    finish = time.perf_counter()
    try:
      ckpts.close()
    finally:
      if time.perf_counter() - finish > 5:
        logging.info("Checkpoint writes finished after %.1fs.", time.perf_counter() - finish)
      if own_writer:
        writer.close()
      else:
        writer.flush()
  return state


def _resume_or_start(initial: InitialState, ckpts: checkpoint.Checkpoints, mesh) -> tuple[Any, int]:
  """(replicated state, its step): the newest intact checkpoint, restored straight into the
  replicated sharding (works across hosts), else the initial state."""
  template = sharding.replicated_abstract(initial.abstract, mesh)
  while (step := ckpts.newest_intact_step()) is not None:
    try:
      state = ckpts.restore(template, step)
      return state, int(jax.device_get(state.step))
    except checkpoint.CheckpointDamagedError as e:  # unreadable although its files are as recorded
      ckpts.quarantine(step, str(e))
  return sharding.replicate(initial.make(), mesh), 0


def check_finite_state(step: int, state: Any) -> None:
  """Stops a run whose state went non-finite (before it is evaluated, ranked or saved)."""
  bad = checkpoint.non_finite_leaves(state)
  if bad:
    raise checkpoint.NonFiniteStateError(
        f"training diverged at step {step}: non-finite values in {len(bad)} state leaves (e.g. {bad[0]}); "
        "nothing of this step was saved (lower `optimizer.learning_rate`?)")


def _run_steps(state, step_fn, batches_from, evaluate, ckpts, writer, config, rng, mesh,
               start_step: int, hooks: Sequence[PeriodicHook], signals: _StopSignals) -> Any:
  checkpoint_every = config.checkpoint_every or config.eval_every
  batches = batches_from(start_step)
  pending: list[dict[str, jax.Array]] = []
  window_start, window_steps, train_time = time.perf_counter(), 0, 0.0
  for step in range(start_step + 1, config.num_steps + 1):
    try:
      host_batch = next(batches)
    except StopIteration as e:
      raise RuntimeError(f"the training input ran out at step {step}; it must repeat") from e
    batch = sharding.shard_batch(sharding.device_fields(host_batch), mesh)
    state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step))
    pending.append(metrics)
    window_steps += 1

    if step % config.log_every == 0 or step == config.num_steps:
      host = jax.device_get(pending)  # one sync per log line, not per step
      means = {f"train/{k}": float(np.mean([m[k] for m in host])) for k in host[0]}
      elapsed = time.perf_counter() - window_start
      train_time += elapsed
      ips = window_steps * config.batch_size / max(elapsed, 1e-9)
      means["train/images_per_second"] = ips
      writer.scalars(step, means)
      eta = (config.num_steps - step) * elapsed / max(window_steps, 1)
      shown = " ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in means.items()
                       if k != "train/images_per_second")
      check_finite_losses(step, means)
      logging.info("step %d/%d | %s | %.1f img/s | ETA %s", step, config.num_steps, shown, ips,
                   format_duration(eta))
      pending, window_steps = [], 0
      window_start = time.perf_counter()

    last = step == config.num_steps
    evaluating = step % config.eval_every == 0 or last
    due_hooks = [h for h in hooks if step % h.every == 0 or last]
    stop = signals.agreed()  # a signal on any host: save this step and stop
    saving = evaluating or step % checkpoint_every == 0 or bool(stop)
    if saving or due_hooks:
      pause = time.perf_counter()
      eval_metrics = None
      if saving:
        check_finite_state(step, state)
      if evaluating:
        eval_metrics = dict(evaluate(state)) if evaluate is not None else {}
        writer.scalars(step, eval_metrics)
        shown = " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items())
        logging.info("eval at step %d: %s (%.1fs)", step, shown or "-", time.perf_counter() - pause)
      if saving:
        ckpts.save(step, state, eval_metrics or None)
      for hook in due_hooks:
        hook(step, state, writer)
      writer.flush()
      window_start += time.perf_counter() - pause  # keep eval, hooks and saving out of images/s
    if stop:
      ckpts.wait()
      writer.flush()
      logging.warning("Stopped by %s at step %d: checkpoint saved; re-run the same command to resume.",
                      signal.Signals(stop).name, step)
      raise Preempted(stop, step, writer.workdir)
  return state
