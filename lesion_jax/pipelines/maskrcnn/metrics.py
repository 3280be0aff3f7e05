"""Mask R-CNN's detection metrics: box IoU on the host, the tight box of a lesion mask
(`mask_box`), COCO-style average precision, and the `DetectionAccumulator` that gives box AP
against each image's lesion box and the paper's image-level Table I (host-side NumPy, as
lesion_jax.eval.metrics; here because only this pipeline scores boxes).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lesion_jax.eval import postprocess


# ----------------------------------------------------------------------------------------------
# Detection (Mask R-CNN): box AP against each image's lesion box, and the paper's Table I

def _box_iou_np(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
  """IoU of (D, 4) pixel [y1, x1, y2, x2] boxes with one box (0 where the union is empty): the
  host-side, float64 twin of detection.boxes.box_iou (metrics stay NumPy, off the device)."""
  y1, x1 = np.maximum(boxes[:, 0], box[0]), np.maximum(boxes[:, 1], box[1])
  y2, x2 = np.minimum(boxes[:, 2], box[2]), np.minimum(boxes[:, 3], box[3])
  inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
  area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
  union = area(boxes) + area(box) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def mask_box(mask: Any) -> np.ndarray | None:
  """The tight pixel box [y1, x1, y2, x2] (exclusive ends) of a mask's lesion pixels; None if empty."""
  m = postprocess.as_mask(mask)
  if not m.any():
    return None
  y0, y1, x0, x1 = postprocess.mask_bbox(m, margin=0.0)
  return np.array([y0, x0, y1, x1], np.float64)


def average_precision(scores: np.ndarray, matched: np.ndarray, num_positives: int) -> float | None:
  """COCO-style AP (101-point interpolated precision) of detections with `scores` (all images
  pooled), `matched` marking the true positives, against `num_positives` ground-truth objects."""
  if num_positives == 0:
    return None
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  tp = np.asarray(matched, bool)[order]
  ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
  recall = ctp / num_positives
  precision = ctp / np.maximum(ctp + cfp, 1)
  precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision  # envelope
  ap = 0.0
  for r in np.linspace(0, 1, 101):
    i = np.searchsorted(recall, r, side="left")
    ap += precision[i] if i < len(precision) else 0.0
  return float(ap / 101)


class DetectionAccumulator:
  """Per image: the detections' scores and their IoU with the lesion's ground-truth box (the
  tight box of the whole mask: one lesion per image), at the image's native resolution.

  `rows()` are fixed-width arrays (gathered over hosts like the segmentation counts);
  `summarize(rows)` gives box AP at each IoU threshold (a detection is a true positive when it
  is the highest-scoring one reaching the threshold on its image), and the paper's Table I at
  image level: an image counts as "lesion found" when its best detection scores at least
  `score_threshold`."""

  def __init__(self, max_detections: int, iou_thresholds: Sequence[float] = (0.5, 0.75),
               score_threshold: float = 0.5):
    self.max_detections = max_detections
    self.iou_thresholds = tuple(iou_thresholds)
    self.score_threshold = score_threshold
    self._scores: list[np.ndarray] = []
    self._ious: list[np.ndarray] = []
    self._has_lesion: list[bool] = []

  def update(self, boxes: Any, scores: Any, valid: Any, truth: Any) -> None:
    """One image: boxes (D, 4) native pixels, scores (D,), valid (D,), the ground-truth mask."""
    d = self.max_detections
    boxes, scores, valid = np.asarray(boxes, np.float64), np.asarray(scores, np.float64), np.asarray(valid, bool)
    if boxes.shape[0] != d:
      raise ValueError(f"{boxes.shape[0]} detections for an accumulator of {d}")
    gt = mask_box(truth)
    ious = _box_iou_np(boxes, gt) if gt is not None else np.zeros(d)
    self._scores.append(np.where(valid, scores, -1.0))  # -1: no detection in this slot
    self._ious.append(np.where(valid, ious, 0.0))
    self._has_lesion.append(gt is not None)

  def rows(self) -> dict[str, np.ndarray]:
    d = self.max_detections
    return {"det_scores": np.stack(self._scores) if self._scores else np.zeros((0, d)),
            "det_ious": np.stack(self._ious) if self._ious else np.zeros((0, d)),
            "has_lesion": np.asarray(self._has_lesion, np.int64).reshape(-1)}

  def summarize(self, rows: Mapping[str, np.ndarray]) -> dict[str, Any]:
    scores, ious = np.asarray(rows["det_scores"]), np.asarray(rows["det_ious"])
    has = np.asarray(rows["has_lesion"], bool)
    out: dict[str, Any] = {}
    real = scores >= 0
    for t in self.iou_thresholds:
      hit = (ious >= t) & real
      # Only the best-scoring hit per image is a true positive (detections are sorted best first).
      first = hit & (np.cumsum(hit, axis=1) == 1)
      out[f"box_ap{int(round(t * 100))}"] = average_precision(scores[real], first[real], int(has.sum()))
    top = np.where(real[:, 0], scores[:, 0], -1.0) if scores.shape[0] else np.zeros(0)
    found = top >= self.score_threshold
    out["no_lesion_images"] = int((~found).sum())
    out["lesion_found"] = {"lesion_images_found": int((found & has).sum()),
                           "lesion_images_missed": int((~found & has).sum()),
                           "clear_images_found": int((found & ~has).sum()),
                           "clear_images_clear": int((~found & ~has).sum())}
    return out
