"""Host-side mask post-processing: thresholding, cleaning, resizing and lesion crops.

`MaskPostprocess` is how a lesion-mask run (segmentation, Mask R-CNN) turns a probability map at
an image's own resolution into its mask: the threshold, hole filling with the largest component
kept, and the catastrophic-mask fallback, in that order.

Masks are accepted as (H, W) or (H, W, 1) arrays of any dtype (non-zero = lesion) and returned
as bool (H, W). Connectivity: lesion pixels are 8-connected, so background is 4-connected (a
diagonal gap in a ring does not let a hole "leak" to the border).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import numpy as np
from scipy import ndimage

from lesion_jax import io


def as_mask(mask: Any) -> np.ndarray:
  """bool (H, W) from a truthy (H, W) or (H, W, 1) array."""
  m = np.asarray(mask)
  if m.ndim == 3 and m.shape[-1] == 1:
    m = m[..., 0]
  if m.ndim != 2:
    raise ValueError(f"mask must have shape (H, W) or (H, W, 1), got {m.shape}")
  return m.astype(bool)


def _as_map(prob: Any) -> np.ndarray:
  p = np.asarray(prob)
  if p.ndim == 3 and p.shape[-1] == 1:
    p = p[..., 0]
  if p.ndim != 2:
    raise ValueError(f"probability map must have shape (H, W) or (H, W, 1), got {p.shape}")
  return p


def fill_holes(mask: Any) -> np.ndarray:
  """Fills background regions that are not connected to the image border."""
  return ndimage.binary_fill_holes(as_mask(mask))


def largest_component(mask: Any) -> np.ndarray:
  """Keeps the largest 8-connected component (ties: first in raster order); empty stays empty."""
  m = as_mask(mask)
  if not m.any():
    return m
  n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
  if n <= 2:  # Background plus at most one component: nothing to drop.
    return m
  biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
  return labels == biggest


def clean_mask(mask: Any, fill: bool = True, keep_largest: bool = True) -> np.ndarray:
  """Optional hole filling followed by keeping the largest component."""
  m = as_mask(mask)
  if fill:
    m = fill_holes(m)
  if keep_largest:
    m = largest_component(m)
  return m


def otsu_threshold(prob: Any) -> float:
  """Otsu's threshold of a [0, 1] map from a 256-bin histogram; a value in [0, 1].

  Use as `prob > threshold`. When a range of cuts separates the classes equally well (e.g. a
  gap between two modes) the middle of that range is returned rather than its lower end.
  """
  p = np.asarray(_as_map(prob), np.float64)
  if p.size == 0:
    raise ValueError("empty probability map")
  if not np.all(np.isfinite(p)):
    raise ValueError("probability map contains NaN or infinite values")
  hist, edges = np.histogram(np.clip(p, 0.0, 1.0), bins=256, range=(0.0, 1.0))
  w = hist / hist.sum()
  centers = 0.5 * (edges[:-1] + edges[1:])
  omega = np.cumsum(w)[:-1]  # Class-0 weight when cutting after bin k, k = 0..254.
  mu = np.cumsum(w * centers)[:-1]
  mu_total = float(np.sum(w * centers))
  denom = omega * (1.0 - omega)
  between = np.zeros_like(omega)
  np.divide((mu_total * omega - mu) ** 2, denom, out=between, where=denom > 1e-12)
  best = float(between.max())
  if best <= 0.0:
    # Constant map: no split is better than another; put everything in one class.
    return float(edges[min(int(np.argmax(hist)) + 1, 256)])
  # Middle of the run of (near-)optimal cuts that starts at the first optimum.
  good = between >= best * (1.0 - 1e-9)
  first = int(np.argmax(good))
  last = first
  while last + 1 < good.size and good[last + 1]:
    last += 1
  return float(0.5 * (edges[first + 1] + edges[last + 1]))


def binarize(prob: Any, threshold: float | str = 0.5) -> np.ndarray:
  """bool mask `prob > threshold`, same shape as `prob`; threshold a float or "otsu"."""
  p = np.asarray(prob)
  if isinstance(threshold, str):
    if threshold.lower() != "otsu":
      raise ValueError(f"threshold must be a float or 'otsu', got {threshold!r}")
    threshold = otsu_threshold(p)
  return p > float(threshold)


def catastrophic_fallback(prob: Any, mask: Any, max_fraction: float = 0.9,
                          clean: bool = True) -> tuple[np.ndarray, bool]:
  """(mask, replaced): a mask that failed catastrophically, empty or covering more than
  `max_fraction` of the image (the whole field of view), replaced by the map cut at a threshold
  of its own: half its maximum for an empty mask (the most lesion-like region), Otsu's threshold
  for a full one (the map's own two modes); hole-filled with the largest component kept if
  `clean`. A replacement that fails the same way is not used."""
  p, m = np.asarray(_as_map(prob), np.float32), as_mask(mask)
  fraction = float(m.mean()) if m.size else 0.0
  if 0.0 < fraction <= max_fraction or not p.size:
    return m, False
  threshold = 0.5 * float(p.max()) if fraction == 0.0 else otsu_threshold(p)
  new = p > threshold
  new = clean_mask(new) if clean else new
  ok = 0.0 < float(new.mean()) <= max_fraction
  return (new, True) if ok else (m, False)


@dataclasses.dataclass(frozen=True)
class MaskPostprocess:
  """A run's binarisation of a lesion probability map (any resolution): `threshold`, then hole
  filling + largest component if `clean`, then `catastrophic_fallback` if `fallback`. Built from
  the flat fields a run config records (`of`: threshold, postprocess, fallback,
  fallback_max_fraction), so evaluation-time overrides of those fields change it."""
  threshold: float = 0.5
  clean: bool = True
  fallback: bool = False
  fallback_max_fraction: float = 0.9

  @classmethod
  def of(cls, config: Any) -> "MaskPostprocess":
    return cls(config.threshold, config.postprocess, config.fallback, config.fallback_max_fraction)

  def __call__(self, prob: Any) -> tuple[np.ndarray, bool]:
    """(mask, fallback used) of one map."""
    mask = binarize(prob, self.threshold)
    mask = clean_mask(mask) if self.clean else mask
    if self.fallback:
      return catastrophic_fallback(prob, mask, self.fallback_max_fraction, self.clean)
    return mask, False


def resize_mask(mask: Any, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of a mask to bool (height, width)."""
  m = as_mask(mask).astype(np.uint8)
  # INTER_NEAREST_EXACT samples pixel centres; plain INTER_NEAREST shifts masks by up to a pixel.
  return cv2.resize(m, (int(width), int(height)), interpolation=cv2.INTER_NEAREST_EXACT) > 0


def resize_prob(prob: Any, height: int, width: int) -> np.ndarray:
  """Bilinear resize of a float map to float32 (height, width)."""
  p = np.asarray(_as_map(prob), np.float32)
  return cv2.resize(p, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def _check_image(image: Any, mask: np.ndarray) -> np.ndarray:
  img = np.asarray(image)
  if img.ndim not in (2, 3) or img.shape[:2] != mask.shape:
    raise ValueError(f"image shape {img.shape} does not match mask shape {mask.shape}; "
                     "resize the mask first (resize_mask)")
  return img


def apply_mask(image: Any, mask: Any) -> np.ndarray:
  """The image with every pixel outside the mask set to 0; dtype and shape preserved."""
  m = as_mask(mask)
  img = _check_image(image, m)
  keep = m if img.ndim == 2 else m[..., None]
  return np.where(keep, img, np.zeros((), img.dtype))


def mask_bbox(mask: Any, margin: float = 0.1) -> tuple[int, int, int, int]:
  """(y0, y1, x0, x1), half-open, of the mask grown by margin * box size on every side.

  Clipped to the image; the whole image when the mask is empty. Use as image[y0:y1, x0:x1].
  """
  m = as_mask(mask)
  h, w = m.shape
  rows = np.flatnonzero(m.any(axis=1))
  if rows.size == 0:
    return 0, h, 0, w
  cols = np.flatnonzero(m.any(axis=0))
  y0, y1 = int(rows[0]), int(rows[-1]) + 1
  x0, x1 = int(cols[0]), int(cols[-1]) + 1
  dy = int(round(margin * (y1 - y0)))
  dx = int(round(margin * (x1 - x0)))
  return max(0, y0 - dy), min(h, y1 + dy), max(0, x0 - dx), min(w, x1 + dx)


def _square_window(a0: int, a1: int, side: int, length: int) -> int:
  """Start of a `side`-long window covering [a0, a1), kept inside [0, length) when it fits."""
  start = (a0 + a1) // 2 - side // 2
  if side <= length:
    return min(max(start, 0), length - side)
  return start  # Larger than the image: centred, the overhang is padded.


def crop_to_mask(image: Any, mask: Any, size: int, margin: float = 0.1, black_out: bool = True,
                 square: bool = True) -> np.ndarray:
  """The "mask AND image, cropped to the lesion, resized" classifier input: uint8 (size, size, 3).

  Args:
    image: uint8 RGB (H, W, 3).
    mask: lesion mask (H, W) or (H, W, 1).
    size: output side in pixels.
    margin: box enlargement, as a fraction of the lesion box size, on every side.
    black_out: zero the pixels outside the mask first.
    square: grow the shorter side of the box so the lesion keeps its aspect ratio (shape and
      asymmetry are diagnostic); where the square leaves the image it is padded with black.

  An empty mask means segmentation failed: then the whole image is used and nothing is blacked
  out, rather than handing the classifier a black square.
  """
  m = as_mask(mask)
  img = _check_image(image, m)
  if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
    raise ValueError(f"image must be uint8 RGB (H, W, 3), got {img.dtype} {img.shape}")
  empty = not m.any()
  if black_out and not empty:
    img = apply_mask(img, m)
  y0, y1, x0, x1 = mask_bbox(m, margin)
  if square:
    h, w = m.shape
    side = max(y1 - y0, x1 - x0)
    ys = _square_window(y0, y1, side, h)
    xs = _square_window(x0, x1, side, w)
    crop = np.zeros((side, side, 3), np.uint8)
    sy0, sy1 = max(ys, 0), min(ys + side, h)
    sx0, sx1 = max(xs, 0), min(xs + side, w)
    crop[sy0 - ys:sy1 - ys, sx0 - xs:sx1 - xs] = img[sy0:sy1, sx0:sx1]
  else:
    crop = img[y0:y1, x0:x1]
  ch, cw = crop.shape[:2]
  interp = cv2.INTER_AREA if ch >= size and cw >= size else cv2.INTER_LINEAR
  return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp)


def decode_mask(encoded: bytes) -> np.ndarray:
  """bool (H, W) from the PNG bytes of a {0, 255} (or {0, 1}) mask: the one mask codec,
  `lesion_jax.io.decode_mask` (nonzero = lesion)."""
  return io.decode_mask(encoded)


def paste_mask(mask: Any, box: Sequence[float], height: int, width: int,
               box_scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
  """A Mask R-CNN instance's (m, m) mask probabilities pasted into an (height, width) image:
  bilinear, the mask's pixel centres spread evenly over the box (pixel [y1, x1, y2, x2], scaled by
  `box_scale` (sy, sx) first, e.g. from the model's input to the image's native resolution), 0
  outside the box (the mask is zero-padded, so its edge fades over one mask pixel as in
  Detectron2's paste)."""
  mask = np.asarray(mask, np.float32)
  y1, x1, y2, x2 = (float(v) for v in box)
  y1, y2, x1, x2 = y1 * box_scale[0], y2 * box_scale[0], x1 * box_scale[1], x2 * box_scale[1]
  m_h, m_w = mask.shape
  sy, sx = max(y2 - y1, 1e-6) / m_h, max(x2 - x1, 1e-6) / m_w
  # Destination pixel centre (i + 0.5) <- mask pixel centre (u + 0.5): i = y1 + (u + 0.5)·sy - 0.5.
  matrix = np.array([[sx, 0.0, x1 + 0.5 * sx - 0.5], [0.0, sy, y1 + 0.5 * sy - 0.5]], np.float64)
  return cv2.warpAffine(mask, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=0.0)
