"""Per-example image and mask ops: decoding, resizing, the geometries (stretch, letterbox,
centre crop) and their numpy twins, Shades of Gray colour constancy, applying an augmentation
config, [-1, 1] normalisation, and the op lists of the segmentation and classification tasks
(`image_ops`, `segmentation_ops`, `classification_ops`). Separate from `core` (which knows no
op) and from the pipeline-specific modules: these are the steps every task and predict-time
preprocessing share, one definition each.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from lesion_jax.data import augment as augment_lib
from lesion_jax.data.ops.core import Op, register
from lesion_jax.data.ops.features import copy, keep, label


# ---------------------------------------------------------------------------------------------
# Tensor helpers (the single definitions the pipelines and predict-time preprocessing share).

def normalize_image(image01):
  """[0, 1] → [-1, 1]; the single definition shared by training, evaluation and predict."""
  return image01 * 2.0 - 1.0


def resize_image_tensor(image_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, C) → float32 [0, 1] (size, size, C), area-preserving (antialiased) bilinear."""
  image = tf.image.convert_image_dtype(image_uint8, tf.float32)
  return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def resize_mask_tensor(mask_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, C) with values {0, 255} (or {0, 1}) → float32 {0, 1} (size, size, C)."""
  mask = tf.cast(mask_uint8 > 0, tf.float32)
  mask = tf.image.resize(mask, [size, size], method="bilinear", antialias=True)
  return tf.cast(mask >= 0.5, tf.float32)


def _decode(value: tf.Tensor, key: str, channels: int) -> tf.Tensor:
  if value.dtype != tf.string:
    raise TypeError(f"feature {key!r} is {value.dtype.name}, not encoded image bytes (PNG/JPEG)")
  return tf.io.decode_image(value, channels=channels, expand_animations=False)


# ---------------------------------------------------------------------------------------------
# The registered ops.

@register("decode_image")
def decode_image(key: str = "image", channels: int = 3, out: str | None = None) -> Op:
  """Encoded bytes → uint8 (H, W, channels), into `out` (default: in place)."""
  return Op(lambda ex, _: {**ex, (out or key): _decode(ex[key], key, channels)}, needs=(key,))


@register("decode_mask")
def decode_mask(key: str = "mask", out: str | None = None) -> Op:
  """Encoded single-channel PNG → uint8 (H, W, 1), into `out` (default: in place)."""
  return Op(lambda ex, _: {**ex, (out or key): _decode(ex[key], key, 1)}, needs=(key,))


@register("resize_image")
def resize_image(key: str, size: int) -> Op:
  """uint8 → float32 [0, 1] (size, size, C), antialiased bilinear."""
  return Op(lambda ex, _: {**ex, key: resize_image_tensor(ex[key], size)}, needs=(key,))


@register("resize_mask")
def resize_mask(key: str, size: int) -> Op:
  """uint8 mask (nonzero = inside) → float32 {0, 1} (size, size, C)."""
  return Op(lambda ex, _: {**ex, key: resize_mask_tensor(ex[key], size)}, needs=(key,))


@register("augment")
def augment(config: augment_lib.AugmentConfig, image_key: str = "image", spatial_keys: Sequence[str] = ("mask",),
            box_keys: Sequence[str] = (), float_keys: Sequence[str] = (),
            center_key: str | None = augment_lib.AUTO) -> Op:
  """Random flips, rotation, crop and colour (`config`), moving the image, every spatial feature
  and the boxes together; see augment.augment_features. Always takes a seed slot (even when
  `config` disables everything), so the seeds of other ops do not depend on it."""
  spatial_keys, box_keys, float_keys = tuple(spatial_keys), tuple(box_keys), tuple(float_keys)

  def fn(example, seed):
    return augment_lib.augment_features(example, seed, config, image_key, spatial_keys, box_keys,
                                        float_keys, center_key)

  return Op(fn, needs=(image_key, *spatial_keys, *box_keys), random=True)


@register("normalize")
def normalize(key: str = "image") -> Op:
  """[0, 1] → [-1, 1] (normalize_image)."""
  return Op(lambda ex, _: {**ex, key: normalize_image(ex[key])}, needs=(key,))



@register("center_crop")
def center_crop(keys: Sequence[str] = ("image",), aspect: float = 1.0) -> Op:
  """The central window of aspect `aspect` (width / height) of each feature of `keys` (which
  share one (H, W)), as large as fits: with a resize after it, the lesion keeps its shape
  instead of being stretched (the Lesion Indexing Network's pre-processing)."""
  keys = tuple(keys)

  def fn(example, _):
    shape = tf.shape(example[keys[0]])
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    ch = tf.cast(tf.round(tf.minimum(h, w / aspect)), tf.int32)
    cw = tf.cast(tf.round(tf.minimum(w, h * aspect)), tf.int32)
    y0, x0 = (shape[0] - ch) // 2, (shape[1] - cw) // 2
    return {**example, **{k: example[k][y0:y0 + ch, x0:x0 + cw] for k in keys}}

  return Op(fn, needs=keys)


@register("letterbox")
def letterbox(key: str, size: int, out: str | None = None, mask: bool = False) -> Op:
  """uint8 (H, W, C) → float32 [0, 1] (size, size, C): resized proportionally so the longer side
  is `size` (antialiased bilinear), centred on black; into `out` (default: in place). With
  `mask`, a mask (nonzero = inside) → float32 {0, 1}, resized as `resize_mask` does.
  `letterbox_window` gives the window the image occupies, to map predictions back."""

  def fn(example, _):
    value = example[key]
    image = tf.cast(value > 0, tf.float32) if mask else tf.image.convert_image_dtype(value, tf.float32)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    (top, left, nh, nw) = letterbox_window_tensor(h, w, size)
    image = tf.image.resize(image, [nh, nw], method="bilinear", antialias=True)
    if mask:
      image = tf.cast(image >= 0.5, tf.float32)
    image = tf.pad(image, [[top, size - nh - top], [left, size - nw - left], [0, 0]])
    return {**example, (out or key): tf.ensure_shape(image, [size, size, image.shape[-1]])}

  return Op(fn, needs=(key,))


@register("shades_of_gray")
def shades_of_gray(key: str = "image", p: float = 6.0) -> Op:
  """Colour constancy by Shades of Gray (Finlayson and Trezzi 2004; the ISIC winners' p = 6) on
  a float [0, 1] image: channel c's illuminant is its p-norm mean e_c = mean(I_c^p)^(1/p), and
  each channel is scaled by |e| / (sqrt(3) e_c), so the illuminant becomes grey of the same
  length; clipped to [0, 1]. p = 1 is Grey World, large p tends to max-RGB. The gains do not
  change when e is scaled, so black letterbox padding leaves them as they are."""
  if p < 1:
    raise ValueError(f"Shades of Gray needs p >= 1, got {p}")

  def fn(example, _):
    image = example[key]
    illuminant = tf.reduce_mean(tf.pow(image, p), axis=(0, 1)) ** (1.0 / p)
    gains = tf.norm(illuminant) / np.sqrt(3.0) / tf.maximum(illuminant, 1e-6)
    return {**example, key: tf.clip_by_value(image * gains, 0.0, 1.0)}

  return Op(fn, needs=(key,))


GEOMETRIES = ("stretch", "letterbox")
COLOR_CONSTANCY = ("none", "shades_of_gray")


def image_ops(size: int, geometry: str = "stretch", color_constancy: str = "none", p: float = 6.0,
              key: str = "image") -> list[Op]:
  """Decoded uint8 image → float32 [0, 1] (size, size, 3), the way every task (and predict) sizes
  and colour-corrects its input: `geometry` stretch (resize to a square) or letterbox (keep the
  aspect ratio, pad with black); `color_constancy` none or shades_of_gray (exponent `p`)."""
  if geometry not in GEOMETRIES:
    raise ValueError(f"geometry {geometry!r}: choose one of {GEOMETRIES}")
  if color_constancy not in COLOR_CONSTANCY:
    raise ValueError(f"color_constancy {color_constancy!r}: choose one of {COLOR_CONSTANCY}")
  out = [resize_image(key, size) if geometry == "stretch" else letterbox(key, size)]
  if color_constancy == "shades_of_gray":
    out.append(shades_of_gray(key, p))
  return out


def mask_resize_op(size: int, geometry: str = "stretch", key: str = "mask") -> Op:
  """The mask's twin of `image_ops`' geometry (so image and mask stay aligned)."""
  return resize_mask(key, size) if geometry == "stretch" else letterbox(key, size, mask=True)


def letterbox_window_tensor(h, w, size: int):
  longer = tf.cast(tf.maximum(h, w), tf.float32)
  nh = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float32) * size / longer), tf.int32))
  nw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float32) * size / longer), tf.int32))
  return (size - nh) // 2, (size - nw) // 2, nh, nw


