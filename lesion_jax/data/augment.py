"""Data augmentation as stateless TensorFlow ops (deterministic given a seed), usable eagerly or
inside tf.data.

Images are float32 in [0, 1], (H, W, C); masks float32 {0, 1}, (H, W, C) (one lesion mask, a hair
mask, a stack of dermoscopic-feature masks, Mask R-CNN instance masks as channels...); boxes are
float (K, 4) [ymin, xmin, ymax, xmax], normalised so that 0 and 1 are the image's outer edges
(ymin = first row / H, ymax = (last row + 1) / H). Seeds are int shape-[2] tensors as for
`tf.random.stateless_*`.

`augment_features` moves every spatial feature of an example together so they stay aligned: the
image and all masks of the same (H, W) are concatenated on the channel axis (image first, then
`spatial_keys` in order), transformed once and split again; masks are re-binarised (>= 0.5) after
every geometric step, float images are not. Boxes follow the same random parameters analytically.
`augment(image, mask, seed, config)` is the one-image-one-mask form and gives exactly the numbers
it always has.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from lesion_jax.config import field
from lesion_jax import data as data_lib

data_lib.hide_accelerators_from_tensorflow()  # TensorFlow is for input only

Features = Mapping[str, tf.Tensor]
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  flip: bool = field(True, "Random horizontal and vertical flips.")
  rotate: bool = field(True, "Random rotation about the lesion centroid (image centre without a mask).")
  max_rotation_degrees: float = field(180.0, "Largest rotation, degrees.")
  crop: bool = field(True, "Random square crop of side in [min_crop_scale, 1]·size, resized back.")
  min_crop_scale: float = field(0.8, "Smallest random crop, fraction of the side.")
  color: float = field(0.0, "Brightness/contrast/saturation jitter strength (0 = off); helps real "
                       "photographs taken under varying light.")

  @classmethod
  def off(cls) -> "AugmentConfig":
    return cls(flip=False, rotate=False, crop=False, color=0.0)


def _split(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Which features the geometric transforms move. `groups`: keys in concatenation order, one
  group per static (H, W) (the image's group first); `binary`: keys re-binarised after each step."""
  image_key: str
  groups: tuple[tuple[str, ...], ...]
  binary: frozenset[str]
  box_keys: tuple[str, ...]


def _hw(t: tf.Tensor) -> tuple[int | None, int | None]:
  return tuple(t.shape[:2]) if t.shape.rank is not None else (None, None)


def _layout(features: Features, image_key: str, spatial_keys: Sequence[str], float_keys: Sequence[str],
            box_keys: Sequence[str]) -> _Layout:
  spatial_keys, float_keys = tuple(spatial_keys), tuple(float_keys)
  if not set(float_keys) <= set(spatial_keys):
    raise ValueError(f"float_keys {float_keys} must be among spatial_keys {spatial_keys}")
  if image_key in spatial_keys or len(set(spatial_keys)) != len(spatial_keys):
    raise ValueError(f"spatial_keys {spatial_keys} repeat a key or the image key {image_key!r}")
  ref = _hw(features[image_key])
  groups: dict[tuple, list[str]] = {}
  for key in (image_key, *spatial_keys):
    hw = _hw(features[key])
    # Unknown sizes go with the image (concatenation then checks at run time that they match).
    groups.setdefault(hw if None not in hw and None not in ref else ref, []).append(key)
  return _Layout(image_key, tuple(tuple(g) for g in groups.values()),
                 frozenset(spatial_keys) - frozenset(float_keys), tuple(box_keys))


def _transform(features: Features, layout: _Layout,
               fn: Callable[[tf.Tensor, tuple[str, ...]], tf.Tensor]) -> dict[str, tf.Tensor]:
  """Applies `fn` once per group to its channel-concatenation, then splits and re-binarises."""
  out = dict(features)
  for keys in layout.groups:
    tensors = [features[k] for k in keys]
    dtype = tensors[0].dtype if tensors[0].dtype.is_floating else tf.float32
    if len(keys) == 1:
      x = tf.cast(tensors[0], dtype)
    else:
      if any(t.shape.rank != 3 or t.shape[-1] is None for t in tensors):
        raise ValueError(f"spatial features {keys} need static (H, W, C) shapes to be moved together; "
                         f"got {[t.shape for t in tensors]}")
      x = tf.concat([tf.cast(t, dtype) for t in tensors], axis=-1)
    y = fn(x, keys)
    start = 0
    for key, t in zip(keys, tensors):
      part = y if len(keys) == 1 else y[..., start:start + t.shape[-1]]
      start += 0 if len(keys) == 1 else t.shape[-1]
      out[key] = tf.cast(part >= 0.5, part.dtype) if key in layout.binary else part
  return out


