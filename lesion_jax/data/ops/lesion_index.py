"""The Lesion Indexing Network's op: `class_rotations`, its class-balancing augmentation, which
turns one example into its rotations by every multiple of its class's angle step (optionally
flipped, the paper's DR / DM / DR + DM). Separate because only that pipeline uses it; its
pre-processing otherwise is the shared image ops (`center_crop`, `resize_image`, ...).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from lesion_jax.data import augment as augment_lib
from lesion_jax.data.ops.core import Op, expand, register


FLIP_MODES = ("none", "random", "both")


@register("class_rotations")
def class_rotations(label_key: str, degrees_per_class: Sequence[float], image_key: str = "image",
                    spatial_keys: Sequence[str] = ("mask",), flip: str = "none",
                    index_key: str = "rotation_index") -> Op:
  """One example → its rotations by every multiple of its class's step (one-to-many): the Lesion
  Indexing Network's class-balancing augmentation. An example of class c gives
  round(360 / degrees_per_class[c]) copies, rotated by 0, step, 2 step, ... about the image
  centre, with `spatial_keys` (masks) moved alongside; a step of 0 or >= 360 gives the example
  once. `flip`: "none" is the paper's DR; "random" its DM (each copy also flipped at random from
  the op's seed); "both" DR + DM (each rotation twice: as is, and flipped at random). Copies are
  numbered in `index_key`."""
  if flip not in FLIP_MODES:
    raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
  spatial_keys = tuple(spatial_keys)
  steps = [float(d) for d in degrees_per_class]
  counts = tf.constant([1 if d <= 0 or d >= 360 else max(1, int(round(360.0 / d))) for d in steps], tf.int32)
  step_table = tf.constant([d if 0 < d < 360 else 0.0 for d in steps], tf.float32)

  def fn(example, seed):
    label = tf.cast(example[label_key], tf.int32)
    checks = [tf.debugging.assert_less(label, len(steps), message=f"class_rotations: {label_key} beyond "
                                       f"the {len(steps)} classes given")]
    with tf.control_dependencies(checks):
      rotations = tf.gather(counts, label)
      angles = tf.range(rotations, dtype=tf.float32) * tf.gather(step_table, label) * (math.pi / 180.0)
    if flip == "both":  # every rotation as is, then every rotation flipped
      angles = tf.concat([angles, angles], 0)
    n = tf.shape(angles)[0]
    image = example[image_key]
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    center = ((tf.cast(h, tf.float32) - 1.0) / 2.0, (tf.cast(w, tf.float32) - 1.0) / 2.0)
    keys = (image_key, *spatial_keys)

    def one(args):
      angle, j = args
      rotated = {k: augment_lib.rotate(tf.cast(example[k], tf.float32), None, angle, center)[0] for k in keys}
      if flip != "none":
        s = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tf.cast(j, tf.int64))
        flipped = augment_lib.augment_features(rotated, s, augment_lib.AugmentConfig(
            flip=True, rotate=False, crop=False, color=0.0), image_key, spatial_keys)
        use = tf.constant(True) if flip == "random" else j >= rotations  # "both": the second half
        rotated = {k: tf.where(use, flipped[k], rotated[k]) for k in keys}
      # Masks stay binary after bilinear rotation.
      return {k: rotated[k] if k == image_key else tf.cast(rotated[k] >= 0.5, tf.float32) for k in keys}

    signature = {k: tf.TensorSpec(example[k].shape, tf.float32) for k in keys}
    many = tf.map_fn(one, (angles, tf.range(n)), fn_output_signature=signature)
    out = {k: tf.broadcast_to(v[None], tf.concat([[n], tf.shape(v)], 0)) for k, v in example.items()
           if k not in keys}
    out.update(many)
    out[index_key] = tf.range(n, dtype=tf.int32)
    return out

  return expand(fn, needs=(label_key, image_key, *spatial_keys))
