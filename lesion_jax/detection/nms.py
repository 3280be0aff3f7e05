"""Greedy non-maximum suppression with static shapes.

Boxes follow lesion_jax.detection.boxes: (N, 4) float [y1, x1, y2, x2] in pixel coordinates,
pixel (i, j) covering [i, i+1) x [j, j+1). IoU is `boxes.box_iou`'s (0 where the union is 0, so a
zero-area box suppresses nothing and is suppressed by nothing). The output has a static length
(max_output) with a validity mask, so `nms` jits once per (N, max_output) and vmaps over a batch
axis (there is no batched_nms: vmap it, or offset boxes by class to keep classes apart).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from lesion_jax.detection import boxes as boxes_lib


def _iou_row(box: jax.Array, area: jax.Array, boxes: jax.Array, areas: jax.Array) -> jax.Array:
  """(N,) IoU of one box with every box, as box_iou computes it."""
  h = jnp.maximum(jnp.minimum(box[2], boxes[:, 2]) - jnp.maximum(box[0], boxes[:, 0]), 0.0)
  w = jnp.maximum(jnp.minimum(box[3], boxes[:, 3]) - jnp.maximum(box[1], boxes[:, 1]), 0.0)
  inter = h * w
  union = area + areas - inter
  positive = union > 0
  return jnp.where(positive, inter / jnp.where(positive, union, 1.0), 0.0)


def nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float | jax.Array, max_output: int,
        score_threshold: float | jax.Array = -jnp.inf) -> tuple[jax.Array, jax.Array]:
  """Plain greedy NMS, exactly: visit boxes by descending score, keep the best remaining one,
  suppress every remaining box whose IoU with it is > iou_threshold, repeat.

  Args:
    boxes: (N, 4) boxes.
    scores: (N,) scores. A box with score <= score_threshold, or a non-finite score (NaN, +-inf),
      is never selected (and so suppresses nothing).
    iou_threshold: suppress IoU strictly above this; may be traced.
    max_output: static number of output slots; selection stops after this many boxes.
    score_threshold: may be traced.

  Returns:
    (indices (max_output,) int32, valid (max_output,) bool): the kept boxes' indices into `boxes`,
    in selection (descending score) order, then padding slots with index 0 and valid False.
    Equal scores go to the lower index, as after a stable descending sort.
  """
  n = boxes.shape[0]
  boxes = boxes.astype(jnp.float32)
  scores = scores.astype(jnp.float32)
  areas = boxes_lib.box_area(boxes)
  live0 = jnp.isfinite(scores) & (scores > score_threshold)
  arange = jnp.arange(n)

  # Each round is an argmax over the live scores (argmax takes the first maximum: the lower index
  # wins ties) and one IoU row computed on the fly against the chosen box. Measured on this 2-core
  # CPU (N=1000 clustered boxes; ms per call, on-the-fly row vs a precomputed N x N IoU matrix):
  # max_output 100: 0.8 vs 2.3 (IoU 0.3), 0.5 vs 2.1 (IoU 0.7); max_output 300: 0.8 vs 3.0 (0.3,
  # 180 kept), 1.4 vs 2.9 (0.7, 300 kept). The while loop stops once nothing is live (2.4 -> 0.8
  # ms against a fixed 300-round fori_loop when 180 are kept).
  def cond(carry):
    k, live, _, _ = carry
    return (k < max_output) & live.any()

  def body(carry):
    k, live, indices, valid = carry
    i = jnp.argmax(jnp.where(live, scores, -jnp.inf)).astype(jnp.int32)
    # The chosen box is removed explicitly: its IoU with itself is 0 when its area is 0.
    live = live & ~(_iou_row(boxes[i], areas[i], boxes, areas) > iou_threshold) & (arange != i)
    return k + 1, live, indices.at[k].set(i), valid.at[k].set(True)

  init = (jnp.int32(0), live0, jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool))
  _, _, indices, valid = lax.while_loop(cond, body, init)
  return indices, valid
