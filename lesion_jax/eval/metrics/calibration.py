"""Calibration of class probabilities: the expected calibration error, its reliability bins, and
temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

Expected calibration error (`expected_calibration_error`), top-label: an example's confidence is
its largest probability, and it is correct when that class (the argmax, as `classification_scores`
predicts) is its label. Confidences fall into `num_bins` (15) equal-width bins over [0, 1]: bin b
holds (b / B, (b + 1) / B], the first one 0 too. With n_b examples in bin b, their accuracy acc_b
and mean confidence conf_b,

    ECE = sum_b (n_b / N) |acc_b - conf_b|

so 0 is perfect calibration, and empty bins count for nothing.

Temperature scaling (`fit_temperature`, `apply_temperature`): the probabilities softmax(z / T), with
one T > 0 for all classes fitted on a selection split by minimising its mean negative
log-likelihood. It works from probabilities as well as from logits z: log p = z - logsumexp(z),
and that per-example constant cancels in the softmax, so softmax(log p / T) = softmax(z / T)
exactly (probabilities are clipped at 1e-12 first, so an underflowed 0 stays finite). T > 1
softens over-confident probabilities, T < 1 sharpens under-confident ones; the argmax, so the
accuracy and the confusion matrix, never changes. (With more than two classes a class's
one-vs-rest ranking across examples may shift slightly, so ROC AUCs are those of the probabilities
as given.)
"""
from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_NUM_BINS = 15
# Search range of the temperature: far beyond what a trained network needs (typically 1-3), finite
# so that a degenerate split (every example right with confidence 1) cannot run off to infinity.
TEMPERATURE_BOUNDS = (0.05, 20.0)
_LOG_FLOOR = 1e-12


def _inputs(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
  """(int labels (N,), probabilities (N, C)); probs (N,) is P(class 1) of a binary problem."""
  p = np.asarray(probs, np.float64)
  if p.ndim == 1:
    p = np.stack([1.0 - p, p], axis=1)
  if p.ndim != 2 or p.shape[1] < 2:
    raise ValueError(f"probs must have shape (N,) or (N, C) with C >= 2, got {np.shape(probs)}")
  y = np.asarray(labels)
  if y.ndim != 1 or y.shape[0] != p.shape[0]:
    raise ValueError(f"labels shape {y.shape} does not match probs shape {np.shape(probs)}")
  if y.shape[0] == 0:
    raise ValueError("no examples")
  if not np.all(np.isfinite(p)) or np.any(p < 0):
    raise ValueError("probs must be finite and non-negative")
  if not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= p.shape[1]:
    raise ValueError(f"labels must be integers in [0, {p.shape[1]})")
  return y.astype(np.int64), p


def reliability_bins(labels: Any, probs: Any, num_bins: int = DEFAULT_NUM_BINS) -> dict[str, np.ndarray]:
  """The top-label reliability bins (module docstring): `edges` (num_bins + 1), and per bin its
  `count`, `accuracy` and mean `confidence` (NaN for an empty bin)."""
  if num_bins < 1:
    raise ValueError(f"num_bins must be at least 1, got {num_bins}")
  y, p = _inputs(labels, probs)
  confidence = p.max(axis=1)
  correct = (p.argmax(axis=1) == y).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # Right-closed bins (edges[b], edges[b + 1]], 0 in the first: located on the very edges returned
  # (c * B would put a confidence of exactly 0.4 = 6/15 in bin 6, as 0.4 * 15 rounds above 6).
  which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
  count = np.bincount(which, minlength=num_bins).astype(np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    accuracy = np.bincount(which, weights=correct, minlength=num_bins) / count
    mean_confidence = np.bincount(which, weights=confidence, minlength=num_bins) / count
  return {"edges": edges, "count": count, "accuracy": accuracy, "confidence": mean_confidence}


def expected_calibration_error(labels: Any, probs: Any, num_bins: int = DEFAULT_NUM_BINS) -> float:
  """Top-label ECE over `num_bins` equal-width confidence bins (module docstring)."""
  bins = reliability_bins(labels, probs, num_bins)
  filled = bins["count"] > 0
  weights = bins["count"][filled] / bins["count"].sum()
  return float(np.sum(weights * np.abs(bins["accuracy"][filled] - bins["confidence"][filled])))


def _log_probs(p: np.ndarray) -> np.ndarray:
  return np.log(np.clip(p, _LOG_FLOOR, None))


def _scaled_log_softmax(log_p: np.ndarray, temperature: float) -> np.ndarray:
  z = log_p / temperature
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
  """softmax(log(probs) / `temperature`), (N, C) (for probs (N,), P(class 1) of a binary
  problem, (N, 2)); equal to softmax(logits / temperature) (module docstring)."""
  if not temperature > 0 or not np.isfinite(temperature):
    raise ValueError(f"temperature must be a positive number, got {temperature}")
  p = np.asarray(probs, np.float64)
  if p.ndim == 1:
    p = np.stack([1.0 - p, p], axis=1)
  if p.ndim != 2:
    raise ValueError(f"probs must have shape (N,) or (N, C), got {np.shape(probs)}")
  return np.exp(_scaled_log_softmax(_log_probs(p), temperature))


def negative_log_likelihood(labels: Any, probs: Any, temperature: float = 1.0) -> float:
  """Mean negative log-likelihood of the labels under the probabilities at `temperature`."""
  y, p = _inputs(labels, probs)
  log_q = _scaled_log_softmax(_log_probs(p), temperature)
  return float(-np.mean(log_q[np.arange(y.shape[0]), y]))


def fit_temperature(labels: Any, probs: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
  """The temperature T in `bounds` minimising the mean negative log-likelihood of
  softmax(log(probs) / T) (logits give the same T: module docstring). The NLL is convex in 1 / T,
  so the bounded 1-D search over log T finds its one minimum."""
  from scipy import optimize  # pylint: disable=g-import-not-at-top  (only the calibration needs it)
  y, p = _inputs(labels, probs)
  log_p = _log_probs(p)
  rows = np.arange(y.shape[0])

  def nll(log_t: float) -> float:
    return float(-np.mean(_scaled_log_softmax(log_p, float(np.exp(log_t)))[rows, y]))

  lo, hi = np.log(bounds[0]), np.log(bounds[1])
  found = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
  return float(np.exp(found.x))