def _did_flip(flip: Callable, seed: tf.Tensor, axis: int) -> tf.Tensor:
  """Whether `flip(image, seed)` flips: the decision depends on the seed only, so a 2-pixel probe
  tells (the boxes need it; the op itself does not expose it)."""
  probe = tf.reshape(tf.constant([0.0, 1.0]), [2, 1, 1] if axis == 0 else [1, 2, 1])
  return tf.reshape(flip(probe, seed), [-1])[0] > 0.5


def _flip_step(features: Features, layout: _Layout, seed: tf.Tensor) -> dict[str, tf.Tensor]:
  s1, s2 = _split(seed, 2)

  def fn(x, _):
    x = tf.image.stateless_random_flip_left_right(x, s1)
    return tf.image.stateless_random_flip_up_down(x, s2)

  out = _transform(features, layout, fn)
  if layout.box_keys:
    lr = _did_flip(tf.image.stateless_random_flip_left_right, s1, 1)
    ud = _did_flip(tf.image.stateless_random_flip_up_down, s2, 0)
    for key in layout.box_keys:
      ymin, xmin, ymax, xmax = tf.unstack(features[key], axis=-1)
      xmin, xmax = tf.where(lr, 1 - xmax, xmin), tf.where(lr, 1 - xmin, xmax)
      ymin, ymax = tf.where(ud, 1 - ymax, ymin), tf.where(ud, 1 - ymin, ymax)
      out[key] = tf.stack([ymin, xmin, ymax, xmax], axis=-1)
  return out


def mask_centroid(mask: tf.Tensor | None, height, width) -> tuple[tf.Tensor, tf.Tensor]:
  """(row, col) centroid of the mask in pixel coordinates; the image centre if there is no lesion."""
  cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
  cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
  if mask is None:
    return cy, cx
  m = tf.cast(mask[..., 0], tf.float32)
  total = tf.reduce_sum(m)
  rows = tf.range(tf.shape(m)[0], dtype=tf.float32)[:, None]
  cols = tf.range(tf.shape(m)[1], dtype=tf.float32)[None, :]
  safe = tf.maximum(total, 1.0)
  return (tf.where(total > 0, tf.reduce_sum(m * rows) / safe, cy),
          tf.where(total > 0, tf.reduce_sum(m * cols) / safe, cx))


def _rotate_tensor(x: tf.Tensor, angle_radians, center) -> tf.Tensor:
  cy, cx = (tf.cast(c, tf.float32) for c in center)
  cos, sin = tf.cos(angle_radians), tf.sin(angle_radians)
  # Maps each output pixel back to its input position: p_in = R(-angle)·(p_out - c) + c.
  transform = tf.stack([cos, sin, cx - cos * cx - sin * cy,
                        -sin, cos, cy + sin * cx - cos * cy, 0.0, 0.0])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=x[None], transforms=transform[None], output_shape=tf.shape(x)[:2],
      fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
  return tf.ensure_shape(out, x.shape)


def _rescale_center(center, from_shape, to_shape):
  """A pixel-coordinate point of an image of `from_shape` at the same place in one of `to_shape`."""
  return tuple((tf.cast(c, tf.float32) + 0.5) * tf.cast(to_shape[i], tf.float32) / tf.cast(from_shape[i], tf.float32)
               - 0.5 for i, c in enumerate(center))


