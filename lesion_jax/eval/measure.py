"""ABCD measurements of a lesion from its mask (and image): the quantities dermatologists use.

  A  asymmetry: 1 − IoU of the mask and its mirror image about each principal axis (0 = symmetric)
  B  border: perimeter, compactness (perimeter² / 4π·area; 1 for a disc) and the fraction of the
     convex hull the lesion fills (solidity)
  C  colour: the dermoscopic colours present (white, red, light brown, dark brown, blue-grey,
     black; each counts when it covers ≥ `min_colour_fraction` of the lesion) and the colour
     spread (mean Lab distance to the lesion's mean colour)
  D  diameter: the greatest distance between two border points (max Feret diameter), and the
     major/minor axes of the ellipse with the same second moments

Lengths are in pixels, or millimetres when `mm_per_pixel` is given.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from lesion_jax.eval import postprocess

# Reference colours (CIE-Lab) of the dermoscopic colour criteria; the same palette as the
# synthetic renderer's, plus white. Pixels are assigned to the nearest reference colour.
DERMOSCOPIC_COLOURS = {
    "white": (95.0, 0.0, 5.0),
    "red": (55.0, 45.0, 20.0),
    "light_brown": (55.0, 17.0, 30.0),
    "dark_brown": (30.0, 14.0, 18.0),
    "blue_grey": (50.0, -2.0, -15.0),
    "black": (12.0, 2.0, 1.0),
}
_SKIN_LIKE = (72.0, 15.0, 18.0)  # pixels nearer to skin than to any criterion colour don't count
_SLICE = 1 << 16  # lesion pixels whose colour distances are computed at once (bounds the memory)


def _principal_axes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Centroid (row, col), eigenvalues (descending) and eigenvectors (columns) of the mask's pixel
  coordinate covariance."""
  rows, cols = np.nonzero(mask)
  # Filled in place, with the index arrays freed first: a full-resolution lesion's coordinates
  # are large (16 bytes per lesion pixel per copy), and predict measures 48-megapixel photos.
  pts = np.empty((len(rows), 2), np.float64)
  pts[:, 0], pts[:, 1] = rows, cols
  del rows, cols
  centre = pts.mean(0)
  pts -= centre
  cov = np.cov(pts.T) if len(pts) > 1 else np.zeros((2, 2))
  values, vectors = np.linalg.eigh(cov)
  order = np.argsort(values)[::-1]
  return centre, values[order], vectors[:, order]