def letterbox_window(h: int, w: int, size: int) -> tuple[int, int, int, int]:
  """(top, left, height, width) of an (h, w) image inside its `letterbox` of side `size`
  (numpy twin of the op's geometry: the same rounding)."""
  longer = max(h, w)
  nh = max(1, int(round(h * size / longer)))
  nw = max(1, int(round(w * size / longer)))
  return (size - nh) // 2, (size - nw) // 2, nh, nw



# ---------------------------------------------------------------------------------------------
# The tasks' op lists.

def segmentation_ops(image_size: int, augment_config: augment_lib.AugmentConfig | None, mask_key: str = "mask",
                     mask_is_encoded: bool = True, keep_encoded_mask: bool = False,
                     instances: Op | None = None, geometry: str = "stretch",
                     color_constancy: str = "none", p: float = 6.0) -> list[Op]:
  """'id', 'image' (float32 [-1, 1], (size, size, 3)) and 'mask' (float32 {0, 1}, (size, size, 1),
  read from `mask_key`), augmented unless `augment_config` is None (evaluation); sized and
  colour-corrected by `image_ops`. With `keep_encoded_mask`, also 'mask_encoded': the stored PNG
  at the image's own resolution, for scoring as the challenges do. `instances` (a
  pipelines/maskrcnn/ops.py lesion_instances op) adds the Mask R-CNN ground truth after the augmentation."""
  if keep_encoded_mask and not mask_is_encoded:
    raise ValueError("keep_encoded_mask needs an encoded mask feature")
  out = [copy(mask_key, "mask_encoded")] if keep_encoded_mask else []
  out += [decode_image("image"), *image_ops(image_size, geometry, color_constancy, p)]
  if mask_is_encoded:
    out.append(decode_mask(mask_key, out="mask"))
  elif mask_key != "mask":
    out.append(copy(mask_key, "mask"))
  out.append(mask_resize_op(image_size, geometry))
  if augment_config is not None:
    out.append(augment(augment_config, spatial_keys=("mask",)))
  instance_keys = ()
  if instances is not None:  # Mask R-CNN ground truth from the (augmented) mask
    out.append(instances)
    instance_keys = ("gt_boxes", "gt_classes", "gt_masks", "gt_valid")
  out += [normalize("image"), keep(("id", "image", "mask") + (("mask_encoded",) if keep_encoded_mask else ())
                                   + instance_keys)]
  return out


def classification_ops(image_size: int, augment_config: augment_lib.AugmentConfig | None,
                       label_key: str = "label", geometry: str = "stretch", color_constancy: str = "none",
                       p: float = 6.0) -> list[Op]:
  """'id', 'image' (float32 [-1, 1], (size, size, 3), by `image_ops`) and 'label' (int32, from
  `label_key`), augmented unless `augment_config` is None (evaluation)."""
  out = [decode_image("image"), *image_ops(image_size, geometry, color_constancy, p), label(label_key, "label")]
  if augment_config is not None:
    out.append(augment(augment_config, spatial_keys=()))
  return out + [normalize("image"), keep(("id", "image", "label"))]
