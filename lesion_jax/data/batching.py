"""Fixed-size host batches, in numpy only (this module imports no TensorFlow, so inference and
training code can pad batches without the input pipeline).

A batch is a dict whose leaves (nested dicts, lists and tuples allowed) are arrays sharing their
leading (example) axis.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
  """`fn` on every leaf of nested dicts / lists / tuples (structure kept)."""
  if isinstance(tree, dict):
    return {k: tree_map(fn, v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(tree_map(fn, v) for v in tree)
  return fn(tree)


def tree_leaves(tree: Any) -> list[Any]:
  if isinstance(tree, dict):
    return [leaf for v in tree.values() for leaf in tree_leaves(v)]
  if isinstance(tree, (list, tuple)):
    return [leaf for v in tree for leaf in tree_leaves(v)]
  return [tree]


def batch_rows(batch: Any) -> int:
  """The number of examples in `batch`; every leaf must agree."""
  sizes = {len(leaf) for leaf in tree_leaves(batch)}
  if len(sizes) != 1:
    raise ValueError(f"batch leaves disagree on the number of examples: {sorted(sizes)}")
  return sizes.pop()


def pad_batch(batch: dict[str, Any], size: int) -> dict[str, Any]:
  """Pads a short batch to `size` rows by repeating its last row in every leaf; adds 'weight'
  (1 on real rows, 0 on padding) so metrics and losses can ignore the padding."""
  n = batch_rows(batch)

  def pad(v):
    v = np.asarray(v)
    return np.concatenate([v, np.repeat(v[-1:], size - n, axis=0)]) if n < size else v

  out = tree_map(pad, batch)
  out["weight"] = (np.arange(max(size, n)) < n).astype(np.float32)
  return out
