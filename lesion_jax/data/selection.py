"""Honest model selection: a fixed, stratified hold-out part of the training split.

Checkpoints, thresholds and hyperparameters are chosen on the hold-out part; the reported split
is never looked at before it is scored. The two parts are ordinary TFDS split strings made of
index ranges of the training split (`train[0:3]+train[4:9]+...`), so every reader (training,
evaluation, K-means annotation, config.json) handles them as it handles any TFDS slice, and a
run's config records exactly which images it selected on.
"""
from __future__ import annotations

import re

import numpy as np

# Class features stratified on, first present wins (a dataset with none is split unstratified).
STRATIFY_KEYS = ("label", "malignant")


def index_ranges_split(split: str, indices) -> str:
  """A TFDS split string selecting exactly `indices` (positions in `split`), merged into
  contiguous ranges: index_ranges_split("train", [0, 1, 2, 5]) == "train[0:3]+train[5:6]"."""
  indices = np.unique(np.asarray(indices, np.int64))
  if not len(indices):
    raise ValueError(f"no examples of {split!r} selected")
  breaks = np.flatnonzero(np.diff(indices) > 1) + 1
  runs = np.split(indices, breaks)
  return "+".join(f"{split}[{int(r[0])}:{int(r[-1]) + 1}]" for r in runs)


def split_name(split: str) -> str:
  """`split` short enough for a log line: a long `index_ranges_split` string is named by its
  split and size ("train: 400 examples in 274 index ranges"); any other split string unchanged."""
  parts = split.split("+")
  ranges = [re.fullmatch(r"(\w+)\[(\d+):(\d+)\]", p) for p in parts]
  if len(parts) <= 3 or not all(ranges) or len({r.group(1) for r in ranges}) != 1:
    return split
  count = sum(int(r.group(3)) - int(r.group(2)) for r in ranges)
  return f"{ranges[0].group(1)}: {count} examples in {len(ranges)} index ranges"


def stratified_holdout_indices(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(fit, holdout) sorted positions: `fraction` of the examples held out, every class in the
  same proportion in both parts (scikit-learn's stratified shuffle split; `labels` None or a
  class with a single example falls back to an unstratified split), fixed by `seed`."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"hold-out fraction {fraction}: must be between 0 and 1")
  positions = np.arange(len(labels))
  if len(positions) < 2:
    raise ValueError(f"{len(positions)} example(s): nothing to hold out")
  stratify = None
  if labels is not None:
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    stratify = np.asarray(labels) if counts.min() >= 2 else None
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top  (~1 s; split_name's importers need none)
  fit, holdout = model_selection.train_test_split(positions, test_size=fraction, random_state=seed,
                                                  shuffle=True, stratify=stratify)
  return np.sort(fit), np.sort(holdout)


def stratify_key(builder) -> str | None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder.info.features
  return next((k for k in STRATIFY_KEYS if k in features and isinstance(features[k], tfds.features.ClassLabel)),
              None)


def holdout_splits(builder, split: str, fraction: float, seed: int = 0,
                   label_key: str | None = None) -> tuple[str, str]:
  """(fit split, hold-out split) of `split`: TFDS split strings of its examples, the hold-out
  part stratified by `label_key` (default: the builder's first of STRATIFY_KEYS)."""
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  key = label_key or stratify_key(builder)
  ds = pipeline.read_split(builder, split, per_process=False)
  if key is None:
    labels = np.zeros(int(ds.cardinality().numpy()), np.int64)
  else:
    labels = np.fromiter(ds.map(lambda ex: ex[key]).as_numpy_iterator(), np.int64)
  fit, holdout = stratified_holdout_indices(labels, fraction, seed)
  return index_ranges_split(split, fit), index_ranges_split(split, holdout)
