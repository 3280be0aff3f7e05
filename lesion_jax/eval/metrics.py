"""Segmentation and classification metrics shared by every experiment (host-side numpy).

Segmentation follows the ISIC 2017/2018 challenge conventions: every metric is computed per
image from that image's pixel counts and then averaged over images (not pooled over pixels).

Per-image definitions, with tp/fp/fn/tn counted over the image's pixels:

  jaccard     = tp / (tp + fp + fn)            1.0 when pred and target are both empty
  dice        = 2 tp / (2 tp + fp + fn)        1.0 when pred and target are both empty
  accuracy    = (tp + tn) / pixels
  sensitivity = tp / (tp + fn)                 1.0 when the target is empty (nothing to miss)
  specificity = tn / (tn + fp)                 1.0 when the target covers the whole image

So an empty prediction for a non-empty target scores jaccard = dice = sensitivity = 0, and a
non-empty prediction for an empty target scores jaccard = dice = 0, sensitivity = 1.
"jaccard_thresholded" is the ISIC 2018 score: a per-image Jaccard below `threshold_ja` (0.65)
counts as 0, one at or above it counts as is, then the mean is taken. Boundary metrics (HD95 and
the DAVIS boundary F-score, with their empty-mask rules) are in `boundary_scores`.

Classification (`classification_scores`):

  * Binary problems (probs (N,) = P(class 1), or (N, 2)): precision/recall/f1/sensitivity/
    specificity/roc_auc/average_precision are those of the positive class 1. Predicted label is
    the argmax; for probs (N,) that is class 1 when P > 0.5.
  * Multi-class: precision/recall/f1 are macro averages over all C classes (as scikit-learn's
    `average="macro"` with `labels=range(C)`); sensitivity, specificity, roc_auc,
    average_precision and specificity_at_sensitivity are macro means of the one-vs-rest values
    over the classes where they are defined.
  * Precision/recall/f1 with a zero denominator are 0 (scikit-learn's `zero_division=0`).
    Everything else that is undefined (e.g. ROC AUC with one class in `labels`) is None, and
    `notes` says why. The result contains only Python scalars, lists, dicts and None.
  * `balanced_accuracy` (every problem) is the mean per-class recall, the ISIC 2018 Task 3 score.
    With the ISIC 2017 classes (nevus / melanoma / seborrheic keratosis names present),
    `isic2017` holds the Part 3 ranking: melanoma ROC AUC, seborrheic keratosis ROC AUC, their
    mean, and melanoma specificity at 82 / 89 / 95 % sensitivity.

Sample quality of generated images (`frechet_distance`, `kernel_distance`) compares two sets of
feature vectors (FD-derm uses this project's own classifier's features, so its values are not
comparable with published FIDs on Inception features).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
import warnings

import numpy as np
from sklearn import exceptions as sk_exceptions
from sklearn import metrics as sk_metrics

from lesion_jax.eval import postprocess

SEGMENTATION_KEYS = ("jaccard", "dice", "accuracy", "sensitivity", "specificity")
DEFAULT_SENSITIVITIES = (0.82, 0.89, 0.95)


# ----------------------------------------------------------------------------------------------
# Segmentation


def _as_mask_batch(x: Any, name: str) -> np.ndarray:
  """(N, H, W) bool from a bool-like (N, H, W) or (N, H, W, 1) array."""
  x = np.asarray(x)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 3:
    raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, 1), got {x.shape}")
  if x.dtype == bool:
    return x
  if np.issubdtype(x.dtype, np.floating):
    # A probability map passed by mistake would otherwise count every non-zero pixel as lesion.
    if not np.all((x == 0) | (x == 1)):
      raise ValueError(f"{name} is a float array with values other than 0 and 1; binarize it first")
  return x != 0


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


# ----------------------------------------------------------------------------------------------
# Classification


def _binary_inputs(labels_binary: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
  y = np.asarray(labels_binary).reshape(-1)
  s = np.asarray(scores, np.float64).reshape(-1)
  if y.shape != s.shape:
    raise ValueError(f"labels and scores sizes differ: {np.shape(labels_binary)} vs "
                     f"{np.shape(scores)}")
  if not np.all((y == 0) | (y == 1)):
    raise ValueError("binary labels must be 0 or 1")
  if not np.all(np.isfinite(s)):
    raise ValueError("scores contain NaN or infinite values")
  return y.astype(np.int64), s


def specificity_at_sensitivity(labels_binary: Any, scores: Any, sensitivity: float) -> float:
  """Highest specificity over score thresholds whose sensitivity is >= `sensitivity`.

  The ISIC 2017 Part 3 metric. A threshold t predicts positive when score >= t; tied scores
  can't be split. Returns NaN when labels lack positives or negatives.
  """
  if not 0.0 <= sensitivity <= 1.0:
    raise ValueError(f"sensitivity must be in [0, 1], got {sensitivity}")
  y, s = _binary_inputs(labels_binary, scores)
  num_pos = int(y.sum())
  num_neg = int(y.shape[0] - num_pos)
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  # One operating point per distinct score (tied scores move together), after "predict none";
  # drop_intermediate=False keeps the collinear points too: on a diagonal stretch of the curve
  # they can beat the stretch's ends at a given sensitivity.
  fpr, tpr, _ = sk_metrics.roc_curve(y, s, drop_intermediate=False)
  return float(np.max(1.0 - fpr[tpr >= sensitivity]))


def roc_curve_points(labels_binary: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, thresholds) of the ROC curve; with a single class present, the undefined
  axis is NaN (as scikit-learn returns) and no warning is raised."""
  y, s = _binary_inputs(labels_binary, scores)
  if y.shape[0] == 0:
    raise ValueError("no examples")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", sk_exceptions.UndefinedMetricWarning)
    fpr, tpr, thresholds = sk_metrics.roc_curve(y, s)
  return fpr, tpr, thresholds


