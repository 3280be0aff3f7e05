"""The one checkpoint helper: an orbax CheckpointManager keeping the latest and the best steps.

Every task saves through `Checkpoints` (via the loop and the runner), so resuming, "restore the
best model" and evaluating from a workdir work the same way for every task; a state is any
pytree (one TrainState, or several for a multi-player model).

Integrity (orbax 0.12 has no checksums of its own):
- a state with a non-finite floating-point leaf is never saved (`NonFiniteStateError`);
- once a save has finished, the SHA-256 of every file of its step directory is recorded in
  `<step>/CHECKSUMS.json` (written by process 0), and `restore` verifies it first: a damaged
  checkpoint raises `CheckpointDamagedError` naming the step and the file, never restores wrong
  weights. Steps saved before checksums existed restore unverified, with a warning.
- `newest_intact_step` / `quarantine` let training fall back past a damaged newest checkpoint.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
from typing import Any, Literal

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from lesion_jax import io

Which = int | Literal["latest", "best"]


class _ReadOnlyNotice(logging.Filter):
  """Drops orbax's "Given directory is read only" warning: evaluate and predict open checkpoints
  read-only on purpose, and the warning on every run reads like a problem."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_ReadOnlyNotice())

CHECKSUMS = "CHECKSUMS.json"


class CheckpointDamagedError(RuntimeError):
  """A checkpoint whose files do not match their recorded checksums, or that orbax cannot read."""


class CheckpointNotFoundError(FileNotFoundError):
  """No checkpoint of the step asked for."""


class NonFiniteStateError(FloatingPointError):
  """A state with NaN or infinite values: it is never written as a checkpoint."""


class DiskFullError(OSError):
  """No space left where a run writes; one line naming the path and the free space."""


def disk_full_error(exc: BaseException, path: str) -> DiskFullError | None:
  """A DiskFullError for `exc` if it (or what caused it) is ENOSPC, else None."""
  if isinstance(exc, DiskFullError):
    return exc
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left on device" in str(exc):
      try:
        free = shutil.disk_usage(path).free
      except OSError:
        free = 0
      return DiskFullError(errno.ENOSPC, f"no space left on the device of {path} ({free / 2**20:.1f} MiB "
                                         "free); free some space and re-run the same command to resume")
    exc = exc.__cause__ or exc.__context__
  return None