def asymmetry(mask: np.ndarray) -> tuple[float, float]:
  """(about the major axis, about the minor axis): 1 − IoU of the mask and its reflection."""
  mask = postprocess.as_mask(mask)
  if mask.sum() < 3:
    return 0.0, 0.0
  centre, _, vectors = _principal_axes(mask)
  h, w = mask.shape
  out = []
  for axis in (vectors[:, 0], vectors[:, 1]):
    # Reflection about the line through `centre` along `axis`: p' = c + R (p − c), R = 2aaᵀ − I.
    reflect = 2.0 * np.outer(axis, axis) - np.eye(2)
    # cv2 works in (x, y) = (col, row).
    r_xy = reflect[::-1, ::-1]
    c_xy = centre[::-1]
    affine = np.hstack([r_xy, (c_xy - r_xy @ c_xy)[:, None]]).astype(np.float32)
    mirrored = cv2.warpAffine(mask.astype(np.uint8), affine, (w, h), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    union = (mask | mirrored).sum()
    out.append(float(1.0 - (mask & mirrored).sum() / union) if union else 0.0)
  return out[0], out[1]


def _main_contour(mask: np.ndarray) -> np.ndarray | None:
  contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
  return max(contours, key=cv2.contourArea) if contours else None


def max_feret_diameter(contour: np.ndarray) -> float:
  hull = cv2.convexHull(contour).reshape(-1, 2).astype(np.float64)
  if len(hull) < 2:
    return 0.0
  d = hull[:, None, :] - hull[None, :, :]
  return float(np.sqrt((d ** 2).sum(-1)).max())


def colours_present(image: np.ndarray, mask: np.ndarray, min_fraction: float = 0.05
                    ) -> tuple[list[str], dict[str, float], float]:
  """(colours covering ≥ min_fraction of the lesion, fraction per colour, colour spread)."""
  # Only the lesion's pixels are converted (as a one-column image: the conversion is per pixel),
  # and the distances are taken a slice at a time: the (pixels, colours, 3) float64 differences of
  # a whole 48-megapixel lesion would take gigabytes. Results are those of the whole-array version.
  pixels = np.asarray(image)[postprocess.as_mask(mask)]
  if len(pixels) == 0:
    return [], {}, 0.0
  lab = cv2.cvtColor(pixels[:, None, :].astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[:, 0]
  del pixels
  names = list(DERMOSCOPIC_COLOURS)
  refs = np.array([DERMOSCOPIC_COLOURS[n] for n in names] + [_SKIN_LIKE])
  centre = lab.mean(0)
  nearest = np.empty(len(lab), np.intp)
  distance = np.empty(len(lab), lab.dtype)
  for start in range(0, len(lab), _SLICE):
    part = lab[start:start + _SLICE]
    nearest[start:start + _SLICE] = np.argmin(((part[:, None, :] - refs[None]) ** 2).sum(-1), 1)
    distance[start:start + _SLICE] = np.sqrt(((part - centre) ** 2).sum(-1))
  fractions = {n: float((nearest == i).mean()) for i, n in enumerate(names)}
  present = [n for n in names if fractions[n] >= min_fraction]
  spread = float(distance.mean())
  return present, fractions, spread


def measure_lesion(mask: np.ndarray, image: np.ndarray | None = None,
                   mm_per_pixel: float | None = None, min_colour_fraction: float = 0.05) -> dict[str, Any]:
  """ABCD measurements of the main lesion in `mask` (bool-like, (H, W)); colours need `image`."""
  mask = postprocess.as_mask(mask)
  unit = "mm" if mm_per_pixel else "px"
  scale = mm_per_pixel or 1.0
  out: dict[str, Any] = {"unit": unit, "area": 0.0, "area_fraction": float(mask.mean()),
                         "perimeter": 0.0, "diameter": 0.0, "major_axis": 0.0, "minor_axis": 0.0,
                         "asymmetry_major": 0.0, "asymmetry_minor": 0.0, "compactness": 0.0,
                         "solidity": 0.0, "num_colours": 0, "colours": [], "colour_spread": 0.0}
  contour = _main_contour(mask)
  if contour is None or mask.sum() == 0:
    return out
  area_px = float(mask.sum())
  perimeter_px = float(cv2.arcLength(contour, closed=True))
  _, values, _ = _principal_axes(mask)
  hull_area = float(cv2.contourArea(cv2.convexHull(contour)))
  out.update(
      area=area_px * scale ** 2,
      perimeter=perimeter_px * scale,
      diameter=max_feret_diameter(contour) * scale,
      # Axes of the ellipse with the same second moments: 4·sqrt(eigenvalue).
      major_axis=4.0 * math.sqrt(max(values[0], 0.0)) * scale,
      minor_axis=4.0 * math.sqrt(max(values[1], 0.0)) * scale,
      compactness=perimeter_px ** 2 / (4.0 * math.pi * area_px),
      solidity=min(1.0, area_px / hull_area) if hull_area > 0 else 1.0,
  )
  out["asymmetry_major"], out["asymmetry_minor"] = asymmetry(mask)
  if image is not None:
    present, fractions, spread = colours_present(image, mask, min_colour_fraction)
    out.update(num_colours=len(present), colours=present, colour_spread=spread,
               colour_fractions=fractions)
  return out
