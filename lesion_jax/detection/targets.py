"""Static-shape target assignment for the Mask R-CNN: anchor labels for the RPN, sampled RoIs with
their classes and box targets for the box head, mask targets for the mask head.

Every function works on one image (callers vmap over the batch) and returns arrays whose shapes
depend only on the static sizes (anchors, proposals, padded ground truth, sample counts), so the
train step jits once whatever the number of real instances. Ground truth is padded to K instances
with `gt_valid` (K,) marking the real ones; boxes follow lesion_jax.detection.boxes (pixel
[y1, x1, y2, x2]).

Labels: 1 foreground, 0 background, -1 ignored (neither sampled nor in any loss).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lesion_jax.detection import boxes as boxes_lib
from lesion_jax.detection import roi_align as roi_align_lib

FOREGROUND, BACKGROUND, IGNORE = 1, 0, -1


def _masked_iou(candidates: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array) -> jax.Array:
  """(N, K) IoU with padding instances at -1, so they never match."""
  iou = boxes_lib.box_iou(candidates, gt_boxes)
  return jnp.where(gt_valid[None, :], iou, -1.0)


def assign_anchors(anchors: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array, fg_iou: float = 0.7,
                   bg_iou: float = 0.3, allow_low_quality: bool = True) -> tuple[jax.Array, jax.Array]:
  """RPN anchor labels as Faster R-CNN / Detectron2 assign them.

  An anchor is foreground when its best IoU with a real instance is >= fg_iou, background when it
  is < bg_iou, ignored in between. With `allow_low_quality`, each instance's best-matching anchors
  (every anchor tying its highest IoU, when that IoU is > 0) are foreground too, so a lesion no
  anchor covers at fg_iou still gets positives. An image without instances has only background.
  Returns (labels (A,) int32, matched (A,) int32: index of the best instance, 0 when none).
  """
  iou = _masked_iou(anchors, gt_boxes, gt_valid)          # (A, K)
  best = iou.max(axis=1)
  matched = jnp.argmax(iou, axis=1).astype(jnp.int32)
  labels = jnp.full(best.shape, IGNORE, jnp.int32)
  labels = jnp.where(best < bg_iou, BACKGROUND, labels)
  labels = jnp.where(best >= fg_iou, FOREGROUND, labels)
  if allow_low_quality:
    per_gt_best = iou.max(axis=0)                           # (K,)
    ties = (iou == per_gt_best[None, :]) & gt_valid[None, :] & (per_gt_best[None, :] > 0)
    low_quality = ties.any(axis=1)
    # A low-quality anchor is matched to the instance it is best for (Detectron2 keeps the argmax
    # match, which for a tie is the same instance in the one-lesion case).
    labels = jnp.where(low_quality, FOREGROUND, labels)
  return labels, matched


def _rank(priority: jax.Array) -> jax.Array:
  """Rank of each entry by descending priority (0 = highest)."""
  order = jnp.argsort(-priority)
  return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))


def sample_labels(labels: jax.Array, num_samples: int, fg_fraction: float, rng: jax.Array) -> jax.Array:
  """A random subset of `num_samples` labelled entries: up to round(num_samples * fg_fraction)
  foreground, background filling the rest (Detectron2's subsample_labels); unsampled entries become
  IGNORE. Fewer entries are kept when there are not enough of either kind."""
  fg_max = int(num_samples * fg_fraction)
  u = jax.random.uniform(rng, labels.shape)
  is_fg, is_bg = labels == FOREGROUND, labels == BACKGROUND
  fg_kept = is_fg & (_rank(jnp.where(is_fg, u, -1.0)) < fg_max)
  bg_needed = num_samples - jnp.minimum(is_fg.sum(), fg_max)
  bg_kept = is_bg & (_rank(jnp.where(is_bg, u, -1.0)) < bg_needed)
  return jnp.where(fg_kept, FOREGROUND, jnp.where(bg_kept, BACKGROUND, IGNORE))


@dataclasses.dataclass(frozen=True)
class RoISample:
  """`num_rois` sampled RoIs of one image, foreground first (then background, then padding).

  boxes (R, 4); classes (R,) int32, 0 background, c >= 1 the matched instance's class; matched
  (R,) int32 instance index; valid (R,) bool, False for padding slots (too few candidates)."""
  boxes: jax.Array
  classes: jax.Array
  matched: jax.Array
  valid: jax.Array


jax.tree_util.register_dataclass(RoISample, data_fields=["boxes", "classes", "matched", "valid"], meta_fields=[])


def sample_rois(proposals: jax.Array, proposal_valid: jax.Array, gt_boxes: jax.Array, gt_classes: jax.Array,
                gt_valid: jax.Array, num_rois: int, fg_fraction: float, fg_iou: float,
                rng: jax.Array) -> RoISample:
  """Faster R-CNN's RoI sampling: the real instances' boxes join the proposals as candidates;
  a candidate with IoU >= fg_iou to a real instance is foreground (that instance's class), any
  other valid candidate background; up to num_rois * fg_fraction foreground are drawn at random,
  background fills the rest. The output is sorted foreground first, so the mask head can take
  the first `mask_rois(num_rois, fg_fraction)` slots."""
  candidates = jnp.concatenate([proposals, gt_boxes], axis=0)
  valid = jnp.concatenate([proposal_valid, gt_valid], axis=0)
  iou = _masked_iou(candidates, gt_boxes, gt_valid)
  best = iou.max(axis=1)
  matched = jnp.argmax(iou, axis=1).astype(jnp.int32)
  labels = jnp.where(~valid, IGNORE, jnp.where(best >= fg_iou, FOREGROUND, BACKGROUND))
  sampled = sample_labels(labels, num_rois, fg_fraction, rng)
  # Foreground first, then background, both in random order; padding last.
  u = jax.random.uniform(jax.random.fold_in(rng, 1), sampled.shape)
  key = jnp.where(sampled == FOREGROUND, 2.0 + u, jnp.where(sampled == BACKGROUND, 1.0 + u, -1.0))
  short = num_rois - key.shape[0]
  if short > 0:  # fewer candidates than slots: padding slots (invalid) fill the rest
    key = jnp.concatenate([key, jnp.full((short,), -1.0)])
    candidates = jnp.concatenate([candidates, jnp.zeros((short, 4), candidates.dtype)])
    sampled = jnp.concatenate([sampled, jnp.full((short,), IGNORE, sampled.dtype)])
    matched = jnp.concatenate([matched, jnp.zeros((short,), matched.dtype)])
  order = jax.lax.top_k(key, num_rois)[1]
  is_fg = sampled[order] == FOREGROUND
  return RoISample(boxes=jax.lax.stop_gradient(candidates[order]),
                   classes=jnp.where(is_fg, gt_classes[matched[order]], 0).astype(jnp.int32),
                   matched=matched[order], valid=key[order] > 0)


def mask_rois(num_rois: int, fg_fraction: float, cap: int = 0) -> int:
  """How many of the sampled RoIs (the first ones) the mask head sees: the foreground maximum, or
  `cap` if that is smaller (0: no cap)."""
  most = max(1, int(num_rois * fg_fraction))
  return min(most, cap) if cap > 0 else most


def mask_targets(gt_masks: jax.Array, boxes: jax.Array, matched: jax.Array, size: int) -> jax.Array:
  """(R, size, size) {0, 1} targets: each box's matched instance mask (gt_masks (H, W, K) at
  the image's resolution) RoIAligned into the box and thresholded at 0.5, as Mask R-CNN crops its
  targets."""
  pooled = roi_align_lib.roi_align(gt_masks.astype(jnp.float32), boxes, (size, size), spatial_scale=1.0,
                                   sampling_ratio=2, aligned=True)                  # (R, s, s, K)
  picked = jnp.take_along_axis(pooled, matched[:, None, None, None], axis=-1)[..., 0]
  return (picked >= 0.5).astype(jnp.float32)
