"""Feature bookkeeping ops: `label` (a class label as int32), `copy` (a feature under a second
name) and `keep` (only the named features, in order). They touch no pixels, so they are apart
from the image ops; every pipeline's op list uses them.
"""
from __future__ import annotations

from collections.abc import Iterable

import tensorflow as tf

from lesion_jax.data.ops.core import Op, register


@register("label")
def label(key: str, out: str = "label") -> Op:
  """A class label as int32, into `out`."""
  return Op(lambda ex, _: {**ex, out: tf.cast(ex[key], tf.int32)}, needs=(key,))


@register("copy")
def copy(src: str, dst: str) -> Op:
  """Copies feature `src` to `dst` (e.g. the encoded mask as 'mask_encoded', before decoding)."""
  return Op(lambda ex, _: {**ex, dst: ex[src]}, needs=(src,))


@register("keep")
def keep(keys: Iterable[str]) -> Op:
  """Only the features `keys` (in this order)."""
  keys = tuple(keys)
  return Op(lambda ex, _: {k: ex[k] for k in keys}, needs=keys)
