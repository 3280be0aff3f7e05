"""RoIAlign (He et al. 2017) with static shapes: numerically torchvision.ops.roi_align and
Detectron2's ROIAlign for a fixed sampling ratio; and the FPN level assignment of RoIs.

Boxes are (R, 4) float [y1, x1, y2, x2] in PIXEL coordinates of the image (the convention of
lesion_jax.detection.boxes: pixel (i, j) covers [i, i+1) x [j, j+1)); torchvision takes
[x1, y1, x2, y2]. `spatial_scale` (1 / stride) maps them onto the feature map, where feature
pixel (i, j) is the value at continuous feature coordinates (i, j): with aligned=True's -0.5 shift
below, at the centre of the image region it covers.

The semantics are those of torchvision's CPU kernel (roi_align_kernel.cpp), for sampling_ratio > 0:
  * the box is scaled by spatial_scale; with aligned=True 0.5 is subtracted from every coordinate
    (Detectron2's ROIAlignV2: box corners at pixel edges); with aligned=False the RoI height and
    width are raised to at least 1 (the original Mask R-CNN); with aligned=True they are not;
  * each of the oh x ow bins averages sampling_ratio x sampling_ratio bilinear samples at
    y = y1 + p * bin_h + (iy + 0.5) * bin_h / sampling_ratio (x likewise);
  * a sample with y < -1 or y > H (or x < -1 or x > W) contributes 0 (it still counts in the
    average); otherwise coordinates <= 0 clamp to 0 and coordinates >= H - 1 sample the last row
    (W - 1: the last column).
An adaptive sampling ratio (torchvision's sampling_ratio <= 0) has a data-dependent sample count
and is not supported.

Every function jits with static shapes and works under jax.vmap over a batch axis (of features and
boxes, or of boxes alone).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from lesion_jax.detection import boxes as boxes_lib


def _axis_weights(start: jax.Array, length: jax.Array, bins: int, sampling_ratio: int, size: int) -> jax.Array:
  """(R, bins, size): along one axis, each bin's bilinear interpolation weights over the `size`
  feature rows (or columns), averaged over its `sampling_ratio` samples."""
  bin_size = (length / bins)[:, None, None]  # (R, 1, 1)
  p = jnp.arange(bins, dtype=jnp.float32)[None, :, None]
  i = jnp.arange(sampling_ratio, dtype=jnp.float32)[None, None, :]
  # The same expression, in the same order, as torchvision's kernel (under jit XLA:CPU fuses
  # a + b * c into FMAs: samples then move by ~1e-6 px, outputs by ~1e-5).
  coord = start[:, None, None] + p * bin_size + (i + 0.5) * bin_size / sampling_ratio  # (R, bins, s)
  inside = (coord >= -1.0) & (coord <= size)
  coord = jnp.clip(coord, 0.0, size - 1.0)
  low = jnp.floor(coord)
  frac = coord - low  # 0 at the clamped last row, whose weight is then all on it
  grid = jnp.arange(size, dtype=jnp.float32)
  w = (jnp.where(grid == low[..., None], 1.0 - frac[..., None], 0.0)
       + jnp.where(grid == low[..., None] + 1.0, frac[..., None], 0.0))
  w = jnp.where(inside[..., None], w, 0.0)
  return w.mean(axis=2)


def _bin_weights(boxes: jax.Array, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
                 aligned: bool, height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """(Ay (R, oh, H), Ax (R, ow, W)) of `roi_align`."""
  if sampling_ratio < 1:
    raise ValueError(f"sampling_ratio={sampling_ratio}: a fixed ratio >= 1 is needed for static shapes")
  b = boxes.astype(jnp.float32) * spatial_scale - (0.5 if aligned else 0.0)
  h, w = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  if not aligned:
    h, w = jnp.maximum(h, 1.0), jnp.maximum(w, 1.0)
  return (_axis_weights(b[:, 0], h, output_size[0], sampling_ratio, height),
          _axis_weights(b[:, 1], w, output_size[1], sampling_ratio, width))


# Both contractions as they ran fastest on XLA:CPU (this shared 2-core machine, best of 5, ms,
# forward / VJP w.r.t. the features). The y contraction is one (R*oh, H) x (H, W*C) matmul, forward
# and backward. For the x contraction, the forward is a fused multiply-and-sum over w (and its
# autodiff VJP about 1.5x slower than a matmul's), the VJP a matmul batched over (r, p) on the
# operands as they lie; batching over r alone needs (r, w, p, c) and XLA's transposes made that
# 2-4x slower. So the op has a custom VJP. Features 32x32x64 / 16x16x64:
#   R=512  7x7: 20 / 31 and 8.0 / 18   (one batched matmul both ways: 25 / 42 and 11 / 16)
#   R=128 14x14: 11 / 19 and 3.9 / 11  (13 / 17 and 9.3 / 11)
# against the 4-corner gathers on the (H*W, C) map with their scatter-add gradient:
#   R=512  7x7: 93 / 97 and 119 / 146;  R=128 14x14: 145 / 91 and 127 / 136
# and (R=512, 7x7) the dense einsums in XLA's own order: 78 / 270 and 36 / 92.
@jax.custom_vjp
def _pool(features: jax.Array, ay: jax.Array, ax: jax.Array) -> jax.Array:
  """out[r, p, q, c] = sum_{h, w} ay[r, p, h] ax[r, q, w] features[h, w, c]; differentiable in
  `features` only (ay and ax get zero cotangents)."""
  height, width, channels = features.shape
  r, oh, _ = ay.shape
  rows = (ay.reshape(r * oh, height) @ features.reshape(height, width * channels))
  return (ax[:, None, :, :, None] * rows.reshape(r, oh, 1, width, channels)).sum(axis=3)


def _pool_fwd(features, ay, ax):
  return _pool(features, ay, ax), (ay, ax)


def _pool_bwd(residuals, cotangent):
  ay, ax = residuals
  r, oh, height = ay.shape
  _, ow, width = ax.shape
  channels = cotangent.shape[-1]
  ax_rp = jnp.broadcast_to(ax[:, None], (r, oh, ow, width)).reshape(r * oh, ow, width)
  rows = lax.dot_general(ax_rp, cotangent.reshape(r * oh, ow, channels), (((1,), (1,)), ((0,), (0,))))
  grad = ay.reshape(r * oh, height).T @ rows.reshape(r * oh, width * channels)
  return grad.reshape(height, width, channels), jnp.zeros_like(ay), jnp.zeros_like(ax)


_pool.defvjp(_pool_fwd, _pool_bwd)


def roi_align(features: jax.Array, boxes: jax.Array, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int = 2, aligned: bool = True) -> jax.Array:
  """RoIAlign of (R, 4) pixel boxes from one (H, W, C) feature map -> (R, oh, ow, C).

  Args:
    features: (H, W, C) feature map (any float dtype; the weights are cast to it).
    boxes: (R, 4) [y1, x1, y2, x2] in the image's pixel coordinates.
    output_size: static (oh, ow) bins.
    spatial_scale: feature-map pixels per image pixel (1 / stride), static.
    sampling_ratio: static samples per bin along each axis, >= 1.
    aligned: the -0.5 shift of Detectron2's ROIAlignV2 (see the module docstring).

  Bilinear sampling on a regular grid is separable, so the op is computed as
  out[r, p, q] = sum_h sum_w Ay[r, p, h] Ax[r, q, w] F[h, w] with Ay / Ax each bin's averaged
  interpolation weights along y / x: dense matmuls and a fused multiply-sum instead of gathers with
  a scatter-add gradient (timings above `_pool`). It is linear in `features` and reverse-mode
  differentiable with respect to them through a custom VJP (so jax.jvp / forward mode is not
  available); the boxes get zero gradient, as in torchvision (the Mask R-CNN heads treat RoIs as
  constants).
  """
  height, width = features.shape[:2]
  ay, ax = _bin_weights(lax.stop_gradient(boxes), output_size, spatial_scale, sampling_ratio, aligned, height,
                        width)
  return _pool(features, ay.astype(features.dtype), ax.astype(features.dtype))


def fpn_levels(boxes: jax.Array, min_level: int, max_level: int, canonical_size: float = 224.0,
               canonical_level: int = 4) -> jax.Array:
  """(..., 4) boxes -> (...) int32 FPN levels (Lin et al. 2017, eq. 1, as Detectron2 computes it):
  floor(canonical_level + log2(sqrt(area) / canonical_size + 1e-8)) clipped to
  [min_level, max_level]; the epsilon sends zero-area boxes to min_level instead of log2(0)."""
  size = jnp.sqrt(boxes_lib.box_area(boxes))
  level = jnp.floor(canonical_level + jnp.log2(size / canonical_size + 1e-8))
  return jnp.clip(level, min_level, max_level).astype(jnp.int32)


def multilevel_roi_align(features: Sequence[jax.Array], boxes: jax.Array, levels: jax.Array, min_level: int,
                         output_size: tuple[int, int], sampling_ratio: int = 2, aligned: bool = True) -> jax.Array:
  """(R, oh, ow, C): each RoI pooled by `roi_align` from its own FPN level.

  Args:
    features: per-level (H_l, W_l, C) maps; features[i] is level min_level + i, stride
      2 ** (min_level + i) (spatial_scale 2 ** -(min_level + i)).
    boxes: (R, 4) pixel boxes of the image.
    levels: (R,) int32 absolute levels (e.g. from `fpn_levels`); a level outside the given ones
      gives zeros.
    min_level, output_size, sampling_ratio, aligned: as for `roi_align` (all static).

  Static shapes rule out grouping RoIs by level, so every level pools every RoI and each RoI's
  own level is selected with jnp.where. That costs little more than pooling from the finest level
  alone: the dense contraction's cost grows with H_l * W_l, which shrinks 4x per level, so all
  levels together cost at most ~4/3 of the finest (plus a per-level term linear in W_l).
  """
  out = None
  for i, level_features in enumerate(features):
    pooled = roi_align(level_features, boxes, output_size, 2.0 ** -(min_level + i), sampling_ratio, aligned)
    mine = (levels == min_level + i)[:, None, None, None]
    out = jnp.where(mine, pooled, 0.0 if out is None else out)
  return out
