"""Tests for lesion_jax.eval.metrics.calibration: the ECE on hand-computed bins, temperature
scaling on a toy problem whose right temperature is known, and the reliability diagram."""
import json

import numpy as np
import pytest

from lesion_jax import metrics


def _softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def _calibrated_problem(n, seed, classes=3, concentration=0.4):
  """(labels, probs) calibrated by construction: each example's label is drawn from its own
  probabilities (Dirichlet, sparse enough that most examples are confidently one class)."""
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet([concentration] * classes, size=n)
  labels = np.array([rng.choice(classes, p=p) for p in probs])
  return labels, probs


def test_ece_hand_computed_bins():
  # Confidences .9 (right), .9 (wrong), .6 (right), .55 (right) of 15 bins of width 1/15:
  # .9 in bin 13 (.8667, .9333]: accuracy 1/2, confidence .9 -> weight 2/4 * |.5 - .9| = .2
  # .6 and .55 in bin 8 (.5333, .6]: accuracy 1, confidence .575 -> 2/4 * |1 - .575| = .2125
  labels = [0, 1, 2, 1]
  probs = [[.9, .05, .05], [.9, .05, .05], [.2, .2, .6], [.3, .55, .15]]
  assert metrics.expected_calibration_error(labels, probs) == pytest.approx(0.4125)
  bins = metrics.reliability_bins(labels, probs)
  assert bins["count"].tolist() == [0] * 8 + [2, 0, 0, 0, 0, 2, 0]
  assert bins["accuracy"][13] == 0.5 and bins["confidence"][8] == pytest.approx(0.575)
  assert np.isnan(bins["accuracy"][0])  # empty bins have no accuracy, and weigh nothing
  # Right-closed bins on the returned edges: a confidence of exactly 6/15 = 0.4 is in bin 5.
  edge = metrics.reliability_bins([0], [[0.4, 0.3, 0.3]])
  assert edge["count"][5] == 1 and edge["edges"][6] == 0.4
  # Perfect confidence, always right: 0; always wrong: 1. Binary P(class 1) works as (N, 2).
  assert metrics.expected_calibration_error([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == 0.0
  assert metrics.expected_calibration_error([1, 0], [0.0, 1.0]) == 1.0
  # classification_scores reports the same number; scores that are not probabilities have none.
  assert metrics.classification_scores(labels, probs)["ece"] == pytest.approx(0.4125)
  summed = metrics.classification_scores(labels, 2 * np.asarray(probs))  # e.g. two members' maps added
  assert summed["ece"] is None and "not probabilities" in summed["notes"]["ece"]
  assert summed["roc_auc"] == metrics.classification_scores(labels, probs)["roc_auc"]


def test_temperature_of_probabilities_equals_temperature_of_logits():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(20, 4)) * 3
  for t in (0.5, 1.0, 2.7):
    np.testing.assert_allclose(metrics.apply_temperature(_softmax(logits), t), _softmax(logits / t), atol=1e-12)
  with pytest.raises(ValueError, match="positive"):
    metrics.apply_temperature(_softmax(logits), 0.0)


def test_temperature_scaling_fixes_an_over_confident_model():
  # Logits of a calibrated model multiplied by 4: over-confident, with the right temperature 4.
  labels, probs = _calibrated_problem(6000, seed=1)
  sharp = _softmax(4.0 * np.log(probs))
  select, test = slice(0, 3000), slice(3000, None)
  temperature = metrics.fit_temperature(labels[select], sharp[select])
  assert 3.3 < temperature < 4.8
  calibrated = metrics.apply_temperature(sharp[test], temperature)
  before = metrics.expected_calibration_error(labels[test], sharp[test])
  after = metrics.expected_calibration_error(labels[test], calibrated)
  assert before > 0.1 and after < 0.04 and after < before / 3
  # The argmax, so the accuracy, never moves.
  np.testing.assert_array_equal(calibrated.argmax(1), sharp[test].argmax(1))
  # A minimum of the selection split's NLL, below the uncalibrated one.
  nll = lambda t: metrics.negative_log_likelihood(labels[select], sharp[select], t)
  assert nll(temperature) < nll(1.0)
  assert nll(temperature) <= min(nll(temperature * 1.05), nll(temperature / 1.05))


def test_temperature_of_a_calibrated_model_stays_near_one():
  labels, probs = _calibrated_problem(4000, seed=2)
  temperature = metrics.fit_temperature(labels, probs)
  assert 0.9 < temperature < 1.1
  # Under-confident (logits halved): the fitted temperature sharpens (< 1).
  assert metrics.fit_temperature(labels, _softmax(0.5 * np.log(probs))) == pytest.approx(0.5, rel=0.12)


def test_calibration_input_checks():
  with pytest.raises(ValueError, match="labels shape"):
    metrics.fit_temperature([0, 1, 2], np.full((2, 3), 1 / 3))
  with pytest.raises(ValueError, match="labels must be integers"):
    metrics.expected_calibration_error([0, 3], np.full((2, 3), 1 / 3))
  with pytest.raises(ValueError, match="num_bins"):
    metrics.reliability_bins([0], [[1.0, 0.0]], num_bins=0)
  # A probability that underflowed to 0 stays finite (clipped before its log).
  t = metrics.fit_temperature([0, 1], [[1.0, 0.0], [0.2, 0.8]])
  assert np.isfinite(t) and np.all(np.isfinite(metrics.apply_temperature([[1.0, 0.0]], t)))
  json.dumps({"t": t})


def test_save_reliability_diagram(tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  from lesion_jax.eval import figures  # pylint: disable=g-import-not-at-top
  labels, probs = _calibrated_problem(300, seed=3)
  sharp = _softmax(4.0 * np.log(probs))
  path = tmp_path / "reliability.png"
  figures.save_reliability_diagram(path, labels, {"raw": sharp, "T = 4": metrics.apply_temperature(sharp, 4.0)},
                                   title="toy")
  assert cv2.imread(str(path)) is not None
  figures.save_reliability_diagram(tmp_path / "one.png", labels, probs)
  assert cv2.imread(str(tmp_path / "one.png")) is not None
