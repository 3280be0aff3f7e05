"""Segmentation metrics by the ISIC 2017/2018 conventions (see the package docstring): per-image
pixel counts (`segmentation_counts`), Jaccard, Dice, accuracy, sensitivity and specificity from
them with their empty-mask rules, the means over images with the ISIC 2018 thresholded Jaccard,
the streaming `SegmentationAccumulator`, and the pooled pixel confusion (`pixel_confusion`).
Everything here is a function of the four counts per image, which is what the evaluation loops
gather across hosts; the boundary metrics that ride along are in `boundary`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lesion_jax.eval.metrics.boundary import BOUNDARY_KEYS, boundary_scores
from lesion_jax.eval.metrics.masks import _as_mask_batch

SEGMENTATION_KEYS = ("jaccard", "dice", "accuracy", "sensitivity", "specificity")


# ----------------------------------------------------------------------------------------------
# Segmentation


def segmentation_counts(pred: Any, target: Any) -> dict[str, np.ndarray]:
  """Per-image pixel counts {"tp", "fp", "fn", "tn"}, each int64 of shape (N,)."""
  p = _as_mask_batch(pred, "pred")
  t = _as_mask_batch(target, "target")
  if p.shape != t.shape:
    raise ValueError(
        f"pred and target shapes differ: {np.shape(pred)} vs {np.shape(target)}")
  pixels = p.shape[1] * p.shape[2]
  if pixels == 0:
    raise ValueError(f"masks have no pixels: shape {np.shape(pred)}")
  tp = np.count_nonzero(p & t, axis=(1, 2)).astype(np.int64)
  fp = np.count_nonzero(p, axis=(1, 2)).astype(np.int64) - tp
  fn = np.count_nonzero(t, axis=(1, 2)).astype(np.int64) - tp
  tn = pixels - tp - fp - fn
  return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(num: np.ndarray, den: np.ndarray, empty_value: float) -> np.ndarray:
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  out = np.full(num.shape, empty_value, np.float64)
  np.divide(num, den, out=out, where=den > 0)
  return out


def scores_from_counts(counts: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Per-image scores (float64 (N,)) from per-image counts, with the module's empty conventions."""
  tp, fp, fn, tn = (np.asarray(counts[k], np.int64) for k in ("tp", "fp", "fn", "tn"))
  return {
      "jaccard": _ratio(tp, tp + fp + fn, 1.0),
      "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
      "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
      "sensitivity": _ratio(tp, tp + fn, 1.0),
      "specificity": _ratio(tn, tn + fp, 1.0),
      # Boundary scores computed with the counts travel with them.
      **{k: np.asarray(counts[k], np.float64) for k in BOUNDARY_KEYS if k in counts},
  }


def per_image_segmentation_scores(pred: Any, target: Any) -> dict[str, np.ndarray]:
  """Per-image jaccard, dice, accuracy, sensitivity, specificity (float64 arrays of shape (N,))."""
  return scores_from_counts(segmentation_counts(pred, target))


def summarize_segmentation(per_image: Mapping[str, np.ndarray],
                           threshold_ja: float = 0.65) -> dict[str, float | int | None]:
  """Means over images of per-image scores, plus the ISIC 2018 thresholded Jaccard."""
  ja = np.asarray(per_image["jaccard"], np.float64)
  n = int(ja.shape[0])
  if n == 0:
    return {**{k: None for k in SEGMENTATION_KEYS}, "jaccard_thresholded": None, "num_images": 0}
  out: dict[str, float | int | None] = {
      k: float(np.mean(per_image[k])) for k in SEGMENTATION_KEYS}
  out["jaccard_thresholded"] = float(np.mean(np.where(ja < threshold_ja, 0.0, ja)))
  for k in BOUNDARY_KEYS:
    if k in per_image:
      out[k] = float(np.mean(per_image[k]))
  out["num_images"] = n
  return out


def segmentation_scores(pred: Any, target: Any,
                        threshold_ja: float = 0.65) -> dict[str, float | int | None]:
  """Mean per-image segmentation scores: jaccard, jaccard_thresholded, dice, accuracy,
  sensitivity, specificity, num_images (scores are None when there are no images)."""
  return summarize_segmentation(per_image_segmentation_scores(pred, target), threshold_ja)



class SegmentationAccumulator:
  """Streaming `segmentation_scores` over batches; keeps only 4 counts per image (and, with
  `boundary=True`, each image's `boundary_scores`)."""

  def __init__(self, threshold_ja: float = 0.65, boundary: bool = False):
    self.threshold_ja = threshold_ja
    self.boundary = boundary
    self._counts: list[dict[str, np.ndarray]] = []

  def update(self, pred: Any, target: Any, weights: Any = None) -> None:
    """Adds a batch; `weights` (N,) of 0/1 marks padding examples (0) to ignore."""
    counts = segmentation_counts(pred, target)
    if self.boundary:
      counts.update(boundary_scores(pred, target))
    if weights is not None:
      w = np.asarray(weights).reshape(-1)
      n = counts["tp"].shape[0]
      if w.shape[0] != n:
        raise ValueError(f"weights has {w.shape[0]} entries for a batch of {n} masks "
                         f"(weights shape {np.shape(weights)})")
      if not np.all((w == 0) | (w == 1)):
        raise ValueError("weights must be 0 (padding) or 1 (real example)")
      keep = w == 1
      counts = {k: v[keep] for k, v in counts.items()}
    self._counts.append(counts)

  def counts(self) -> dict[str, np.ndarray]:
    """Per-image counts of all non-padding images, in update order."""
    keys = ("tp", "fp", "fn", "tn") + (("hd95", "boundary_f") if self.boundary else ())
    return {k: np.concatenate([c[k] for c in self._counts]) if self._counts
            else np.zeros((0,), np.int64 if k in ("tp", "fp", "fn", "tn") else np.float64) for k in keys}

  def per_image(self) -> dict[str, np.ndarray]:
    """Per-image scores of all non-padding images, in update order."""
    return scores_from_counts(self.counts())

  def result(self) -> dict[str, float | int | None]:
    """Same keys and values as `segmentation_scores` over everything added."""
    return summarize_segmentation(self.per_image(), self.threshold_ja)


def pixel_confusion(counts: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The mask-then-AlexNet paper's Table I: lesion/background pixel confusion summed over images
  (each at its native resolution), with accuracy, sensitivity, specificity and precision."""
  tp, fp, fn, tn = (int(np.asarray(counts[k], np.int64).sum()) for k in ("tp", "fp", "fn", "tn"))
  div = lambda a, b: a / b if b else None
  return {"lesion_as_lesion": tp, "lesion_as_background": fn, "background_as_lesion": fp,
          "background_as_background": tn, "accuracy": div(tp + tn, tp + fp + fn + tn),
          "sensitivity": div(tp, tp + fn), "specificity": div(tn, tn + fp), "precision": div(tp, tp + fp)}
