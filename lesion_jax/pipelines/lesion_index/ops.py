"""Pipeline 5's own ops (Li and Shen 2018), ops of lesion_jax.data.ops's kind (`op(example,
seed)`) made with `ops.named` (not in the shared registry: only these tasks use them); their
pre-processing otherwise is the shared image ops (`center_crop`, `resize_image`, ...).

  * The Lesion Indexing Network's `class_rotations`, its class-balancing augmentation: one
    example becomes its rotations by every multiple of its class's angle step (optionally
    flipped, the paper's DR / DM / DR + DM).
  * The Lesion Feature Network's (ISIC 2017 task 2) `decode_superpixels` (a superpixel label map
    from its RGB index PNG or an integer map) and `superpixel_patches` (one class-labelled,
    balanced patch per superpixel).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from lesion_jax.data import augment as augment_lib
from lesion_jax.data.ops import Op, expand, named, normalize_image


FLIP_MODES = ("none", "random", "both")


@named("class_rotations")
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


def decode_index_rgb_tensor(encoded: tf.Tensor) -> tf.Tensor:
  """PNG bytes of a label map in ISIC 2017 Part 2's RGB index encoding → int32 (H, W) with
  index = R + 256 G + 65536 B (the tf twin of `artifacts.superpixels.decode_index_rgb`)."""
  rgb = tf.cast(tf.io.decode_png(encoded, channels=3), tf.int32)
  return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@named("decode_superpixels")
def decode_superpixels(key: str = "superpixels", out: str | None = None) -> Op:
  """A superpixel label map → int32 (H, W), into `out` (default: in place). Encoded bytes (the
  superpixel artifacts' PNG, joined by `pipeline.ArtifactJoin`, or an official ISIC 2017
  `*_superpixels.png`) are decoded from the RGB index encoding index = R + 256 G + 65536 B; an
  integer map (e.g. `isic2017_features`' decoded `superpixels`) is only cast (a trailing channel
  of 1 dropped)."""

  def fn(example, _):
    value = example[key]
    if value.dtype == tf.string:
      labels = decode_index_rgb_tensor(value)
    elif value.dtype.is_integer:
      labels = tf.cast(value, tf.int32)
      if labels.shape.rank == 3:
        labels = labels[..., 0]
    else:
      raise TypeError(f"decode_superpixels: {key!r} is {value.dtype.name}, neither encoded bytes nor "
                      "an integer label map")
    return {**example, (out or key): labels}

  return Op(fn, needs=(key,))


@named("superpixel_patches")
def superpixel_patches(mask_channels: Sequence[int], size: int = 56, min_fraction: float = 0.5,
                       priority: Sequence[int] | None = None, keep_probability: Sequence[float] = (),
                       rotate_classes: Sequence[int] = (), image_key: str = "image",
                       superpixels_key: str = "superpixels", masks_key: str = "feature_masks",
                       label_key: str = "label", index_key: str = "patch_index",
                       rotation_key: str = "rotation", repeat_keys: Sequence[str] = ("id",)) -> Op:
  """One image → one example per superpixel (one-to-many): the Lesion Feature Network's patches.

  Inputs: `image_key` uint8 (H, W, 3) (or float in [0, 1]), `superpixels_key` an integer (H, W)
  label map (`decode_superpixels`; labels need not be consecutive: unused ones give no patch),
  `masks_key` (H, W, C) {0, 1} per-pixel feature masks (e.g. `feature_masks`).

  Label space: 0 = background, class c >= 1 = mask channel `mask_channels[c - 1]`. A superpixel
  shows class c when at least `min_fraction` (in (0, 1]) of its pixels are in that channel's
  mask; when several classes qualify, the first of `priority` (class labels 1..K, highest
  first, e.g. rarest first; default 1, 2, ..., K) wins; when none does, it is background.

  Patch content: the superpixel's bounding box sampled to `size` x `size` with
  tf.image.crop_and_resize (box corners on the box's outer pixel centres, bilinear), the image
  first mapped to the model's input range [-1, 1] (`normalize_image`); every sample whose
  nearest source pixel lies outside the superpixel is set to 0 (mid-grey in that range), so a
  patch shows its superpixel alone.

  Balancing (the paper's, for training; leave both empty for evaluation):
  * `keep_probability` (K + 1 values, background first): a patch of class c is kept when a
    uniform draw from the op's seed (one per superpixel) is below keep_probability[c], so
    background (and any class capped below 1) is randomly subsampled, deterministically per seed.
  * `rotate_classes`: kept patches of these (small) classes are emitted 4 times, rotated by
    0, 90, 180 and 270 degrees (tf.image.rot90; `rotation_key` holds k = 0..3, else 0).

  Outputs, per patch: `image_key` float32 (size, size, 3), `label_key` int32, `index_key` int32
  (the superpixel's label in the map), `rotation_key` int32, and the features `repeat_keys`
  (e.g. the image id) repeated; the other input features are dropped. Patches come in
  superpixel order, the rotations of one superpixel together.
  """
  channels = [int(c) for c in mask_channels]
  k = len(channels)
  if k < 1:
    raise ValueError("superpixel_patches: give at least one mask channel")
  if not 0.0 < min_fraction <= 1.0:
    raise ValueError(f"superpixel_patches: min_fraction must be in (0, 1], got {min_fraction}")
  order = [int(c) for c in priority] if priority is not None else list(range(1, k + 1))
  if sorted(order) != list(range(1, k + 1)):
    raise ValueError(f"superpixel_patches: priority {order} must list each class 1..{k} once")
  keep_table = [float(p) for p in keep_probability]
  if keep_table and len(keep_table) != k + 1:
    raise ValueError(f"superpixel_patches: keep_probability needs {k + 1} values (background first), "
                     f"got {len(keep_table)}")
  rotated = sorted({int(c) for c in rotate_classes})
  if any(not 0 <= c <= k for c in rotated):
    raise ValueError(f"superpixel_patches: rotate_classes {rotated} must be classes in 0..{k}")
  copies_table = [4 if c in rotated else 1 for c in range(k + 1)]
  repeat_keys = tuple(repeat_keys)

  def fn(example, seed):
    image = tf.image.convert_image_dtype(example[image_key], tf.float32)
    labels = tf.cast(example[superpixels_key], tf.int32)
    if labels.shape.rank == 3:
      labels = labels[..., 0]
    masks = tf.gather(tf.cast(example[masks_key], tf.float32), channels, axis=-1) > 0.5
    h, w = tf.shape(labels)[0], tf.shape(labels)[1]
    checks = [tf.debugging.assert_equal(tf.shape(image)[:2], tf.shape(labels), message=(
                  f"superpixel_patches: {superpixels_key!r} and {image_key!r} differ in size")),
              tf.debugging.assert_equal(tf.shape(masks)[:2], tf.shape(labels), message=(
                  f"superpixel_patches: {masks_key!r} and {superpixels_key!r} differ in size")),
              tf.debugging.assert_non_negative(labels, message="superpixel_patches: negative label")]
    with tf.control_dependencies(checks):
      flat = tf.reshape(labels, [-1])
    n = tf.reduce_max(flat) + 1
    area = tf.math.unsorted_segment_sum(tf.ones_like(flat, tf.float32), flat, n)  # (n,)
    in_mask = tf.math.unsorted_segment_sum(tf.reshape(tf.cast(masks, tf.float32), [-1, k]), flat, n)
    rows = tf.repeat(tf.range(h), w)
    cols = tf.tile(tf.range(w), [h])
    box = tf.stack([tf.math.unsorted_segment_min(rows, flat, n), tf.math.unsorted_segment_min(cols, flat, n),
                    tf.math.unsorted_segment_max(rows, flat, n), tf.math.unsorted_segment_max(cols, flat, n)], 1)
    # Class by the min-fraction rule, ties to the first of `priority`.
    hit = tf.gather(in_mask >= min_fraction * area[:, None], [c - 1 for c in order], axis=1)  # (n, K)
    first = tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32)
    label = tf.where(tf.reduce_any(hit, axis=1), tf.gather(tf.constant(order, tf.int32), first), 0)
    count = tf.cast(area > 0, tf.int32)  # label values no pixel has give no patch
    if keep_table:
      draw = tf.random.stateless_uniform([n], seed)
      count *= tf.cast(draw < tf.gather(tf.constant(keep_table, tf.float32), label), tf.int32)
    count *= tf.gather(tf.constant(copies_table, tf.int32), label)
    index = tf.repeat(tf.range(n), count)  # the superpixel of each output patch
    rotation = tf.range(tf.shape(index)[0]) - tf.gather(tf.cumsum(count, exclusive=True), index)
    # Box corners on pixel centres: crop_and_resize maps a normalised y to y * (H - 1).
    scale = tf.cast(tf.stack([h, w, h, w]) - 1, tf.float32)
    boxes = tf.cast(tf.gather(box, index), tf.float32) / tf.maximum(scale, 1.0)
    where = tf.zeros_like(index)
    patch = tf.image.crop_and_resize(normalize_image(image)[None], boxes, where, [size, size], "bilinear")
    owner = tf.image.crop_and_resize(tf.cast(labels, tf.float32)[None, :, :, None], boxes, where, [size, size],
                                     "nearest")
    inside = tf.cast(tf.equal(tf.cast(tf.round(owner), tf.int32), index[:, None, None, None]), tf.float32)
    patch = patch * inside
    if rotated:
      turns = tf.stack([tf.image.rot90(patch, t) for t in range(4)])  # (4, M, size, size, 3)
      patch = tf.gather_nd(turns, tf.stack([rotation, tf.range(tf.shape(index)[0])], 1))
    m = tf.shape(index)[0]
    out = {key: tf.broadcast_to(example[key][None], tf.concat([[m], tf.shape(example[key])], 0))
           for key in repeat_keys}
    out.update({image_key: tf.ensure_shape(patch, [None, size, size, 3]), label_key: tf.gather(label, index),
                index_key: index, rotation_key: rotation})
    return out

  return expand(fn, needs=(image_key, superpixels_key, masks_key, *repeat_keys))
