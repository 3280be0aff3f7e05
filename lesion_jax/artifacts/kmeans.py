"""Self-learning annotation: K-means (k=5) pseudo-masks with an automatic polarity rule.

For each image (the self-learning framework paper):
1. Field of view: the dermoscope's dark vignette (dark pixels connected to the image corners) is
   background and takes no part in clustering.
2. Spatial K-means: k=5 clusters on CIE-Lab colour plus pixel coordinates weighted by
   `coord_weight`. Fitted on a regular grid of pixels, then every pixel is assigned to its nearest
   centre. The fit is a batched JAX computation (one jit for a whole batch of images).
3. Merge five clusters into two regions, with the polarity chosen automatically (the paper
   inverted wrong masks by hand): clusters are ordered by lightness L*; each split "darkest j vs
   the rest", taken either way round, is a candidate lesion, cleaned (holes filled, main
   component kept) and scored by its Otsu separation of L* minus how much of the field-of-view
   border it touches, with a small bonus for the darker side. The dermoscope's dark vignette
   never counts as lesion.
4. The decision is flagged `uncertain` (for a user to inspect) when the best candidate of the
   other polarity scores nearly as well, when the lesion is implausibly small or large, or
   when the colour separation is weak.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax.eval import postprocess


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
  k: int = 5
  iterations: int = 20
  coord_weight: float = 0.0  # weight of (row, col) features (spatial K-means); 0 = colour only
  hair_filter: float = 0.02  # closing radius (fraction of the side) that erases hairs; 0 = off
  work_size: int = 128  # images are clustered at this square size; masks are resized back
  fit_points: int = 4096  # K-means is fitted on a regular grid of about this many pixels
  score_size: int = 64  # candidate lesions are scored at this resolution (the winner at full)
  vignette_lightness: float = 20.0  # L* below which corner-connected pixels are vignette
  border_band: float = 0.04  # width of the field-of-view border band, fraction of the side
  border_penalty: float = 4.0  # how strongly components along the border are discounted
  area_weight: float = 0.6  # favours the more inclusive split (lesions have lighter rims)
  darkness_bonus: float = 0.1  # score advantage of the darker side (lesions are usually darker)
  uncertain_margin: float = 0.25  # score gap to the best opposite-polarity candidate
  min_area: float = 0.01  # lesion fraction of the field of view outside [min, max] is uncertain
  max_area: float = 0.8
  min_separation: float = 0.35  # Otsu separation (fraction of L* variance) below which uncertain

  @property
  def version(self) -> str:
    """Names these parameters in artifact paths, so different settings never mix: the main ones
    readably, all of them through a hash."""
    digest = hashlib.sha1(repr(dataclasses.astuple(self)).encode()).hexdigest()[:8]
    return f"k{self.k}-xy{self.coord_weight:g}-s{self.work_size}-{digest}"


# ----------------------------------------------------------------------------------------------
# Host-side preparation (OpenCV releases the GIL, so a thread pool parallelises it)


def to_lab(image_uint8: np.ndarray, size: int, hair_filter: float = 0.0) -> np.ndarray:
  """RGB uint8 (H, W, 3) → float32 CIE-Lab (size, size, 3): L* in [0, 100], a*, b* in ~[-128, 127].

  `hair_filter` > 0 applies a greyscale morphological closing with a disc of that fraction of the
  side first, which erases thin dark hairs (as DullRazor does) so they do not join the lesion.
  """
  image = cv2.resize(image_uint8, (size, size), interpolation=cv2.INTER_AREA)
  if hair_filter > 0:
    r = max(1, round(hair_filter * size))
    image = cv2.morphologyEx(image, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
  return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def field_of_view(lab: np.ndarray, vignette_lightness: float) -> np.ndarray:
  """bool (H, W): True inside the dermoscope's field of view. Vignette = dark pixels connected
  to any image corner (a dark lesion in the middle is not connected to a corner)."""
  dark = (lab[..., 0] < vignette_lightness).astype(np.uint8)
  h, w = dark.shape
  n, labels = cv2.connectedComponents(dark, connectivity=8)
  corner_labels = {labels[0, 0], labels[0, w - 1], labels[h - 1, 0], labels[h - 1, w - 1]}
  vignette = np.isin(labels, [c for c in corner_labels if c != 0]) if n > 1 else np.zeros_like(dark, bool)
  fov = ~vignette
  if fov.mean() < 0.2:  # a very dark image, not a vignette: use the whole frame
    fov = np.ones_like(fov)
  return fov


def planar_features(lab: jax.Array, coord_weight: float) -> jax.Array:
  """(B, H, W, 3) Lab → (B, 5, H, W) planes: L*, a*, b*, and row/col scaled so the image side
  spans 100·coord_weight. Planar layout: the K-means below is written as elementwise loops over
  the few clusters and channels, which XLA fuses; as matmuls with K=5 it is ~20× slower on CPU."""
  b, h, w, _ = lab.shape
  rows = jnp.broadcast_to(jnp.linspace(0.0, 100.0 * coord_weight, h)[:, None], (b, h, w))
  cols = jnp.broadcast_to(jnp.linspace(0.0, 100.0 * coord_weight, w)[None, :], (b, h, w))
  return jnp.concatenate([jnp.moveaxis(lab, -1, 1), rows[:, None], cols[:, None]], axis=1)


def nearest_centre(x: jax.Array, centres: jax.Array) -> jax.Array:
  """x (D, ...) planes, centres (k, D) → index of the nearest centre per point (...)."""
  best = arg = None
  for j in range(centres.shape[0]):
    d = sum((x[i] - centres[j, i]) ** 2 for i in range(x.shape[0]))
    if best is None:
      best, arg = d, jnp.zeros(d.shape, jnp.int32)
    else:
      closer = d < best
      best, arg = jnp.where(closer, d, best), jnp.where(closer, j, arg)
  return arg


def _init_centres(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
  """Deterministic initialisation: field-of-view points at k evenly spaced L* quantiles.
  x (D, N), w (N,) → (k, D)."""
  order = jnp.argsort(jnp.where(w > 0, x[0], jnp.inf))
  count = jnp.maximum(jnp.sum(w > 0), 1)
  ranks = ((jnp.arange(k) + 0.5) / k * count).astype(jnp.int32)
  return x[:, order[ranks]].T


def _kmeans_one(x: jax.Array, w: jax.Array, k: int, iterations: int) -> jax.Array:
  """Lloyd iterations on points x (D, N) with weights w (N,) (0 = ignore) → centres (k, D)."""

  def step(_, c):
    arg = nearest_centre(x, c)
    rows = []
    for j in range(k):
      m = jnp.where(arg == j, w, 0.0)
      n = m.sum()
      rows.append(jnp.where(n > 0, jnp.sum(x * m, axis=1) / jnp.maximum(n, 1e-9), c[j]))
    return jnp.stack(rows)

  return jax.lax.fori_loop(0, iterations, step, _init_centres(x, w, k))


@functools.partial(jax.jit, static_argnames=("k", "iterations", "fit_points", "coord_weight"))
def cluster_batch(lab: jax.Array, fov: jax.Array, *, k: int, iterations: int, fit_points: int,
                  coord_weight: float) -> jax.Array:
  """Lab images (B, S, S, 3) and fields of view (B, S, S) → cluster index per pixel (B, S, S),
  -1 outside the field of view. K-means is fitted on a regular grid of about `fit_points`
  pixels per image, then every pixel is assigned to its nearest centre."""
  b, size = lab.shape[0], lab.shape[1]
  x = planar_features(lab, coord_weight)
  step = max(1, int(round(size / fit_points ** 0.5)))
  grid = x[:, :, ::step, ::step].reshape(b, x.shape[1], -1)
  grid_w = fov[:, ::step, ::step].reshape(b, -1).astype(jnp.float32)
  centres = jax.vmap(lambda a, w: _kmeans_one(a, w, k, iterations))(grid, grid_w)
  labels = jax.vmap(nearest_centre)(x, centres)
  return jnp.where(fov, labels, -1)


# ----------------------------------------------------------------------------------------------
# Merging clusters and choosing the polarity (host side)


@dataclasses.dataclass(frozen=True)
class PseudoMask:
  mask: np.ndarray  # bool (H, W) at the image's own resolution
  uncertain: bool
  reasons: tuple[str, ...]
  facts: dict[str, Any]  # numbers behind the decision, stored with the artifact


def _separations(lightness: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """Otsu separation (between-class / total variance of L*, in [0, 1]) of 'darkest j clusters vs
  the rest' for j = 1..k-1; clusters must be sorted by lightness."""
  total = sizes.sum()
  mean = (lightness * sizes).sum() / total
  var = (sizes * (lightness - mean) ** 2).sum() / total
  out = np.zeros(len(lightness) - 1)
  for j in range(1, len(lightness)):
    n0, n1 = sizes[:j].sum(), sizes[j:].sum()
    if n0 == 0 or n1 == 0 or var <= 0:
      continue
    m0 = (lightness[:j] * sizes[:j]).sum() / n0
    m1 = (lightness[j:] * sizes[j:]).sum() / n1
    out[j - 1] = (n0 / total) * (n1 / total) * (m0 - m1) ** 2 / var
  return out


