"""Lesion Index Calculation Unit (LICU) of the Lesion Indexing Network (Li and Shen 2018).

The FCRNs' per-pixel class maps (summed over networks and test scales) give, for every lesion
pixel, a score per lesion class. The LICU turns them into one index per class:

1. eq. 1: per pixel, each lesion class's score divided by the sum of the lesion classes' scores
   (background excluded), so every lesion pixel votes with a distribution over the classes;
2. each lesion pixel is weighted by its Euclidean distance to the lesion border (the distance
   transform of the lesion mask): pixels near the border, where segmentation and classification
   are least reliable, weigh less than those at the centre;
3. the index of class c is the weighted mean of its normalised score over the lesion.

`mean_index` is the same without the LICU (no eq. 1 per pixel and no weights: the class scores
averaged over the lesion, then normalised), the paper's baseline in Table V. An empty lesion mask
uses the whole image with uniform weights (nothing better is known about where the lesion is).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _check(maps: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  m = np.asarray(maps, np.float64)
  lesion = np.asarray(mask, bool)
  if m.ndim != 3 or m.shape[-1] < 2:
    raise ValueError(f"class maps must be (H, W, 1 + classes) with background first, got {m.shape}")
  if lesion.shape != m.shape[:2]:
    raise ValueError(f"mask {lesion.shape} does not match the class maps {m.shape[:2]}")
  if (m < 0).any():
    raise ValueError("class maps must be non-negative (probabilities, or sums of them)")
  return m, lesion


def normalize_class_maps(maps: np.ndarray) -> np.ndarray:
  """eq. 1: (H, W, K) lesion-class scores, each pixel's divided by their sum over the K lesion
  classes (`maps` (H, W, 1 + K), background first; a pixel with no lesion score gets 1/K)."""
  m = np.asarray(maps, np.float64)[..., 1:]
  total = m.sum(-1, keepdims=True)
  return np.divide(m, total, out=np.full(m.shape, 1.0 / m.shape[-1]), where=total > 0)


def border_distance_weights(mask: np.ndarray) -> np.ndarray:
  """(H, W) weights summing to 1 over the lesion: each lesion pixel's Euclidean distance to the
  nearest non-lesion pixel (outside the image counts as non-lesion), 0 outside; uniform over the
  image when the mask is empty."""
  lesion = np.asarray(mask, bool)
  if not lesion.any():
    return np.full(lesion.shape, 1.0 / lesion.size)
  distance = ndimage.distance_transform_edt(np.pad(lesion, 1))[1:-1, 1:-1]
  return distance / distance.sum()


def lesion_index(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The LICU: (K,) index per lesion class, summing to 1."""
  m, lesion = _check(maps, mask)
  weights = border_distance_weights(lesion)
  return np.einsum("hw,hwk->k", weights, normalize_class_maps(m))


def mean_index(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Without the LICU: (K,) lesion-class scores averaged over the lesion, normalised to sum to 1."""
  m, lesion = _check(maps, mask)
  region = lesion if lesion.any() else np.ones_like(lesion)
  scores = m[region][:, 1:].mean(0)
  total = scores.sum()
  return scores / total if total > 0 else np.full(scores.shape, 1.0 / scores.size)
