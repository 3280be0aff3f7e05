"""Generic one-to-many ops: `patches` turns one example into one per centre (or box), pixel-exact
crops of the chosen features with the others repeated. Separate from the per-example ops
because `apply` unbatches after it (see the package docstring); the pipeline-specific
one-to-many ops (`class_rotations`, `superpixel_patches`) live with their pipeline
(lesion_jax/pipelines/lesion_index/ops.py). (Not named
`expand`, which is the core factory every one-to-many op is made with.)
"""
from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from lesion_jax.data.ops.core import Op, expand, register


@register("patches")
def patches(centers_key: str, size: int, keys: Sequence[str] = ("image",), index_key: str = "patch_index",
            jitter: float = 0.0) -> Op:
  """One example → one per centre (one-to-many): `size`×`size` crops of each feature of `keys`.

  `centers_key` holds (N, 2) normalised (row, col) centres (0 and 1 the image edges), e.g.
  superpixel centroids, or (N, 4) boxes [ymin, xmin, ymax, xmax], cropped around their centres.
  Crops are pixel-exact (no resampling) and shifted inwards at the borders so they stay inside
  the image; `keys` must share one (H, W) >= size. `jitter` (pixels) moves each centre by a
  uniform random offset drawn from the op's seed. In the outputs `centers_key` holds the patch's
  own row, `index_key` its index j (int32); every other feature is repeated N times.
  """
  keys = tuple(keys)

  def fn(example, seed):
    centers = tf.cast(example[centers_key], tf.float32)
    if centers.shape.rank != 2 or centers.shape[-1] not in (2, 4):
      raise ValueError(f"patches: {centers_key!r} must be (N, 2) centres or (N, 4) boxes, got {centers.shape}")
    if centers.shape[-1] == 4:
      centers = (centers[:, :2] + centers[:, 2:]) / 2.0
    n = tf.shape(centers)[0]
    shape = tf.shape(example[keys[0]])
    hw = tf.cast(shape[:2], tf.float32)
    pixel = centers * hw  # in pixel-edge coordinates
    if jitter > 0:
      pixel += tf.random.stateless_uniform([n, 2], seed, -jitter, jitter)
    limit = tf.maximum(shape[:2] - size, 0)
    corner = tf.clip_by_value(tf.cast(tf.round(pixel - size / 2.0), tf.int32), 0, limit)
    checks = [tf.debugging.assert_greater_equal(shape[:2], size,
                                                message=f"patches: {keys[0]!r} is smaller than {size}")]
    with tf.control_dependencies(checks):
      rows = corner[:, :1] + tf.range(size)[None]  # (N, size)
      cols = corner[:, 1:] + tf.range(size)[None]
    out = {}
    for k, v in example.items():
      if k in keys:
        out[k] = tf.gather(tf.gather(v, rows, axis=0), cols, axis=2, batch_dims=1)  # (N, size, size, C)
      elif k == centers_key:
        out[k] = example[centers_key]
      else:
        out[k] = tf.broadcast_to(v[None], tf.concat([[n], tf.shape(v)], 0))
    out[index_key] = tf.range(n, dtype=tf.int32)
    return out

  return expand(fn, needs=(centers_key, *keys))