def non_finite_leaves(state: Any) -> list[str]:
  """Paths of the floating-point leaves of `state` holding a NaN or an infinity (one reduction
  per leaf on the device, one transfer of booleans)."""
  leaves = [(jax.tree_util.keystr(path), x) for path, x in jax.tree_util.tree_leaves_with_path(state)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  finite = jax.device_get([jnp.isfinite(x).all() for _, x in leaves])
  return [name for (name, _), ok in zip(leaves, finite) if not bool(ok)]


def _file_digests(step_dir: str) -> dict[str, str]:
  digests = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == CHECKSUMS:
        continue
      h = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      digests[rel] = h.hexdigest()
  return digests


class Checkpoints:
  """Latest-N and best-N (by a validation metric) checkpoints of a train state under `directory`.

  Args:
    directory: e.g. `<workdir>/checkpoints`; created if missing.
    best_metric: key in the metrics passed to `save` that ranks checkpoints (e.g. 'val/jaccard');
      None keeps only the latest ones.
    best_mode: 'max' or 'min'.
    keep_latest, keep_best: how many of each to keep (a step can be both).
    read_only: open an existing directory without the right to write (evaluate/predict).
  """

  def __init__(self, directory: str | os.PathLike, best_metric: str | None = None,
               best_mode: Literal["max", "min"] = "max", keep_latest: int = 1, keep_best: int = 1,
               read_only: bool = False):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = os.path.abspath(os.fspath(directory))
    self.best_metric = best_metric
    self.best_mode = best_mode
    policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep_latest)]
    best_fn = None
    if best_metric is not None:
      best_fn = self._metric_value
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=best_mode == "min", n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        best_fn=best_fn, best_mode=best_mode, max_to_keep=None, read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        create=not read_only,
        preservation_policy=None if read_only else ocp.checkpoint_managers.AnyPreservationPolicy(policies))
    self._options = options
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._unsealed: set[int] = set()
    self._verified: set[int] = set()  # steps whose files matched their checksums (hashed once)

  def _metric_value(self, metrics: dict[str, Any]) -> float:
    value = float(metrics.get(self.best_metric, math.nan))
    if math.isnan(value):  # a diverged run must never count as the best
      return -math.inf if self.best_mode == "max" else math.inf
    return value

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def metrics(self, step: int) -> dict[str, Any] | None:
    """The metrics saved with `step` (None if none were saved, or there is no such step).

    orbax reads them from the step's directory, where they only are once an asynchronous save
    has finished: so this waits for a save in flight.
    """
    if step not in self.all_steps():
      return None
    self._manager.wait_until_finished()
    return self._manager.metrics(step)

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Saves `state` as `step` (asynchronously), after checking that it is finite; a step
    already saved is left as it is."""
    bad = non_finite_leaves(state)
    if bad:
      raise NonFiniteStateError(
          f"refusing to checkpoint step {step}: the state has non-finite values in {len(bad)} "
          f"leaves (e.g. {bad[0]}); the run diverged (lower `optimizer.learning_rate`?)")
    if step in self.all_steps():
      return
    metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
    try:
      self._seal_finished()  # the previous save is complete: record its checksums first
      self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
    except OSError as e:
      full = disk_full_error(e, self.directory)
      if full is None:
        raise
      raise full from None
    self._unsealed.add(step)

  def _seal_finished(self) -> None:
    """Waits for saves in flight, then records the checksums of the steps this object saved."""
    self._manager.wait_until_finished()
    for step in sorted(self._unsealed):
      step_dir = self.step_directory(step)
      if os.path.isdir(step_dir) and jax.process_index() == 0:
        io.write_json(os.path.join(step_dir, CHECKSUMS), _file_digests(step_dir))
    self._unsealed.clear()

  def step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def verify(self, step: int) -> bool:
    """Checks the files of `step` against its recorded checksums: True if they match, False if
    none were recorded (saved before checksums, or cut off before its save finished); raises
    CheckpointDamagedError naming the file otherwise."""
    if step in self._verified:
      return True
    step_dir = self.step_directory(step)
    path = os.path.join(step_dir, CHECKSUMS)
    if not os.path.exists(path):
      return False
    try:
      with open(path) as f:
        recorded = json.load(f)
    except (OSError, ValueError) as e:
      raise CheckpointDamagedError(f"checkpoint {step_dir} is damaged: its {CHECKSUMS} is unreadable ({e})") from None
    actual = _file_digests(step_dir)
    for rel, digest in sorted(recorded.items()):
      if rel not in actual:
        raise CheckpointDamagedError(f"checkpoint {step_dir} is damaged: {rel} is missing")
      if actual[rel] != digest:
        raise CheckpointDamagedError(f"checkpoint {step_dir} is damaged: {rel} does not match its recorded checksum")
    self._verified.add(step)
    return True

  def restore(self, template: Any, which: Which = "latest") -> Any:
    """Restores into the structure (and shardings) of `template`; `which` is a step, 'latest' or
    'best'. The step's files are verified first (CheckpointDamagedError names what is wrong)."""
    step = self._resolve(which)
    if not self.verify(step):
      logging.getLogger("absl").warning("Checkpoint %s has no recorded checksums: restoring it unverified.",
                                        self.step_directory(step))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, OSError, KeyError, RuntimeError) as e:  # what a torn or altered file gives
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointDamagedError(f"checkpoint {self.step_directory(step)} cannot be restored: {first}") from e

  def newest_intact_step(self) -> int | None:
    """The newest step whose files match their checksums (or that has none recorded); damaged
    newer steps are moved aside (`quarantine`) with a warning, so that training can resume from
    and later overwrite their step numbers."""
    for step in sorted(self.all_steps(), reverse=True):
      try:
        self.verify(step)
        return step
      except CheckpointDamagedError as e:
        self.quarantine(step, str(e))
    return None

  def quarantine(self, step: int, reason: str) -> None:
    """Moves a damaged step out of the checkpoint directory (to `<directory>_damaged/<step>`) and
    reopens the manager without it."""
    target = os.path.join(self.directory + "_damaged", str(step))
    self._verified.discard(step)  # a step saved again under this number is hashed afresh
    logging.getLogger("absl").warning("%s; moving it to %s and resuming from an earlier checkpoint.",
                                      reason, target)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      if os.path.exists(target):
        shutil.rmtree(target)
      shutil.move(self.step_directory(step), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"lesion_jax_quarantine_{step}")
    self._manager.close()
    self._manager = ocp.CheckpointManager(self.directory, options=self._options)

  def _resolve(self, which: Which) -> int:
    step = {"latest": self.latest_step, "best": self.best_step}[which]() if isinstance(which, str) else which
    if step is None or step not in self.all_steps():
      raise CheckpointNotFoundError(
          f"no checkpoint {which!r} in {self.directory} (steps present: {self.all_steps() or 'none'})")
    return step

  def wait(self) -> None:
    try:
      self._seal_finished()
    except Exception as e:  # an asynchronous save's failure surfaces here, in whatever wrapping
      full = disk_full_error(e, self.directory)
      if full is None:
        raise
      raise full from None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()

  def __enter__(self) -> "Checkpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