def _sens_key(s: float) -> str:
  return f"{s:g}"


def _mean_defined(values: Sequence[float | None]) -> float | None:
  defined = [v for v in values if v is not None]
  return float(np.mean(defined)) if defined else None


def _one_vs_rest(y: np.ndarray, score: np.ndarray, sensitivities: Sequence[float]
                 ) -> tuple[dict[str, Any], dict[str, str]]:
  """Ranking metrics of one binary problem; None (plus a reason) where undefined."""
  num_pos = int(y.sum())
  num_neg = int(y.shape[0] - num_pos)
  out: dict[str, Any] = {}
  notes: dict[str, str] = {}
  if num_pos and num_neg:
    out["roc_auc"] = float(sk_metrics.roc_auc_score(y, score))
    out["specificity_at_sensitivity"] = {
        _sens_key(t): specificity_at_sensitivity(y, score, t) for t in sensitivities}
  else:
    missing = "positive" if num_pos == 0 else "negative"
    reason = f"no {missing} examples in labels"
    out["roc_auc"] = None
    out["specificity_at_sensitivity"] = {_sens_key(t): None for t in sensitivities}
    notes["roc_auc"] = notes["specificity_at_sensitivity"] = reason
  if num_pos:
    out["average_precision"] = float(sk_metrics.average_precision_score(y, score))
  else:
    out["average_precision"] = None
    notes["average_precision"] = "no positive examples in labels"
  return out, notes


