"""Box geometry for the Mask R-CNN: areas, IoU, the Faster R-CNN box-delta parameterisation,
clipping, FPN anchors and the tight boxes of masks.

Convention: a box is a (..., 4) float array [y1, x1, y2, x2] in PIXEL coordinates of the image
(or feature map) it refers to, continuous, where pixel (i, j) covers [i, i+1) x [j, j+1). So the
box of a mask whose rows are r0..r1 and columns c0..c1 is [r0, c0, r1 + 1, c1 + 1], and its area
is the pixel count of the full rectangle. Note torchvision and Detectron2 order boxes
[x1, y1, x2, y2].

Every function but `generate_anchors` (NumPy, run once at model construction) is jittable with
static shapes and broadcasts over leading axes, so it works under jax.vmap for a batch axis.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Sizes below this (pixels) are treated as this in logs and divisions: a zero-size box then
# encodes to a large but finite log-size target instead of -inf.
_EPS = 1e-6


def box_area(boxes: jax.Array) -> jax.Array:
  """(..., 4) -> (...) areas, with negative heights or widths counted as 0."""
  h = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  w = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return h * w


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """Pairwise IoU of (..., N, 4) and (..., M, 4) boxes -> (..., N, M).

  Leading axes broadcast. A pair whose union is 0 (two zero-area boxes) has IoU 0, not NaN.
  """
  a, b = a[..., :, None, :], b[..., None, :, :]
  h = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0)
  w = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0.0)
  inter = h * w
  union = box_area(a) + box_area(b) - inter
  positive = union > 0
  # The double where keeps the untaken branch's 0/0 out of the gradient too.
  return jnp.where(positive, inter / jnp.where(positive, union, 1.0), 0.0)


def _centre_size(boxes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  h = boxes[..., 2] - boxes[..., 0]
  w = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * h, boxes[..., 1] + 0.5 * w, h, w


def encode_boxes(boxes: jax.Array, anchors: jax.Array,
                 weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> jax.Array:
  """Regression targets (..., 4) = (dy, dx, dh, dw) of `boxes` relative to `anchors`.

  The Faster R-CNN / Detectron2 parameterisation (Detectron2's Box2BoxTransform with y and x
  swapped into this module's order), with (wy, wx, wh, ww) = `weights`:
    dy = wy (cy - cy_a) / h_a,  dx = wx (cx - cx_a) / w_a,
    dh = wh log(h / h_a),       dw = ww log(w / w_a).
  Sizes are floored at a small epsilon, so zero-size boxes or anchors give finite deltas.
  `boxes` and `anchors` broadcast against each other.
  """
  wy, wx, wh, ww = weights
  cy, cx, h, w = _centre_size(boxes)
  cya, cxa, ha, wa = _centre_size(anchors)
  ha, wa = jnp.maximum(ha, _EPS), jnp.maximum(wa, _EPS)
  return jnp.stack([wy * (cy - cya) / ha, wx * (cx - cxa) / wa,
                    wh * jnp.log(jnp.maximum(h, _EPS) / ha), ww * jnp.log(jnp.maximum(w, _EPS) / wa)], axis=-1)


def decode_boxes(deltas: jax.Array, anchors: jax.Array, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 clip_log: float = math.log(1000.0 / 16)) -> jax.Array:
  """Boxes (..., 4) from `encode_boxes` deltas (..., 4) and their anchors: the inverse transform.

  As in Detectron2, dh and dw (after dividing by their weights) are clipped from above at
  `clip_log` before exp, so an untrained head cannot overflow a box to inf; they are not clipped
  from below (a very negative delta just gives a tiny box).
  """
  wy, wx, wh, ww = weights
  cya, cxa, ha, wa = _centre_size(anchors)
  cy = deltas[..., 0] / wy * ha + cya
  cx = deltas[..., 1] / wx * wa + cxa
  h = jnp.exp(jnp.minimum(deltas[..., 2] / wh, clip_log)) * ha
  w = jnp.exp(jnp.minimum(deltas[..., 3] / ww, clip_log)) * wa
  return jnp.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes: jax.Array, height: float | jax.Array, width: float | jax.Array) -> jax.Array:
  """Boxes (..., 4) with y clipped to [0, height] and x to [0, width] (the whole image, whose
  last pixel row ends at y = height). `height` and `width` may be traced scalars."""
  y = jnp.clip(boxes[..., 0::2], 0.0, height)
  x = jnp.clip(boxes[..., 1::2], 0.0, width)
  return jnp.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], axis=-1)


def generate_anchors(image_size: int | tuple[int, int], strides: Sequence[int], sizes: Sequence[float],
                     aspect_ratios: Sequence[float]) -> list[np.ndarray]:
  """FPN anchors: one (H_l * W_l * A, 4) float32 NumPy array per level l, A = len(aspect_ratios).

  Level l has stride `strides[l]` and one anchor size `sizes[l]` (as in FPN); its grid is
  H_l x W_l = ceil(H / stride) x ceil(W / stride) for image_size (H, W) (an int is square).
  Order: row-major over the (y, x) cells, aspect ratios innermost, so reshaping a level to
  (H_l, W_l, A, 4) gives the cell grid. The anchors of cell (i, j) are centred at the CENTRE of
  its stride x stride block, ((i + 0.5) * stride, (j + 0.5) * stride), in this module's pixel
  convention (torchvision's AnchorGenerator and Detectron2 use offset 0, i.e. i * stride).
  Aspect ratio r = h / w at area size**2: h = size * sqrt(r), w = size / sqrt(r).
  """
  if len(strides) != len(sizes):
    raise ValueError(f"one anchor size per level: got {len(strides)} strides and {len(sizes)} sizes")
  height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
  ratios = np.asarray(aspect_ratios, np.float64)
  out = []
  for stride, size in zip(strides, sizes):
    cy = (np.arange(math.ceil(height / stride)) + 0.5) * stride
    cx = (np.arange(math.ceil(width / stride)) + 0.5) * stride
    half_h = 0.5 * size * np.sqrt(ratios)  # (A,)
    half_w = 0.5 * size / np.sqrt(ratios)
    cy, cx = cy[:, None, None], cx[None, :, None]
    level = np.stack(np.broadcast_arrays(cy - half_h, cx - half_w, cy + half_h, cx + half_w), axis=-1)
    out.append(level.reshape(-1, 4).astype(np.float32))
  return out


def masks_to_boxes(masks: jax.Array) -> jax.Array:
  """(..., H, W) masks (nonzero = inside) -> (..., 4) float32 tight boxes [r0, c0, r1 + 1, c1 + 1],
  where r0..r1 and c0..c1 are the first and last rows and columns with a mask pixel. An empty mask
  gives all zeros. Jittable: argmax over the row and column occupancy, no data-dependent shapes.
  """
  inside = masks != 0
  rows, cols = inside.any(axis=-1), inside.any(axis=-2)  # (..., H), (..., W)
  h, w = rows.shape[-1], cols.shape[-1]
  # argmax returns the first True; on the reversed axis, the last one.
  r0, c0 = jnp.argmax(rows, axis=-1), jnp.argmax(cols, axis=-1)
  r1, c1 = h - jnp.argmax(rows[..., ::-1], axis=-1), w - jnp.argmax(cols[..., ::-1], axis=-1)
  box = jnp.stack([r0, c0, r1, c1], axis=-1).astype(jnp.float32)
  return jnp.where(rows.any(axis=-1)[..., None], box, 0.0)