def _rotate_boxes(boxes: tf.Tensor, angle, center, shape) -> tf.Tensor:
  """Bounding boxes of the rotated corners, clipped to the image."""
  dtype = boxes.dtype
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  cy, cx = (tf.cast(c, tf.float32) for c in center)
  ymin, xmin, ymax, xmax = tf.unstack(tf.cast(boxes, tf.float32), axis=-1)
  # Corners in pixel-index coordinates (pixel centres at integers), relative to the centre.
  dy = tf.stack([ymin, ymin, ymax, ymax], axis=-1) * h - 0.5 - cy
  dx = tf.stack([xmin, xmax, xmin, xmax], axis=-1) * w - 0.5 - cx
  cos, sin = tf.cos(angle), tf.sin(angle)
  ys = (cy + sin * dx + cos * dy + 0.5) / h  # forward map, the inverse of the one in _rotate_tensor
  xs = (cx + cos * dx - sin * dy + 0.5) / w
  out = tf.stack([tf.reduce_min(ys, -1), tf.reduce_min(xs, -1), tf.reduce_max(ys, -1), tf.reduce_max(xs, -1)], -1)
  return tf.cast(tf.clip_by_value(out, 0.0, 1.0), dtype)


def _rotate_step(features: Features, layout: _Layout, angle, center_key: str | None) -> dict[str, tf.Tensor]:
  ref = layout.image_key if center_key is None else center_key
  ref_shape = tf.shape(features[ref])
  center = mask_centroid(None if center_key is None else features[center_key], ref_shape[0], ref_shape[1])

  def fn(x, keys):
    c = center if ref in keys else _rescale_center(center, ref_shape, tf.shape(x))
    return _rotate_tensor(x, angle, c)

  out = _transform(features, layout, fn)
  if layout.box_keys:
    image_shape = tf.shape(features[layout.image_key])
    c = center if _same_group(layout, ref, layout.image_key) else _rescale_center(center, ref_shape, image_shape)
    for key in layout.box_keys:
      out[key] = _rotate_boxes(features[key], angle, c, image_shape)
  return out


def _same_group(layout: _Layout, a: str, b: str) -> bool:
  return any(a in g and b in g for g in layout.groups)


def _crop_boxes(boxes: tf.Tensor, window: tf.Tensor, shape) -> tf.Tensor:
  """Boxes through the crop window (as tf.image.crop_and_resize samples it), clipped to the image."""
  dtype = boxes.dtype
  size = tf.cast(tf.tile(shape[:2], [2]), tf.float32)  # (H, W, H, W)
  start = tf.tile(window[:2], [2])
  scale = tf.tile(window[2:] - window[:2], [2])
  # Output pixel i samples input pixel window_start·(H-1) + i·scale (pixel-index coordinates).
  index = tf.cast(boxes, tf.float32) * size - 0.5
  out = ((index - start * (size - 1.0)) / scale + 0.5) / size
  return tf.cast(tf.clip_by_value(out, 0.0, 1.0), dtype)


def _crop_step(features: Features, layout: _Layout, seed: tf.Tensor, min_scale: float) -> dict[str, tf.Tensor]:
  s1, s2 = _split(seed, 2)
  scale = tf.random.stateless_uniform([], s1, min_scale, 1.0)
  offset = tf.random.stateless_uniform([2], s2, 0.0, 1.0) * (1.0 - scale)
  box = tf.stack([offset[0], offset[1], offset[0] + scale, offset[1] + scale])

  def fn(x, _):
    out = tf.image.crop_and_resize(x[None], box[None], [0], tf.shape(x)[:2], method="bilinear")[0]
    return tf.ensure_shape(out, x.shape)

  out = _transform(features, layout, fn)
  for key in layout.box_keys:
    out[key] = _crop_boxes(features[key], box, tf.shape(features[layout.image_key]))
  return out


def random_color(image, seed, strength: float):
  """Brightness, contrast and saturation jitter of relative size `strength`, clipped to [0, 1]."""
  s1, s2, s3 = _split(seed, 3)
  image = tf.image.stateless_random_brightness(image, 0.2 * strength, s1)
  image = tf.image.stateless_random_contrast(image, 1 - 0.3 * strength, 1 + 0.3 * strength, s2)
  image = tf.image.stateless_random_saturation(image, 1 - 0.3 * strength, 1 + 0.3 * strength, s3)
  return tf.clip_by_value(image, 0.0, 1.0)