def classification_scores(labels: Any, probs: Any, class_names: Sequence[str] | None = None,
                          sensitivities: Sequence[float] = DEFAULT_SENSITIVITIES
                          ) -> dict[str, Any]:
  """Classification metrics as a JSON-ready dict; see the module docstring for conventions.

  Args:
    labels: int (N,) true classes.
    probs: float (N, C) class probabilities, or (N,) = P(class 1) for a binary problem.
    class_names: C names (default "0", "1", ...); keys of "per_class".
    sensitivities: target sensitivities for "specificity_at_sensitivity".

  Returns:
    accuracy, misclassification_rate, precision, recall, f1, sensitivity, specificity,
    roc_auc, average_precision, specificity_at_sensitivity {"0.82": ...}, confusion_matrix
    (rows = true class), per_class {name: {precision, recall, f1, support, sensitivity,
    specificity, roc_auc, average_precision, specificity_at_sensitivity}}, class_names,
    num_classes, num_examples, notes {metric: why it is None or partial}.
  """
  labels_arr = np.asarray(labels)
  probs_arr = np.asarray(probs, np.float64)
  if probs_arr.ndim == 2 and probs_arr.shape[1] == 1:
    probs_arr = probs_arr[:, 0]
  if probs_arr.ndim == 1:
    # Binary shorthand: P(class 1). Column 0 is its complement, so argmax = (P > 0.5).
    probs_arr = np.stack([1.0 - probs_arr, probs_arr], axis=1)
    preds = (probs_arr[:, 1] > 0.5).astype(np.int64)
  elif probs_arr.ndim == 2:
    preds = np.argmax(probs_arr, axis=1).astype(np.int64)
  else:
    raise ValueError(f"probs must have shape (N,) or (N, C), got {np.shape(probs)}")
  n, num_classes = probs_arr.shape
  if labels_arr.ndim != 1 or labels_arr.shape[0] != n:
    raise ValueError(f"labels shape {labels_arr.shape} does not match probs shape "
                     f"{np.shape(probs)}")
  if n == 0:
    raise ValueError("no examples to score")
  if num_classes < 2:
    raise ValueError(f"need at least 2 classes, got probs shape {np.shape(probs)}")
  if not np.all(np.isfinite(probs_arr)):
    raise ValueError("probs contain NaN or infinite values")
  if labels_arr.dtype == bool:
    labels_arr = labels_arr.astype(np.int64)
  if not np.all(np.equal(np.mod(labels_arr, 1), 0)):
    raise ValueError("labels must be integers")
  y = labels_arr.astype(np.int64)
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"labels must be in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
  names = [str(c) for c in range(num_classes)] if class_names is None else [
      str(c) for c in class_names]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} class names for {num_classes} classes")
  if len(set(names)) != num_classes:
    raise ValueError(f"class names must be unique, got {names}")
  binary = num_classes == 2
  class_ids = list(range(num_classes))

  cm = sk_metrics.confusion_matrix(y, preds, labels=class_ids)
  precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
      y, preds, labels=class_ids, zero_division=0.0)
  notes: dict[str, str] = {}
  per_class: dict[str, dict[str, Any]] = {}
  for c, name in enumerate(names):
    tp = int(cm[c, c])
    fn = int(cm[c].sum()) - tp
    fp = int(cm[:, c].sum()) - tp
    tn = n - tp - fn - fp
    entry: dict[str, Any] = {
        "precision": float(precision[c]),
        "recall": float(recall[c]),
        "f1": float(f1[c]),
        "support": int(support[c]),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
    }
    if entry["sensitivity"] is None:
      notes[f"per_class/{name}/sensitivity"] = "no examples of this class in labels"
    if entry["specificity"] is None:
      notes[f"per_class/{name}/specificity"] = "no examples of other classes in labels"
    ranking, ranking_notes = _one_vs_rest((y == c).astype(np.int64), probs_arr[:, c],
                                          sensitivities)
    entry.update(ranking)
    notes.update({f"per_class/{name}/{k}": v for k, v in ranking_notes.items()})
    per_class[name] = entry

  accuracy = float(np.mean(preds == y))
  out: dict[str, Any] = {
      "accuracy": accuracy,
      "misclassification_rate": 1.0 - accuracy,
      "confusion_matrix": cm.astype(int).tolist(),
      "per_class": per_class,
      "class_names": names,
      "num_classes": num_classes,
      "num_examples": int(n),
  }
  ranked_keys = ("sensitivity", "specificity", "roc_auc", "average_precision")
  if binary:
    pos = per_class[names[1]]
    out.update({k: pos[k] for k in ("precision", "recall", "f1", *ranked_keys)})
    out["specificity_at_sensitivity"] = dict(pos["specificity_at_sensitivity"])
    for k in (*ranked_keys, "specificity_at_sensitivity"):
      if f"per_class/{names[1]}/{k}" in notes:
        notes[k] = notes[f"per_class/{names[1]}/{k}"]
  else:
    out["precision"] = float(np.mean(precision))
    out["recall"] = float(np.mean(recall))
    out["f1"] = float(np.mean(f1))
    for k in ranked_keys:
      values = [per_class[name][k] for name in names]
      out[k] = _mean_defined(values)
      _note_macro(notes, k, values)
    sas = {}
    for t in sensitivities:
      values = [per_class[name]["specificity_at_sensitivity"][_sens_key(t)] for name in names]
      sas[_sens_key(t)] = _mean_defined(values)
      _note_macro(notes, f"specificity_at_sensitivity/{_sens_key(t)}", values)
    out["specificity_at_sensitivity"] = sas
  out["balanced_accuracy"] = float(np.mean([recall[c] for c in class_ids if support[c]])) if support.any() else None
  isic = isic2017_scores(per_class)
  if isic is not None:
    out["isic2017"] = isic
  out["notes"] = notes
  return out


