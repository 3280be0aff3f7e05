"""Colour statistics of a whole dermoscopy image, no mask needed: the features of the classical
baseline a network has to beat (an image network below it is not learning from the images' shapes
and textures, only from their colours).

Per image, at its own resolution:
  * per channel of RGB, CIE Lab (OpenCV's 8-bit scaling) and HSV's saturation and value: the mean,
    standard deviation and the 5th, 25th, 50th, 75th and 95th percentiles (each the smallest
    8-bit value whose cumulative share of the pixels reaches it);
  * hue, which is circular: the saturation-weighted mean direction (cos, sin) and its resultant
    length (1: one hue, 0: spread all round);
  * the lesion is usually near the centre of a dermoscopy photograph, the skin around it: the Lab
    means of the central region (the middle half of each side), of the rest, and their difference;
  * a coarse joint RGB histogram (4 levels per channel, 64 fractions summing to 1).
Every feature is scale-free (statistics and fractions), so images of any size compare.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

PERCENTILES = (5, 25, 50, 75, 95)
CHANNELS = ("red", "green", "blue", "lab_l", "lab_a", "lab_b", "saturation", "value")
HISTOGRAM_LEVELS = 4  # per RGB channel: 4 ** 3 = 64 joint bins
_STATS = ("mean", "std", *(f"p{q}" for q in PERCENTILES))
FEATURE_NAMES = (tuple(f"{c}_{s}" for c in CHANNELS for s in _STATS)
                 + ("hue_cos", "hue_sin", "hue_concentration")
                 + tuple(f"{region}_{c}" for region in ("centre", "surround", "centre_minus_surround")
                         for c in ("lab_l", "lab_a", "lab_b"))
                 + tuple(f"rgb_hist_{r}{g}{b}" for r in range(HISTOGRAM_LEVELS) for g in range(HISTOGRAM_LEVELS)
                         for b in range(HISTOGRAM_LEVELS)))


def colour_features(image: np.ndarray) -> np.ndarray:
  """The FEATURE_NAMES vector (float64) of one uint8 RGB image (H, W, 3)."""
  rgb = np.asarray(image)
  if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
    raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {rgb.dtype} {rgb.shape}")
  h, w = rgb.shape[:2]
  if h < 2 or w < 2:
    raise ValueError(f"image of {h}x{w} px: too small for centre and surround statistics")
  lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
  hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)  # hue over 0-255 for the full circle
  channels = np.concatenate([rgb, lab, hsv[..., 1:]], axis=-1).reshape(-1, len(CHANNELS))
  stats = np.concatenate([_channel_statistics(channels[:, k]) for k in range(len(CHANNELS))])
  # Hue by its 256 levels, each weighted by the saturation of its pixels (a grey pixel has no hue).
  weight = np.bincount(hsv[..., 0].reshape(-1), weights=hsv[..., 1].reshape(-1).astype(np.float64), minlength=256)
  total = weight.sum()
  angle = np.arange(256) * (2 * np.pi / 256)
  if total > 0:  # a grey image has no hue: all three 0
    hue_cos, hue_sin = float(weight @ np.cos(angle) / total), float(weight @ np.sin(angle) / total)
  else:
    hue_cos = hue_sin = 0.0
  hue = [hue_cos, hue_sin, float(np.hypot(hue_cos, hue_sin))]
  top, left = h // 4, w // 4
  middle = lab[top:h - top, left:w - left].reshape(-1, 3)
  centre_sum = middle.sum(0, dtype=np.float64)
  inner = centre_sum / middle.shape[0]
  outer = (lab.reshape(-1, 3).sum(0, dtype=np.float64) - centre_sum) / (h * w - middle.shape[0])
  bins = rgb.reshape(-1, 3) // (256 // HISTOGRAM_LEVELS)
  joint = (bins[:, 0].astype(np.int64) * HISTOGRAM_LEVELS + bins[:, 1]) * HISTOGRAM_LEVELS + bins[:, 2]
  histogram = np.bincount(joint, minlength=HISTOGRAM_LEVELS ** 3) / joint.shape[0]
  return np.concatenate([stats, hue, inner, outer, inner - outer, histogram])


def _channel_statistics(values: np.ndarray) -> np.ndarray:
  """Mean, standard deviation and PERCENTILES of one uint8 channel, from its 256-bin histogram
  (ten times faster than sorting a photograph's pixels). A percentile q is the smallest value
  whose cumulative share reaches q % (numpy's "inverted_cdf"), exact for 8-bit values."""
  counts = np.bincount(values, minlength=256).astype(np.float64)
  levels = np.arange(256, dtype=np.float64)
  n = counts.sum()
  mean = float(levels @ counts / n)
  std = float(np.sqrt(max((levels ** 2) @ counts / n - mean ** 2, 0.0)))
  cumulative = np.cumsum(counts) / n
  # searchsorted "left": the first level whose cumulative share is >= q (a tiny tolerance keeps
  # a share of exactly q, e.g. 0.25 of 4 pixels, from rounding just below it).
  percentiles = np.searchsorted(cumulative, np.asarray(PERCENTILES) / 100.0 - 1e-12, side="left")
  return np.array([mean, std, *percentiles.astype(np.float64)])


def feature_table(images: Sequence[np.ndarray]) -> np.ndarray:
  """(N, len(FEATURE_NAMES)) float64 of uint8 RGB images."""
  return np.stack([colour_features(im) for im in images]) if len(images) else np.zeros((0, len(FEATURE_NAMES)))
