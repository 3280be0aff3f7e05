"""The inpainter's op: `random_holes` draws a random hole mask (strokes, hair-like curves, blobs;
holes.py) from the op's seed. An op of lesion_jax.data.ops's kind (`op(example, seed)`), here
because only this pipeline needs it; it runs NumPy/OpenCV code inside the graph.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from lesion_jax.data.ops import Op, named


@named("random_holes")
def random_holes(size: int, config=None, out: str = "holes") -> Op:
  """float32 {0, 1} (size, size, 1) random hole mask (1 = hole) into `out`: strokes, hair-like
  curves and blobs (holes.py), drawn from the op's seed."""
  from lesion_jax.pipelines.purification import holes  # pylint: disable=g-import-not-at-top  (OpenCV)
  config = config or holes.HoleConfig()

  def draw(seed):
    return (holes.random_hole_mask(seed.astype(np.uint64), size, config) > 0).astype(np.float32)[..., None]

  def fn(example, seed):
    mask = tf.numpy_function(draw, [tf.cast(seed, tf.int64)], tf.float32, stateful=False)
    return {**example, out: tf.ensure_shape(mask, [size, size, 1])}

  return Op(fn, random=True)