# Class names as the builders spell them (synthetic / ISIC 2017, HAM10000 / ISIC 2018).
ISIC2017_MELANOMA = ("melanoma", "mel")
ISIC2017_KERATOSIS = ("seborrheic_keratosis", "benign_keratosis", "bkl")


def isic2017_scores(per_class: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
  """ISIC 2017 Part 3's ranking from `classification_scores`' per-class entries: melanoma ROC AUC,
  seborrheic keratosis ROC AUC (benign keratosis in the 7 ISIC 2018 classes), their mean, and
  melanoma specificity at the sensitivities scored. None without a melanoma class."""
  mel_name = next((k for k in ISIC2017_MELANOMA if k in per_class), None)
  if mel_name is None:
    return None
  mel = per_class[mel_name]
  sk_name = next((k for k in ISIC2017_KERATOSIS if k in per_class), None)
  sk_auc = per_class[sk_name]["roc_auc"] if sk_name else None
  aucs = [v for v in (mel["roc_auc"], sk_auc) if v is not None]
  return {"melanoma_roc_auc": mel["roc_auc"], "keratosis_roc_auc": sk_auc,
          "mean_roc_auc": float(np.mean(aucs)) if len(aucs) == 2 else None,
          "melanoma_specificity_at_sensitivity": dict(mel["specificity_at_sensitivity"])}


def frechet_distance(features_a: Any, features_b: Any) -> float:
  """Frechet distance between Gaussians fitted to two sets of features (N, F) and (M, F):
  |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017). Biased upwards for
  small N: compare values computed with equal sample sizes."""
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f"need two (N >= 2, F) feature sets with the same F, got {a.shape} and {b.shape}")
  mu = a.mean(0) - b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
  if not np.all(np.isfinite(root)):  # singular product: regularise, as the reference FID code does
    eps = 1e-6 * np.eye(a.shape[1])
    root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
  return float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(np.real(root)))


def kernel_distance(features_a: Any, features_b: Any) -> float:
  """Unbiased squared MMD with the cubic polynomial kernel k(x, y) = (x.y / F + 1)^3 (the KID of
  Binkowski et al. 2018): unbiased for any sample size, so small classes can be compared."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f"need two (N >= 2, F) feature sets with the same F, got {a.shape} and {b.shape}")
  f = a.shape[1]
  kaa, kbb, kab = ((x @ y.T / f + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
  n, m = len(a), len(b)
  return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
               - 2 * kab.mean())


def _note_macro(notes: dict[str, str], key: str, values: Sequence[float | None]) -> None:
  defined = sum(v is not None for v in values)
  if defined == 0:
    notes[key] = "undefined for every class (see per_class notes)"
  elif defined < len(values):
    notes[key] = f"macro mean over the {defined} of {len(values)} classes where it is defined"


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


def pixel_confusion(counts: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The mask-then-AlexNet paper's Table I: lesion/background pixel confusion summed over images
  (each at its native resolution), with accuracy, sensitivity, specificity and precision."""
  tp, fp, fn, tn = (int(np.asarray(counts[k], np.int64).sum()) for k in ("tp", "fp", "fn", "tn"))
  div = lambda a, b: a / b if b else None
  return {"lesion_as_lesion": tp, "lesion_as_background": fn, "background_as_lesion": fp,
          "background_as_background": tn, "accuracy": div(tp + tn, tp + fp + fn + tn),
          "sensitivity": div(tp, tp + fn), "specificity": div(tn, tn + fp), "precision": div(tp, tp + fp)}
