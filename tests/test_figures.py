"""Tests for lesion_jax.eval.figures: every writer produces a decodable PNG."""
import os

import cv2
import numpy as np
import pytest

from lesion_jax.eval import figures


def _read_png(path):
  data = np.fromfile(path, np.uint8)
  image = cv2.imdecode(data, cv2.IMREAD_COLOR)
  assert image is not None, f"{path} is not a decodable image"
  assert image.shape[0] > 0 and image.shape[1] > 0
  assert not any(name.startswith(".tmp-") for name in os.listdir(os.path.dirname(path)))
  return image


def _sample(rng, h=32, w=40):
  image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
  pred = np.zeros((h, w), bool)
  pred[8:20, 10:25] = True
  true = np.zeros((h, w), bool)
  true[10:22, 12:28] = True
  return image, pred, true


def test_overlay_shape_dtype_and_untouched_pixels():
  rng = np.random.default_rng(0)
  image, pred, true = _sample(rng)
  out = figures.overlay(image, pred, true[..., None])
  assert out.shape == image.shape and out.dtype == np.uint8
  assert out is not image and not np.shares_memory(out, image)
  # Pixels more than 2 px from either mask are unchanged.
  near = cv2.dilate((pred | true).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
  np.testing.assert_array_equal(out[~near], image[~near])
  assert not np.array_equal(out[pred], image[pred])  # prediction is tinted
  assert (out[true ^ cv2.erode(true.astype(np.uint8), np.ones((3, 3))).astype(bool)]
          == figures.TRUE_COLOR).all(axis=-1).any()  # ground-truth contour drawn
  np.testing.assert_array_equal(figures.overlay(image), image)


def test_overlay_float_and_mismatch():
  out = figures.overlay(np.full((8, 8, 3), 0.5), np.ones((8, 8)))
  assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
  with pytest.raises(ValueError, match="resize"):
    figures.overlay(np.zeros((8, 8, 3), np.uint8), np.ones((4, 4)))


def test_save_overlay_grid_and_sample_grid(tmp_path):
  rng = np.random.default_rng(1)
  samples = [_sample(rng) for _ in range(3)] + [_sample(rng, 20, 20)]
  images, preds, trues = (list(x) for x in zip(*samples))
  path = tmp_path / "overlays.png"
  figures.save_overlay_grid(path, images, preds, trues, titles=["a", "b", "c", "d"], ncols=2)
  _read_png(path)
  figures.save_overlay_grid(tmp_path / "preds_only.png", images[:1], preds[:1])
  _read_png(tmp_path / "preds_only.png")
  path = tmp_path / "samples.png"
  normalized = [(im.astype(np.float32) - 128) / 64 for im in images]  # standardized inputs
  figures.save_sample_grid(path, normalized, masks=[t[..., None] for t in trues], ncols=8)
  _read_png(path)
  figures.save_sample_grid(tmp_path / "empty.png", [])
  _read_png(tmp_path / "empty.png")


def test_save_roc_curve(tmp_path):
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, 40)
  scores = np.clip(labels * 0.3 + rng.random(40) * 0.7, 0, 1)
  figures.save_roc_curve(tmp_path / "roc.png", labels, scores, label="melanoma")
  _read_png(tmp_path / "roc.png")
  figures.save_roc_curve(tmp_path / "roc_multi.png", {
      "a": (labels, scores), "b": (labels, rng.random(40)),
      "single class": (np.ones(5, int), rng.random(5))})
  _read_png(tmp_path / "roc_multi.png")
  figures.save_roc_curve(tmp_path / "roc_single.png", np.zeros(6, int), rng.random(6))
  _read_png(tmp_path / "roc_single.png")


def test_save_confusion_matrix(tmp_path):
  cm = [[5, 1, 0], [2, 7, 1], [0, 0, 0]]  # last class absent: row of zeros must not crash
  for normalize in (True, False):
    path = tmp_path / f"cm_{normalize}.png"
    figures.save_confusion_matrix(path, cm, ["mel", "nev", "sk"], normalize=normalize)
    _read_png(path)
  with pytest.raises(ValueError):
    figures.save_confusion_matrix(tmp_path / "bad.png", cm, ["a", "b"])


def test_save_curves_and_histogram(tmp_path):
  history = {"train/loss": [(s, 1.0 / (s + 1)) for s in range(0, 100, 10)],
             "val/jaccard": [(50, 0.6), (100, 0.7)], "val/empty": []}
  figures.save_curves(tmp_path / "curves.png", history, title="run")
  _read_png(tmp_path / "curves.png")
  figures.save_curves(tmp_path / "no_curves.png", {})
  _read_png(tmp_path / "no_curves.png")
  rng = np.random.default_rng(3)
  figures.save_histogram(tmp_path / "hist.png",
                         {"k-means": rng.random(30), "u-net": rng.beta(5, 1, 30),
                          "none": np.array([])}, xlabel="per-image Jaccard", bins=10)
  _read_png(tmp_path / "hist.png")
  figures.save_histogram(tmp_path / "hist_const.png", {"x": np.ones(4)}, xlabel="x")
  _read_png(tmp_path / "hist_const.png")
