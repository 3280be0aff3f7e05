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


def join_predictions(members: dict[str, dict[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
  """Classifiers' saved predictions ({"ids", "labels", "probs"} per member, as in predictions.json)
  joined by image id: (the ids every member has, in the first member's order; their labels (N,);
  the members' probabilities (M, N, C), in `members`' order; the ids left out because a member
  lacks them). Raises ValueError when members disagree on an image's label or on the class count."""
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
  if not common:
    raise ValueError(f"no image is common to all members ({', '.join(members)}): not the same split")
  labels = []
  for i in common:
    found = {t[i][0] for t in tables.values()}
    if len(found) > 1:
      raise ValueError(f"{i}: the members disagree on its label ({sorted(found)}): not the same split")
    labels.append(found.pop())
  probs = np.stack([[t[i][1] for i in common] for t in tables.values()]).reshape(len(tables), len(common), -1)
  return common, np.asarray(labels, np.int64), probs, dropped


def average_predictions(members: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
  """The ensemble of classifiers' saved predictions (join_predictions): class probabilities averaged
  over the members. Returns (predictions, the ids left out because a member lacks them)."""
  ids, labels, probs, dropped = join_predictions(members)
  return {"ids": ids, "labels": labels.tolist(), "probs": probs.mean(axis=0).tolist()}, dropped


def stack_predictions(fit_members: dict[str, dict[str, Any]], members: dict[str, dict[str, Any]],
                      folds: int = 5, seed: int = 0) -> tuple[dict[str, Any], list[str], bool]:
  """A learned stack: multinomial logistic regression (scikit-learn, default L2 strength) on the
  members' log-probabilities, fitted on `fit_members` (the same members' predictions on the
  selection split), applied to `members`'. Where `members` are `fit_members` themselves (the same
  images and probabilities), the probabilities are out of fold (`folds`-fold stratified
  cross-validation), so that split's score is not the fit's own; members that share only some
  images with the fit, or the same images with other probabilities, are refused (their score would
  be partly in-sample). Returns (predictions, ids left out, whether out of fold)."""
  from sklearn import linear_model, model_selection  # pylint: disable=g-import-not-at-top  (scikit-learn, only here)
  if list(fit_members) != list(members):
    raise ValueError(f"the fitted members {list(fit_members)} are not the scored ones {list(members)}")
  fit_ids, fit_labels, fit_probs, _ = join_predictions(fit_members)
  ids, labels, probs, dropped = join_predictions(members)
  if fit_probs.shape[2] != probs.shape[2]:
    raise ValueError(f"the fitted members predict {fit_probs.shape[2]} classes, the scored ones {probs.shape[2]}")
  features = lambda p: np.log(np.clip(p, 1e-7, 1.0)).transpose(1, 0, 2).reshape(p.shape[1], -1)
  model = linear_model.LogisticRegression(max_iter=5000)
  num_classes = probs.shape[2]
  shared = set(ids) & set(fit_ids)
  out_of_fold = bool(shared)
  if shared and (ids != fit_ids or not np.array_equal(probs, fit_probs)):  # equal id lists: equal image sets
    raise ValueError(f"{len(shared)} scored images are also fitted on, but the scored members are not the fitted "
                     "ones (other images or other probabilities): score the fitting split with --members equal to "
                     "--fit_members (out of fold), or another split that shares no image with it")
  if out_of_fold:  # scored on its own fitting images: each image's probabilities from a fit without it
    x, y = features(fit_probs), fit_labels
    cv = model_selection.StratifiedKFold(folds, shuffle=True, random_state=seed)
    stacked = model_selection.cross_val_predict(model, x, y, cv=cv, method="predict_proba")
    classes = np.unique(y)
  else:
    model.fit(features(fit_probs), fit_labels)
    stacked, classes = model.predict_proba(features(probs)), model.classes_
  full = np.zeros((len(ids), num_classes))
  full[:, classes] = stacked  # a class absent from the fit keeps probability 0
  return {"ids": ids, "labels": labels.tolist(), "probs": full.tolist()}, dropped, out_of_fold
