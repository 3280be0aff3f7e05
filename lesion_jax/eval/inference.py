"""Batched inference over a dataset: host batches in, (host batch, host outputs) out."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from lesion_jax.train import sharding


def predict_over(predict: Callable[[Any, jax.Array], jax.Array], state: Any,
                 batches: Iterable[dict[str, np.ndarray]], mesh: jax.sharding.Mesh
                 ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Runs a jitted `predict(state, images)` over every batch; yields (batch, outputs) on the host.

  The next batch is dispatched before the previous outputs are fetched, so host-side work on the
  results overlaps with device compute.
  """
  previous = None
  for batch in batches:
    outputs = predict(state, sharding.shard_batch({"image": batch["image"]}, mesh)["image"])
    if previous is not None:
      yield previous[0], sharding.to_host(previous[1])
    previous = (batch, outputs)
  if previous is not None:
    yield previous[0], sharding.to_host(previous[1])


def predict_arrays(predict: Callable[[Any, jax.Array], jax.Array], state: Any, inputs: list[np.ndarray],
                   batch_size: int, mesh: jax.sharding.Mesh) -> list[np.ndarray]:
  """`predict` over a list of same-shape model inputs, in padded batches of `batch_size` (one
  compiled shape for all); returns one output per input, in order."""
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  batches = (pipeline.pad_batch({"image": np.stack(inputs[i:i + batch_size])}, batch_size)
             for i in range(0, len(inputs), batch_size))
  return [out for batch, outs in predict_over(predict, state, batches, mesh)
          for out, w in zip(outs, batch["weight"]) if w > 0]
