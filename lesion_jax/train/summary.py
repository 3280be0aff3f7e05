"""TensorBoard event writing (process 0 only) and a JSON history of every logged scalar."""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np

from lesion_jax import io


class MetricWriter:
  """Writes scalars (and optional images) to TensorBoard and keeps `history.json` in `workdir`.

  The history survives restarts: a resumed run appends to what the earlier run logged.
  """

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._history_path = os.path.join(workdir, "history.json")
    self.history: dict[str, list[list[float]]] = {}
    if os.path.exists(self._history_path):
      self.history = io.read_json(self._history_path)
    self._writer = None
    if self.enabled:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._writer = tf.summary.create_file_writer(workdir)

  def truncate(self, step: int) -> None:
    """Forgets history after `step` (a resumed run re-does those steps)."""
    self.history = {k: [p for p in v if p[0] <= step] for k, v in self.history.items()}

  def scalars(self, step: int, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
      self.history.setdefault(name, []).append([int(step), float(value)])
    if self._writer is None:
      return
    with self._writer.as_default(step=step):
      for name, value in values.items():
        self._tf.summary.scalar(name, float(value))

  def images(self, step: int, name: str, images: np.ndarray) -> None:
    """uint8 (N, H, W, 3) images, e.g. prediction overlays."""
    if self._writer is None:
      return
    with self._writer.as_default(step=step):
      self._tf.summary.image(name, np.asarray(images), max_outputs=len(images))

  def flush(self) -> None:
    if self.enabled:
      io.write_json(self._history_path, self.history)
      self._writer.flush()

  def close(self) -> None:
    self.flush()
    if self._writer is not None:
      self._writer.close()
