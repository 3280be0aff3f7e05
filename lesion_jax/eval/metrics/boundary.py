"""Boundary metrics: the symmetric 95th-percentile Hausdorff distance and the DAVIS boundary
F-score of mask pairs (`boundary_scores`, with their empty-mask rules), and the quality of a
superpixel label map against a ground-truth segmentation (`boundary_recall`,
`undersegmentation_error`). Separate from the count-based segmentation metrics because these
need distance transforms (SciPy) rather than pixel counts.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lesion_jax.eval.metrics.masks import _as_mask_batch


# ----------------------------------------------------------------------------------------------
# Boundary metrics


def mask_boundary(mask: Any) -> np.ndarray:
  """bool (H, W): the mask's pixels with a 4-neighbour outside it; outside the image counts as
  outside the mask, so a lesion cut by the image edge has a closed contour."""
  m = np.asarray(mask, bool)
  padded = np.pad(m, 1)
  interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
  return m & ~interior


def _distance_to(boundary: np.ndarray, sampling) -> np.ndarray:
  """Euclidean distance of every pixel to the nearest pixel of a non-empty `boundary`."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  return ndimage.distance_transform_edt(~boundary, sampling=sampling)


def boundary_tolerance(shape: Sequence[int], fraction: float = 0.008) -> int:
  """The DAVIS boundary-F tolerance in pixels: ceil(fraction x image diagonal)."""
  return int(np.ceil(fraction * np.hypot(*shape[:2])))


def boundary_scores_one(pred: Any, target: Any, pixel_size: float | None = None,
                        tolerance_fraction: float = 0.008) -> dict[str, float]:
  """HD95 and boundary F of one (H, W) mask pair; see `boundary_scores`."""
  p, t = np.asarray(pred, bool), np.asarray(target, bool)
  if p.shape != t.shape or p.ndim != 2:
    raise ValueError(f"pred and target must be (H, W) of one shape, got {p.shape} and {t.shape}")
  diagonal = float(np.hypot(*p.shape))
  bp, bt = mask_boundary(p), mask_boundary(t)
  if not bp.any() and not bt.any():
    hd95, bf = 0.0, 1.0
  elif not bp.any() or not bt.any():
    hd95, bf = diagonal, 0.0
  else:
    to_t, to_p = _distance_to(bt, None), _distance_to(bp, None)
    d_pt, d_tp = to_t[bp], to_p[bt]
    hd95 = float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))
    tol = boundary_tolerance(p.shape, tolerance_fraction)
    precision, recall = float(np.mean(d_pt <= tol)), float(np.mean(d_tp <= tol))
    bf = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
  out = {"hd95": hd95, "boundary_f": bf}
  if pixel_size is not None:
    out["hd95_mm"] = hd95 * float(pixel_size)
  return out


def boundary_scores(pred: Any, target: Any, pixel_size: float | None = None,
                    tolerance_fraction: float = 0.008) -> dict[str, np.ndarray]:
  """Per-image boundary metrics of (N, H, W) masks, float64 (N,) arrays:

  hd95        symmetric 95th-percentile Hausdorff distance in pixels: the larger of the two
              directed 95th percentiles (numpy's linear interpolation) of the Euclidean
              distances from each boundary pixel (`mask_boundary`) of one mask to the nearest
              boundary pixel of the other. One mask empty: the image diagonal (the worst value);
              both empty: 0.
  boundary_f  F-score of boundary precision and recall, a boundary pixel matching when the other
              boundary is within `boundary_tolerance` (ceil(0.8 % of the diagonal): the DAVIS
              convention). One mask empty: 0; both empty: 1.
  hd95_mm     hd95 x `pixel_size` (mm per pixel), only when the pixel size is known.
  """
  p, t = _as_mask_batch(pred, "pred"), _as_mask_batch(target, "target")
  if p.shape != t.shape:
    raise ValueError(f"pred and target shapes differ: {np.shape(pred)} vs {np.shape(target)}")
  rows = [boundary_scores_one(a, b, pixel_size, tolerance_fraction) for a, b in zip(p, t)]
  keys = ("hd95", "boundary_f") + (("hd95_mm",) if pixel_size is not None else ())
  return {k: np.asarray([r[k] for r in rows], np.float64).reshape(-1) for k in keys}


BOUNDARY_KEYS = ("hd95", "boundary_f", "hd95_mm")


# ----------------------------------------------------------------------------------------------
# Superpixel quality against a ground-truth segmentation


def _label_edges(labels: np.ndarray) -> np.ndarray:
  """bool (H, W): pixels with a 4-neighbour (inside the image) of another label: both sides of
  every boundary."""
  e = np.zeros(labels.shape, bool)
  dx = labels[:, :-1] != labels[:, 1:]
  dy = labels[:-1, :] != labels[1:, :]
  e[:, :-1] |= dx
  e[:, 1:] |= dx
  e[:-1, :] |= dy
  e[1:, :] |= dy
  return e


def boundary_recall(labels: Any, truth: Any, tolerance: float = 2.0) -> float:
  """Fraction of the ground truth's boundary pixels (either side of a change of `truth`, inside
  the image) within `tolerance` pixels (Euclidean) of a superpixel boundary pixel; 1.0 when the
  truth has no boundary."""
  lab, t = np.asarray(labels), np.asarray(truth)
  if lab.shape != t.shape:
    raise ValueError(f"label map shape {lab.shape} does not match truth shape {t.shape}")
  gt_edges = _label_edges(t)
  if not gt_edges.any():
    return 1.0
  sp_edges = _label_edges(lab)
  if not sp_edges.any():
    return 0.0
  return float(np.mean(_distance_to(sp_edges, None)[gt_edges] <= tolerance))


def undersegmentation_error(labels: Any, truth: Any) -> float:
  """Neubert and Protzel's (corrected) under-segmentation error: over ground-truth segments G and
  the superpixels S overlapping them, sum min(|S & G|, |S - G|), divided by the pixel count. 0 when
  no superpixel straddles a boundary."""
  lab, t = np.asarray(labels).ravel(), np.asarray(truth).ravel()
  if lab.shape != t.shape:
    raise ValueError(f"label map and truth differ in size: {np.shape(labels)} vs {np.shape(truth)}")
  _, sp = np.unique(lab, return_inverse=True)
  _, gt = np.unique(t, return_inverse=True)
  joint = np.zeros((sp.max() + 1, gt.max() + 1), np.int64)
  np.add.at(joint, (sp, gt), 1)
  size = joint.sum(1, keepdims=True)
  leak = np.where(joint > 0, np.minimum(joint, size - joint), 0)
  return float(leak.sum() / lab.size)
