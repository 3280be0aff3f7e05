"""Superpixel refinement of a segmenter's coarse lesion map (the superpixel-guided FCN paper).

The FCN's map is global and coarse at the border; superpixels follow the image's own contours.
For one image:

1. Region of interest: the box of the FCN's lesion (`prob > 0.5`), grown by `roi_margin` of its
   size on every side. Superpixels whose centroid lies outside it are background seeds.
2. Seeds inside it: superpixels whose mean FCN probability is >= `high` (lesion) or <= `low`
   (background); the rest are uncertain.
3. Propagation by graph-based manifold ranking (Zhou et al.; Yang et al. 2013) on the graph of
   adjacent superpixels, w_ij = exp(-||c_i - c_j|| / sigma) with c the mean CIE-Lab colour:
   F = (D - alpha W)^-1 Y, solved in closed form (a few hundred nodes), Y the one-hot seed
   labels of the two classes. Each class's ranking is divided by its seed count (class mass
   normalisation, so the class with more seeds does not win by mass), and an uncertain
   superpixel's local probability is F_lesion / (F_lesion + F_background); seeds keep their label.
4. Fusion: fused = w * local + (1 - w) * global (`fusion_weight`), binarised at its Otsu
   threshold, holes filled and the largest component kept.

An image without lesion seeds (the FCN found nothing confident) or without background seeds
keeps the global map (reported as `refined=False`). Defaults were chosen on training and
validation data only (README, "Superpixel refinement").
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lesion_jax.artifacts.superpixels import Superpixels
from lesion_jax.config import field
from lesion_jax.eval import postprocess


@dataclasses.dataclass(frozen=True)
class RefineConfig:
  alpha: float = field(0.99, "Manifold-ranking alpha in (0, 1): how far labels spread.")
  sigma: float = field(10.0, "Colour scale of the edge weights exp(-||Lab_i - Lab_j|| / sigma).")
  high: float = field(0.8, "Superpixels with mean FCN probability >= this seed the lesion.")
  low: float = field(0.2, "Superpixels with mean FCN probability <= this seed the background.")
  roi_margin: float = field(0.1, "Region of interest: the FCN lesion's box grown by this fraction.")
  fusion_weight: float = field(0.3, "Weight of the local (propagated) map; 1 - it of the FCN map.")

  def __post_init__(self):
    if not 0.0 < self.alpha < 1.0:
      raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
    if self.sigma <= 0:
      raise ValueError(f"sigma must be > 0, got {self.sigma}")
    if not 0.0 <= self.low < self.high <= 1.0:
      raise ValueError(f"need 0 <= low < high <= 1, got low={self.low}, high={self.high}")
    if not 0.0 <= self.fusion_weight <= 1.0:
      raise ValueError(f"fusion_weight must be in [0, 1], got {self.fusion_weight}")


@dataclasses.dataclass(frozen=True)
class Refinement:
  mask: np.ndarray  # bool (H, W): the final lesion mask
  local: np.ndarray  # float32 (H, W): the propagated superpixel map
  fused: np.ndarray  # float32 (H, W): the fused map that was thresholded
  threshold: float  # its Otsu threshold
  seeds: np.ndarray  # int8 (n,) per superpixel: 1 lesion seed, 0 background seed, -1 uncertain
  refined: bool  # False: no seeds of one class, the global map was kept


def affinity(mean_lab: np.ndarray, edges: np.ndarray, sigma: float) -> np.ndarray:
  """Symmetric (n, n) weights of the superpixel graph: exp(-||c_i - c_j|| / sigma) on edges."""
  n = mean_lab.shape[0]
  w = np.zeros((n, n))
  if len(edges):
    i, j = edges[:, 0], edges[:, 1]
    d = np.linalg.norm(mean_lab[i].astype(np.float64) - mean_lab[j], axis=1)
    w[i, j] = w[j, i] = np.exp(-d / sigma)
  return w


def manifold_ranking(weights: np.ndarray, seeds: np.ndarray, alpha: float) -> np.ndarray:
  """Closed-form ranking F = (D - alpha W)^-1 Y for one-hot seed columns Y (n, k); returns F (n, k).

  D - alpha W is strictly diagonally dominant for alpha < 1 wherever a node has an edge; an
  isolated node gets D = 1, so it keeps exactly its own seed value."""
  w = np.asarray(weights, np.float64)
  degree = w.sum(1)
  degree = np.where(degree > 0, degree, 1.0)
  return np.linalg.solve(np.diag(degree) - alpha * w, np.asarray(seeds, np.float64))


def propagate_labels(weights: np.ndarray, seeds: np.ndarray, alpha: float) -> np.ndarray:
  """Lesion probability per node from seed labels (1 lesion, 0 background, -1 uncertain): seeds
  keep theirs, the others get F_1 / (F_0 + F_1) of `manifold_ranking` with each column divided
  by its seed count. Needs at least one seed of each class."""
  seeds = np.asarray(seeds)
  y = np.stack([seeds == 0, seeds == 1], 1).astype(np.float64)
  counts = y.sum(0)
  if (counts == 0).any():
    raise ValueError(f"propagation needs seeds of both classes, got {int(counts[1])} lesion and "
                     f"{int(counts[0])} background seeds")
  f = manifold_ranking(weights, y, alpha) / counts
  total = f.sum(1)
  prob = np.divide(f[:, 1], total, out=np.full(total.shape, 0.5), where=total > 1e-300)
  return np.where(seeds >= 0, seeds, prob).astype(np.float64)


def roi_box(prob: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
  """(y0, y1, x0, x1) of the FCN lesion (prob > 0.5) grown by `margin`; None when it is empty."""
  lesion = prob > 0.5
  if not lesion.any():
    return None
  return postprocess.mask_bbox(lesion, margin)


def seed_labels(mean_prob: np.ndarray, centroid: np.ndarray, box, config: RefineConfig) -> np.ndarray:
  """int8 (n,): 1 lesion seed, 0 background seed, -1 uncertain (see the module docstring)."""
  seeds = np.full(mean_prob.shape, -1, np.int8)
  seeds[mean_prob >= config.high] = 1
  seeds[mean_prob <= config.low] = 0
  if box is not None:
    y0, y1, x0, x1 = box
    inside = ((centroid[:, 0] >= y0) & (centroid[:, 0] < y1) & (centroid[:, 1] >= x0) &
              (centroid[:, 1] < x1))
    seeds[~inside] = 0
  return seeds


def refine(prob: np.ndarray, superpixels: Superpixels, config: RefineConfig = RefineConfig()
           ) -> Refinement:
  """Refines a (H, W) lesion probability map (at the superpixels' resolution) on them."""
  p = np.asarray(prob, np.float64)
  if p.shape != superpixels.labels.shape:
    raise ValueError(f"probability map {p.shape} and superpixel labels {superpixels.labels.shape} "
                     "differ in size; resize the map first (postprocess.resize_prob)")
  mean_prob = superpixels.mean_of(p)
  seeds = seed_labels(mean_prob, superpixels.centroid, roi_box(p, config.roi_margin), config)
  refined = bool((seeds == 1).any() and (seeds == 0).any())
  if refined:
    w = affinity(superpixels.mean_lab, superpixels.edges, config.sigma)
    local = superpixels.paint(propagate_labels(w, seeds, config.alpha)).astype(np.float32)
    fused = (config.fusion_weight * local + (1.0 - config.fusion_weight) * p).astype(np.float32)
  else:
    local = fused = p.astype(np.float32)
  threshold = postprocess.otsu_threshold(fused) if refined else 0.5
  mask = postprocess.clean_mask(fused > threshold)
  return Refinement(mask, local, fused, float(threshold), seeds, refined)
