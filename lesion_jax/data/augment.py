"""Data augmentation as stateless TensorFlow ops (deterministic given a seed), usable eagerly or
inside tf.data.

Images are float32 in [0, 1], (H, W, 3); masks float32 {0, 1}, (H, W, 1) or None (classification).
Geometric transforms act on image and mask together so they stay aligned; masks are re-binarised.
Seeds are int shape-[2] tensors as for `tf.random.stateless_*`.
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  flip: bool = True
  rotate: bool = True  # about the lesion centroid (image centre without a mask)
  max_rotation_degrees: float = 180.0
  crop: bool = True  # random square crop of side in [min_crop_scale, 1]·size, resized back
  min_crop_scale: float = 0.8
  color: float = 0.0  # brightness/contrast/saturation jitter strength; 0 disables

  @classmethod
  def off(cls) -> "AugmentConfig":
    return cls(flip=False, rotate=False, crop=False, color=0.0)


def _split(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _join(image: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
  return image if mask is None else tf.concat([image, tf.cast(mask, image.dtype)], axis=-1)


def _unjoin(stacked: tf.Tensor, has_mask: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
  if not has_mask:
    return stacked, None
  return stacked[..., :3], tf.cast(stacked[..., 3:] >= 0.5, stacked.dtype)


def random_flip(image, mask, seed):
  """Independent horizontal and vertical flips, each with probability 1/2."""
  s1, s2 = _split(seed, 2)
  x = _join(image, mask)
  x = tf.image.stateless_random_flip_left_right(x, s1)
  x = tf.image.stateless_random_flip_up_down(x, s2)
  return _unjoin(x, mask is not None)


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


def rotate(image, mask, angle_radians, center: tuple[tf.Tensor, tf.Tensor]):
  """Rotates image and mask counter-clockwise by `angle` about `center` (row, col); the
  uncovered corners become black, like a dermoscope's vignette."""
  x = _join(image, mask)
  cy, cx = (tf.cast(c, tf.float32) for c in center)
  cos, sin = tf.cos(angle_radians), tf.sin(angle_radians)
  # Maps each output pixel back to its input position: p_in = R(-angle)·(p_out - c) + c.
  transform = tf.stack([cos, sin, cx - cos * cx - sin * cy,
                        -sin, cos, cy + sin * cx - cos * cy, 0.0, 0.0])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=x[None], transforms=transform[None], output_shape=tf.shape(x)[:2],
      fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
  out = tf.ensure_shape(out, x.shape)
  return _unjoin(out, mask is not None)


def random_rotation_about_centroid(image, mask, seed, max_degrees: float = 180.0):
  angle = tf.random.stateless_uniform([], seed, -max_degrees, max_degrees) * (math.pi / 180.0)
  shape = tf.shape(image)
  return rotate(image, mask, angle, mask_centroid(mask, shape[0], shape[1]))


def random_crop_resize(image, mask, seed, min_scale: float = 0.8):
  """A random square window of side in [min_scale, 1] of the image, resized back to full size."""
  s1, s2 = _split(seed, 2)
  scale = tf.random.stateless_uniform([], s1, min_scale, 1.0)
  offset = tf.random.stateless_uniform([2], s2, 0.0, 1.0) * (1.0 - scale)
  box = tf.stack([offset[0], offset[1], offset[0] + scale, offset[1] + scale])
  x = _join(image, mask)
  out = tf.image.crop_and_resize(x[None], box[None], [0], tf.shape(x)[:2], method="bilinear")[0]
  out = tf.ensure_shape(out, x.shape)
  return _unjoin(out, mask is not None)


def random_color(image, seed, strength: float):
  """Brightness, contrast and saturation jitter of relative size `strength`, clipped to [0, 1]."""
  s1, s2, s3 = _split(seed, 3)
  image = tf.image.stateless_random_brightness(image, 0.2 * strength, s1)
  image = tf.image.stateless_random_contrast(image, 1 - 0.3 * strength, 1 + 0.3 * strength, s2)
  image = tf.image.stateless_random_saturation(image, 1 - 0.3 * strength, 1 + 0.3 * strength, s3)
  return tf.clip_by_value(image, 0.0, 1.0)


def augment(image, mask, seed, config: AugmentConfig):
  """Applies the enabled augmentations in a fixed order; returns (image, mask)."""
  s_flip, s_rot, s_crop, s_color = _split(tf.cast(seed, tf.int64), 4)
  if config.flip:
    image, mask = random_flip(image, mask, s_flip)
  if config.rotate:
    image, mask = random_rotation_about_centroid(image, mask, s_rot, config.max_rotation_degrees)
  if config.crop:
    image, mask = random_crop_resize(image, mask, s_crop, config.min_crop_scale)
  if config.color > 0:
    image = random_color(image, s_color, config.color)
  return image, mask
