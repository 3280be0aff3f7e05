"""Mask R-CNN's ground-truth op: `lesion_instances` turns a (possibly augmented) lesion mask into
padded instance masks, pixel boxes, validity flags and classes, the whole mask as one lesion
or each connected component as its own (an op of lesion_jax.data.ops's kind, `op(example, seed)`,
appended to the segmentation ops; not in the shared op registry, as only this pipeline uses it).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from lesion_jax.data.ops import Op


INSTANCE_MODES = ("whole", "components")


def _component_masks(mask: np.ndarray, max_instances: int, min_area: int) -> np.ndarray:
  """(H, W, K) uint8: the mask's 8-connected components of at least `min_area` pixels, largest
  first, the first K of them (zero-padded)."""
  import cv2  # pylint: disable=g-import-not-at-top  (only this op needs OpenCV)
  binary = (mask[..., 0] >= 0.5).astype(np.uint8)
  _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
  areas = stats[1:, cv2.CC_STAT_AREA]
  order = [i + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area][:max_instances]
  out = np.zeros(binary.shape + (max_instances,), np.uint8)
  for k, c in enumerate(order):
    out[..., k] = labels == c
  return out


def lesion_instances(mask_key: str = "mask", max_instances: int = 4, mode: str = "whole", min_area: int = 4,
                     class_key: str | None = None) -> Op:
  """Mask R-CNN ground truth from a lesion mask (float (H, W, 1) {0, 1}; after the augmentation,
  so the boxes are exact for the augmented image, not rotated boxes' bounding boxes):
  'gt_masks' (H, W, K) float32, 'gt_boxes' (K, 4) float32 pixel [y1, x1, y2, x2]
  (lesion_jax.detection.boxes), 'gt_valid' (K,) bool and 'gt_classes' (K,) int32 (1, or 1 + the
  example's `class_key` label for diagnosis-level boxes; 0 for padding), padded to K = max_instances.

  mode 'whole': the mask is one instance when it has at least `min_area` pixels (ISIC masks
  annotate one lesion per image, its parts included); 'components': each 8-connected component
  of at least `min_area` pixels is an instance, largest first.
  """
  if mode not in INSTANCE_MODES:
    raise ValueError(f"unknown instance mode {mode!r}; choose one of {INSTANCE_MODES}")
  if max_instances < 1:
    raise ValueError(f"max_instances={max_instances}: must be at least 1")

  def fn(ex, _):
    mask = tf.cast(ex[mask_key] >= 0.5, tf.float32)
    h, w = tf.shape(mask)[0], tf.shape(mask)[1]
    if mode == "whole":
      whole = mask[..., :1]
      present = tf.reduce_sum(whole) >= min_area
      masks = tf.concat([whole * tf.cast(present, tf.float32),
                         tf.zeros(tf.stack([h, w, max_instances - 1]), tf.float32)], axis=-1)
    else:
      masks = tf.numpy_function(lambda m: _component_masks(m, max_instances, min_area), [mask], tf.uint8,
                                stateful=False)
      masks = tf.cast(tf.ensure_shape(masks, mask.shape[:2].concatenate([max_instances])), tf.float32)
    hit_rows, hit_cols = tf.reduce_any(masks > 0, axis=1), tf.reduce_any(masks > 0, axis=0)  # (H, K), (W, K)

    def extent(hit, n):  # first and one-past-last index along an axis, per instance
      idx = tf.cast(tf.range(n), tf.float32)[:, None]
      first = tf.reduce_min(tf.where(hit, idx, tf.cast(n, tf.float32)), axis=0)
      last = tf.reduce_max(tf.where(hit, idx, -1.0), axis=0) + 1
      return first, last

    y1, y2 = extent(hit_rows, h)
    x1, x2 = extent(hit_cols, w)
    valid = tf.reduce_any(hit_rows, axis=0)
    boxes = tf.where(valid[:, None], tf.stack([y1, x1, y2, x2], axis=-1), 0.0)
    classes = tf.ones([max_instances], tf.int32)
    if class_key is not None:
      classes += tf.cast(ex[class_key], tf.int32)
    return {**ex, "gt_masks": masks, "gt_boxes": boxes, "gt_valid": valid,
            "gt_classes": tf.where(valid, classes, 0)}

  name = f"lesion_instances({mask_key!r}, {max_instances!r}, {mode!r}, min_area={min_area!r}, class_key={class_key!r})"
  return Op(fn, name, needs=(mask_key,) + ((class_key,) if class_key else ()))
