"""The one checkpoint helper: an orbax CheckpointManager keeping the latest and the best steps.

Every task saves through `Checkpoints` (via the loop and the runner), so resuming, "restore the
best model" and evaluating from a workdir work the same way for every task; a state is any
pytree (one TrainState, or several for a multi-player model).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Literal

import jax
import orbax.checkpoint as ocp

Which = int | Literal["latest", "best"]


class _ReadOnlyNotice(logging.Filter):
  """Drops orbax's "Given directory is read only" warning: evaluate and predict open checkpoints
  read-only on purpose, and the warning on every run reads like a problem."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_ReadOnlyNotice())


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
    self._manager = ocp.CheckpointManager(self.directory, options=options)

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
    metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
    self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

  def restore(self, template: Any, which: Which = "latest") -> Any:
    """Restores into the structure (and shardings) of `template`; `which` is a step, 'latest' or 'best'."""
    step = self._resolve(which)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def _resolve(self, which: Which) -> int:
    step = {"latest": self.latest_step, "best": self.best_step}[which]() if isinstance(which, str) else which
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(
          f"no checkpoint {which!r} in {self.directory} (steps present: {self.all_steps() or 'none'})")
    return step

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
