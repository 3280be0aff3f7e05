"""Tests for the classical colour baseline's features (lesion_jax/eval/colour_features.py) and its
model selection (eval/abcd.py select_and_fit with histogram gradient boosting)."""
import numpy as np
import pytest

from lesion_jax.eval import abcd, colour_features


def _features(image):
  return dict(zip(colour_features.FEATURE_NAMES, colour_features.colour_features(image)))


def test_colour_features_of_a_flat_and_a_centred_image():
  assert len(set(colour_features.FEATURE_NAMES)) == len(colour_features.FEATURE_NAMES)
  red = np.zeros((40, 60, 3), np.uint8)
  red[..., 0] = 255
  f = _features(red)
  assert f["red_mean"] == 255 and f["red_std"] == 0 and f["green_p95"] == 0
  assert f["hue_cos"] == pytest.approx(1.0) and f["hue_sin"] == pytest.approx(0.0, abs=1e-12)
  assert f["hue_concentration"] == pytest.approx(1.0) and f["saturation_mean"] == 255
  assert f["rgb_hist_300"] == 1.0 and f["centre_minus_surround_lab_a"] == 0
  # A grey image has no hue direction at all.
  grey = _features(np.full((40, 60, 3), 128, np.uint8))
  assert grey["hue_concentration"] == 0 and grey["saturation_mean"] == 0
  # A dark brown lesion in the middle of pale skin: darker centre, the lesion's share of pixels.
  skin = np.full((40, 60, 3), (230, 190, 170), np.uint8)
  skin[10:30, 15:45] = (90, 50, 30)
  f = _features(skin)
  assert f["centre_minus_surround_lab_l"] < -100 and f["centre_lab_l"] == pytest.approx(f["lab_l_p5"])
  assert f["rgb_hist_100"] == pytest.approx(20 * 30 / (40 * 60))  # (90, 50, 30) // 64 = (1, 0, 0)
  # Scale-free: the same photograph at twice the resolution has the same features.
  np.testing.assert_allclose(colour_features.colour_features(np.repeat(np.repeat(skin, 2, 0), 2, 1)),
                             colour_features.colour_features(skin), atol=1e-9)
  # The per-channel statistics are numpy's (percentiles by the inverted CDF) of its pixels.
  import cv2  # pylint: disable=g-import-not-at-top
  noisy = np.random.default_rng(1).integers(0, 256, (37, 23, 3), dtype=np.uint8)
  f = _features(noisy)
  lab_a = cv2.cvtColor(noisy, cv2.COLOR_RGB2LAB)[..., 1].astype(np.float64)
  assert f["lab_a_mean"] == pytest.approx(lab_a.mean()) and f["lab_a_std"] == pytest.approx(lab_a.std())
  for q in colour_features.PERCENTILES:
    assert f[f"lab_a_p{q}"] == np.percentile(lab_a, q, method="inverted_cdf"), q
  with pytest.raises(ValueError, match="uint8 RGB"):
    colour_features.colour_features(skin.astype(np.float32))


def test_hist_gradient_boosting_is_chosen_by_k_fold_on_colour_features():
  # Three classes told apart by hue alone (one of them by a hue between the other two, so no
  # single monotone feature separates them all: trees do it, a linear model less well).
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1, 2], 40)
  hues = {0: (200, 80, 60), 1: (120, 60, 140), 2: (60, 120, 200)}
  images = []
  for y in labels:
    image = np.clip(np.array(hues[int(y)]) + rng.normal(0, 35, (16, 16, 3)), 0, 255).astype(np.uint8)
    images.append(image)
  table = colour_features.feature_table(images)
  assert table.shape == (120, len(colour_features.FEATURE_NAMES))
  model, report = abcd.select_and_fit(table, labels, "hist_gradient_boosting", folds=3)
  assert set(report["cv_roc_auc"]) == {n for n in abcd.candidates() if n.startswith("hist_gradient_boosting_")}
  assert report["chosen"] in report["cv_roc_auc"] and report["cv_roc_auc"][report["chosen"]] > 0.95
  assert report["cv_probs"].shape == (120, 3)
  assert (model.predict(table) == labels).mean() > 0.95
  with pytest.raises(ValueError, match="hist_gradient_boosting"):
    abcd.select_and_fit(table, labels, "forest", folds=3)