def augment_features(features: Features, seed, config: AugmentConfig, image_key: str = "image",
                     spatial_keys: Sequence[str] = ("mask",), box_keys: Sequence[str] = (),
                     float_keys: Sequence[str] = (), center_key: str | None = AUTO) -> dict[str, tf.Tensor]:
  """Applies the enabled augmentations in a fixed order (flip, rotation, crop, colour) to an
  example, moving `image_key`, every one of `spatial_keys` and the boxes of `box_keys` together.
  Other features pass through unchanged.

  spatial_keys: masks and other images transformed with the image, concatenated in this order.
  float_keys: those of `spatial_keys` that are images, not masks (e.g. the clean target of an
    inpainter): not re-binarised, and colour-jittered like the image (same seed; contrast is
    centred on each image's own mean).
  center_key: the mask whose centroid the rotation turns about; "auto" is the first mask of
    `spatial_keys` (the image centre when there is none), None the image centre.
  box_keys: (K, 4) boxes; after a rotation each becomes the bounding box of its rotated corners,
    after the crop it is mapped through the window; both clip to [0, 1], so a box that leaves the
    image is kept with zero width or height (filter on area downstream if that matters).
  """
  features = dict(features)
  layout = _layout(features, image_key, spatial_keys, float_keys, box_keys)
  if center_key == AUTO:
    center_key = next((k for k in spatial_keys if k not in float_keys), None)
  s_flip, s_rot, s_crop, s_color = _split(tf.cast(seed, tf.int64), 4)
  if config.flip:
    features = _flip_step(features, layout, s_flip)
  if config.rotate:
    angle = tf.random.stateless_uniform([], s_rot, -config.max_rotation_degrees,
                                        config.max_rotation_degrees) * (math.pi / 180.0)
    features = _rotate_step(features, layout, angle, center_key)
  if config.crop:
    features = _crop_step(features, layout, s_crop, config.min_crop_scale)
  if config.color > 0:
    for key in (image_key, *float_keys):
      features[key] = random_color(features[key], s_color, config.color)
  return features


# The one-image-one-mask forms (mask may be None), kept for callers and tests.

def _pair(image, mask) -> tuple[dict[str, tf.Tensor], _Layout]:
  features = {"image": tf.convert_to_tensor(image)}
  if mask is not None:
    features["mask"] = tf.convert_to_tensor(mask)
  return features, _layout(features, "image", ("mask",) if mask is not None else (), (), ())


def _unpair(features: Features, mask) -> tuple[tf.Tensor, tf.Tensor | None]:
  return features["image"], (None if mask is None else features["mask"])


def random_flip(image, mask, seed):
  """Independent horizontal and vertical flips, each with probability 1/2."""
  features, layout = _pair(image, mask)
  return _unpair(_flip_step(features, layout, seed), mask)


def rotate(image, mask, angle_radians, center: tuple[tf.Tensor, tf.Tensor]):
  """Rotates image and mask counter-clockwise by `angle` about `center` (row, col); the
  uncovered corners become black, like a dermoscope's vignette."""
  features, layout = _pair(image, mask)
  return _unpair(_transform(features, layout, lambda x, _: _rotate_tensor(x, angle_radians, center)), mask)


def random_rotation_about_centroid(image, mask, seed, max_degrees: float = 180.0):
  angle = tf.random.stateless_uniform([], seed, -max_degrees, max_degrees) * (math.pi / 180.0)
  features, layout = _pair(image, mask)
  return _unpair(_rotate_step(features, layout, angle, None if mask is None else "mask"), mask)


def random_crop_resize(image, mask, seed, min_scale: float = 0.8):
  """A random square window of side in [min_scale, 1] of the image, resized back to full size."""
  features, layout = _pair(image, mask)
  return _unpair(_crop_step(features, layout, seed, min_scale), mask)


def augment(image, mask, seed, config: AugmentConfig):
  """Applies the enabled augmentations in a fixed order; returns (image, mask)."""
  features, _ = _pair(image, mask)
  out = augment_features(features, seed, config, spatial_keys=("mask",) if mask is not None else ())
  return _unpair(out, mask)
