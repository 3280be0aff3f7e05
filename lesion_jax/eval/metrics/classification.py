"""Classification metrics (see the package docstring for the conventions): ROC points, ROC AUC,
average precision, specificity at a target sensitivity (ISIC 2017 Part 3), the JSON-ready
`classification_scores` (binary and macro multi-class, per-class entries, balanced accuracy)
and the ISIC 2017 Part 3 ranking (`isic2017_scores`). Separate because it scores class
probabilities with scikit-learn, not masks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
import warnings

import numpy as np
from sklearn import exceptions as sk_exceptions
from sklearn import metrics as sk_metrics

from lesion_jax.eval.metrics.calibration import expected_calibration_error

DEFAULT_SENSITIVITIES = (0.82, 0.89, 0.95)


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
    num_classes, num_examples, balanced_accuracy, ece (top-label expected calibration error over
    15 bins, `calibration.expected_calibration_error`; None for scores that are not
    probabilities), with a melanoma class ISIC 2017 Part 3's
    `isic2017_scores` (melanoma_roc_auc, keratosis_roc_auc, mean_roc_auc,
    melanoma_specificity_at_sensitivity), notes {metric: why it is None or partial}.
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
  # Scores that are not probabilities (e.g. the LIN's summed lesion indices) have no calibration.
  if np.all(probs_arr >= 0) and np.allclose(probs_arr.sum(axis=1), 1.0, atol=1e-3):
    out["ece"] = expected_calibration_error(y, probs_arr)
  else:
    out["ece"] = None
    notes["ece"] = "the scores are not probabilities (rows of non-negative values summing to 1)"
  isic, isic_notes = isic2017_scores(per_class)
  out.update(isic)
  notes.update(isic_notes)
  out["notes"] = notes
  return out


# Class names as the builders spell them (synthetic / ISIC 2017, HAM10000 / ISIC 2018).
ISIC2017_MELANOMA = ("melanoma", "mel")
ISIC2017_KERATOSIS = ("seborrheic_keratosis", "benign_keratosis", "bkl")
ISIC2017_KEYS = ("melanoma_roc_auc", "keratosis_roc_auc", "mean_roc_auc", "melanoma_specificity_at_sensitivity")


def isic2017_scores(per_class: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
  """ISIC 2017 Part 3's scores from `classification_scores`' per-class entries, as top-level keys
  of its result (so a run can select its checkpoint on them, `best_metric`, and report columns
  name them): `melanoma_roc_auc` and `keratosis_roc_auc` (one-vs-rest; seborrheic keratosis, or
  benign keratosis among the 7 ISIC 2018 classes), `mean_roc_auc` (their mean: the challenge's
  ranking score) and `melanoma_specificity_at_sensitivity` {"0.82": ...} (its secondary scores,
  `specificity_at_sensitivity`'s definition). ({}, {}) without a melanoma class; (scores, notes
  on what is None) otherwise."""
  mel_name = next((k for k in ISIC2017_MELANOMA if k in per_class), None)
  if mel_name is None:
    return {}, {}
  mel = per_class[mel_name]
  sk_name = next((k for k in ISIC2017_KERATOSIS if k in per_class), None)
  sk_auc = per_class[sk_name]["roc_auc"] if sk_name else None
  notes = {}
  if sk_name is None:
    notes["keratosis_roc_auc"] = f"no keratosis class among {sorted(per_class)}"
  elif sk_auc is None:
    notes["keratosis_roc_auc"] = f"undefined for {sk_name} (see per_class notes)"
  if mel["roc_auc"] is None:
    notes["melanoma_roc_auc"] = f"undefined for {mel_name} (see per_class notes)"
  defined = [v for v in (mel["roc_auc"], sk_auc) if v is not None]
  if len(defined) < 2:
    notes["mean_roc_auc"] = "needs both the melanoma and the keratosis ROC AUC"
  return {"melanoma_roc_auc": mel["roc_auc"], "keratosis_roc_auc": sk_auc,
          "mean_roc_auc": float(np.mean(defined)) if len(defined) == 2 else None,
          "melanoma_specificity_at_sensitivity": dict(mel["specificity_at_sensitivity"])}, notes


def _note_macro(notes: dict[str, str], key: str, values: Sequence[float | None]) -> None:
  defined = sum(v is not None for v in values)
  if defined == 0:
    notes[key] = "undefined for every class (see per_class notes)"
  elif defined < len(values):
    notes[key] = f"macro mean over the {defined} of {len(values)} classes where it is defined"