def _border_band(fov: np.ndarray, width: int) -> np.ndarray:
  """Pixels of the field of view within `width` px of its edge (the image edge counts as edge)."""
  padded = np.pad(fov.astype(np.uint8), 1)
  inner = cv2.erode(padded, np.ones((2 * width + 1, 2 * width + 1), np.uint8))[1:-1, 1:-1]
  return fov & ~inner.astype(bool)


def lesion_component(region: np.ndarray, band: np.ndarray, border_penalty: float) -> np.ndarray:
  """The connected component of `region` (holes filled) most likely to be the lesion: the largest
  after discounting components that lie along the field-of-view border, where shadows, vignette
  fall-off and stickers sit: score = area · (1 − fraction of the component inside the border
  band)^border_penalty. A large lesion that touches the border keeps most of its score."""
  filled = postprocess.fill_holes(region)
  n, labels, stats, _ = cv2.connectedComponentsWithStats(filled.astype(np.uint8), connectivity=8)
  if n <= 2:
    return filled
  in_band = np.bincount(labels[band], minlength=n)
  areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
  scores = areas * (1.0 - in_band / np.maximum(areas, 1)) ** border_penalty
  scores[0] = -1.0  # background
  return labels == int(np.argmax(scores))


def merge_clusters(labels: np.ndarray, lab: np.ndarray, fov: np.ndarray, config: KMeansConfig
                   ) -> tuple[np.ndarray, bool, tuple[str, ...], dict[str, Any]]:
  """Cluster map (H, W) → (lesion mask, uncertain, reasons, facts) at the working resolution.

  Every split "darkest j clusters vs the rest" gives two candidate lesions (either side). Each is
  cleaned (holes filled, main component kept) and scored
      separation(j) − border_contact + darkness_bonus·[it is the darker side],
  where border_contact is the fraction of the field-of-view border band it covers: the lesion
  is the colour-coherent region that lies inside the field of view. The best candidate wins.
  """
  k = config.k
  sizes = np.array([(labels == c).sum() for c in range(k)], np.float64)
  lightness = np.array([lab[..., 0][labels == c].mean() if sizes[c] else np.inf for c in range(k)])
  order = np.argsort(lightness)[: int((sizes > 0).sum())]
  if len(order) < 2:
    return np.zeros_like(fov), True, ("fewer than two colour clusters",), {"separation": 0.0}
  separations = _separations(lightness[order], sizes[order])
  # Score candidates on a strided copy (cheap); only the winner is cleaned at full resolution.
  stride = max(1, labels.shape[0] // config.score_size)
  small_labels, small_fov = labels[::stride, ::stride], fov[::stride, ::stride]
  band = _border_band(small_fov, max(1, round(config.border_band * small_labels.shape[0])))
  band_total = max(band.sum(), 1)
  fov_total = max(small_fov.sum(), 1)
  candidates = []
  for j in range(1, len(order)):
    dark = np.isin(small_labels, order[:j])
    for polarity, region in (("dark", dark), ("light", small_fov & ~dark)):
      cleaned = lesion_component(region & small_fov, band, config.border_penalty)
      contact = (cleaned & band).sum() / band_total
      area = cleaned.sum() / fov_total
      score = (separations[j - 1] - contact + config.area_weight * area
               + (config.darkness_bonus if polarity == "dark" else 0.0))
      if not config.min_area <= area <= config.max_area:
        score -= 1.0  # implausible sizes only win when nothing else is possible
      candidates.append((score, polarity, j, contact, area))
  candidates.sort(key=lambda c: -c[0])
  score, polarity, j, contact, area = candidates[0]
  rival = next(c for c in candidates if c[1] != polarity)  # best candidate of the other polarity
  dark = np.isin(labels, order[:j])
  full_band = _border_band(fov, max(1, round(config.border_band * labels.shape[0])))
  mask = lesion_component((dark if polarity == "dark" else ~dark) & fov, full_band, config.border_penalty)
  separation = separations[j - 1]
  reasons = []
  if score - rival[0] < config.uncertain_margin:
    reasons.append(f"polarity margin {score - rival[0]:.2f} < {config.uncertain_margin}")
  if not config.min_area <= area <= config.max_area:
    reasons.append(f"lesion covers {area:.0%} of the field of view")
  if separation < config.min_separation:
    reasons.append(f"weak colour separation ({separation:.2f})")
  facts = {"polarity": polarity, "dark_clusters": int(j), "separation": round(float(separation), 4),
           "score": round(float(score), 4), "rival_score": round(float(rival[0]), 4),
           "border_contact": round(float(contact), 4), "area_fraction": round(float(area), 4),
           "fov_fraction": round(float(fov.mean()), 4)}
  return mask, bool(reasons), tuple(reasons), facts


# ----------------------------------------------------------------------------------------------
# Public entry point


def kmeans_pseudo_masks(images: list[np.ndarray], config: KMeansConfig = KMeansConfig(),
                        pool=None) -> list[PseudoMask]:
  """Pseudo lesion masks for a batch of uint8 RGB images (any sizes); one jitted K-means call.

  `pool`: an optional concurrent.futures executor for the per-image OpenCV work.
  """
  if not images:
    return []
  size = config.work_size
  run = pool.map if pool is not None else map
  labs = list(run(lambda im: to_lab(im, size, config.hair_filter), images))
  fovs = list(run(lambda lab: field_of_view(lab, config.vignette_lightness), labs))
  # Pad the batch to a power of two so a dataset's ragged last batch reuses a compiled shape.
  padded = 1 << (len(labs) - 1).bit_length()
  lab_batch = np.stack(labs + [labs[-1]] * (padded - len(labs)))
  fov_batch = np.stack(fovs + [fovs[-1]] * (padded - len(fovs)))
  labels = np.asarray(cluster_batch(jnp.asarray(lab_batch), jnp.asarray(fov_batch), k=config.k,
                                    iterations=config.iterations, fit_points=config.fit_points,
                                    coord_weight=config.coord_weight))[: len(labs)]

  def finish(i: int) -> PseudoMask:
    mask, uncertain, reasons, facts = merge_clusters(labels[i], labs[i], fovs[i], config)
    h, w = images[i].shape[:2]
    full = postprocess.resize_mask(mask, h, w) if (h, w) != mask.shape else mask
    return PseudoMask(full, uncertain, reasons, facts)

  return list(run(finish, range(len(images))))


def kmeans_pseudo_mask(image: np.ndarray, config: KMeansConfig = KMeansConfig()) -> PseudoMask:
  """The pseudo mask of one image (see `kmeans_pseudo_masks` for batches)."""
  return kmeans_pseudo_masks([image], config)[0]
