"""Batched inference over a dataset: host batches in, (host batch, host outputs) out.

Batches and outputs are pytrees: `predict(state, batch)` receives the numeric fields of each
batch (nested dicts included) on the device and may return any pytree of per-example arrays.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

from lesion_jax.data import batching
from lesion_jax.train import sharding

PredictFn = Callable[[Any, Any], Any]


def predict_over(predict: PredictFn, state: Any, batches: Iterable[dict[str, Any]], mesh,
                 host_inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                 ) -> Iterator[tuple[dict[str, Any], Any]]:
  """Runs a jitted `predict(state, batch)` over every batch; yields (host batch, host outputs).
  `host_inputs` (a task's `Task.host_inputs`: its precision policy's input dtype) makes the copy
  of each batch that goes to the device; the yielded host batch is the one read.

  The next batch is dispatched before the previous outputs are fetched, so host-side work on the
  results overlaps with device compute.
  """
  previous = None
  for batch in batches:
    placed = host_inputs(batch) if host_inputs is not None else batch
    outputs = predict(state, sharding.shard_batch(sharding.device_fields(placed), mesh))
    if previous is not None:
      yield previous[0], sharding.to_host(previous[1])
    previous = (batch, outputs)
  if previous is not None:
    yield previous[0], sharding.to_host(previous[1])


def predict_examples(predict: PredictFn, state: Any, examples: list[Any], batch_size: int, mesh,
                     host_inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[Any]:
  """`predict` over a list of same-shape examples (each a pytree, e.g. {"image": ...}), in padded
  batches of `batch_size` (one compiled shape for all); returns one output pytree per example.
  `host_inputs`: as `predict_over`'s."""
  import jax  # pylint: disable=g-import-not-at-top
  batches = (batching.pad_batch(jax.tree.map(lambda *xs: np.stack(xs), *examples[i:i + batch_size]), batch_size)
             for i in range(0, len(examples), batch_size))
  out = []
  for batch, outputs in predict_over(predict, state, batches, mesh, host_inputs):
    for row in np.flatnonzero(batch["weight"] > 0):
      out.append(jax.tree.map(lambda x, r=row: x[r], outputs))
  return out


def average_predictions(members: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
  """The ensemble of classifiers' saved predictions ({"ids", "labels", "probs"} per member, as in
  predictions.json): class probabilities averaged over the members, on the ids every member has
  (in the first member's order). Returns (predictions, the ids left out because a member lacks
  them). Raises ValueError when members disagree on an image's label or on the class count."""
  if not members:
    raise ValueError("an ensemble needs at least one member")
  tables, widths = {}, {}
  for name, p in members.items():
    probs = np.asarray(p["probs"], np.float64)
    if probs.ndim != 2 or len(probs) != len(p["ids"]) or len(p["labels"]) != len(p["ids"]):
      raise ValueError(f"{name}: ids, labels and probs (N, C) do not match")
    tables[name] = {i: (int(l), row) for i, l, row in zip(p["ids"], p["labels"], probs)}
    widths[name] = probs.shape[1]
  if len(set(widths.values())) > 1:
    raise ValueError(f"members predict different class counts: {widths}")
  first = next(iter(members.values()))["ids"]
  common = [i for i in first if all(i in t for t in tables.values())]
  dropped = sorted(set().union(*[set(t) for t in tables.values()]) - set(common))
  labels, probs = [], []
  for i in common:
    entries = [t[i] for t in tables.values()]
    if len({label for label, _ in entries}) > 1:
      raise ValueError(f"{i}: the members disagree on its label ({[label for label, _ in entries]}): not the same split")
    labels.append(entries[0][0])
    probs.append(np.mean([row for _, row in entries], axis=0))
  return {"ids": common, "labels": labels, "probs": np.asarray(probs).tolist()}, dropped
