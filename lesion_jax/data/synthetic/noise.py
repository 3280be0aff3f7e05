"""Noise and texture fields, the supersampled raster helpers, and the skin they make up.

The building blocks every layer draws with: smooth band-limited noise, a Voronoi honeycomb
(pigment and negative networks), smoothstep, pixel-centre grids, and the supersample-then-area-
average helpers that give hard shapes anti-aliased coverage. `render_skin` is the first layer,
built from nothing but these fields. None of them knows about lesions or classes.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
  """Hermite step from 0 at edge0 to 1 at edge1 (edge0 > edge1 gives a falling step)."""
  t = np.clip((x - edge0) * (1.0 / (edge1 - edge0)), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


@functools.lru_cache(maxsize=8)
def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates as broadcastable (S, 1) and (1, S) arrays; cached per size."""
  c = np.arange(size, dtype=np.float32) + 0.5
  y, x = c[:, None].copy(), c[None, :].copy()
  y.flags.writeable = False
  x.flags.writeable = False
  return y, x


def child(rng: np.random.Generator) -> np.random.Generator:
  """A generator for a draw whose size depends on the image size.

  It takes one number from `rng` whatever the size, so later draws from `rng` (positions of
  dots, cysts, ...) are the same at every image size.
  """
  return np.random.default_rng(int(rng.integers(2**63)))


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Zero-mean, roughly unit-variance noise with blobs about size / cells px across."""
  cells = max(int(cells), 2)
  # White noise on a grid 4x finer than the features, blurred there and then upsampled:
  # upsampling a coarse grid directly (value noise) leaves axis-aligned blocky artefacts.
  n = min(4 * cells, size)
  sigma = n / (2.0 * cells)
  pad = int(math.ceil(2 * sigma))
  grid = child(rng).standard_normal((n + 2 * pad, n + 2 * pad), dtype=np.float32)
  grid = cv2.GaussianBlur(grid, (0, 0), sigma)[pad:pad + n, pad:pad + n]
  field = grid if n == size else cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
  # Blurred unit white noise has standard deviation 1 / (2 sqrt(pi) sigma).
  return field * np.float32(2.0 * math.sqrt(math.pi) * sigma)


def canvas_points(points: np.ndarray, factor: int) -> np.ndarray:
  """Output-pixel coordinates (x, y) -> fixed-point (shift=4) coordinates on a factor x canvas."""
  return np.round((np.asarray(points, np.float64) * factor - 0.5) * 16.0).astype(np.int32)


def downsample(canvas: np.ndarray, size: int) -> np.ndarray:
  """Area-averages a supersampled uint8 canvas to size x size float32 values in [0, 1]."""
  small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
  return small.astype(np.float32) * np.float32(1.0 / 255.0)


def worley_edge_distance(rng: np.random.Generator, size: int, cell: float, jitter: float,
                         warp: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
  """Distance (px) to the nearest Voronoi boundary of jittered grid seeds: a honeycomb.

  `warp` = (dy, dx) px offsets (S, S) of the lookup position bends the cell walls (serpiginous
  lines); without it the result is what it always was.
  """
  g = int(math.ceil(size / cell)) + 3
  idx = np.arange(g, dtype=np.float32) - 1.0
  seeds = np.stack(np.meshgrid(idx, idx, indexing="ij"), axis=-1) + 0.5
  seeds[1::2, :, 1] += 0.5  # staggered rows: hexagonal cells, not a square plaid
  seeds = (seeds + jitter * (child(rng).random((g, g, 2), dtype=np.float32) - 0.5)) * np.float32(
      cell)
  y, x = pixel_centres(size)
  if warp is not None:
    y, x = y + warp[0], x + warp[1]
  ci = (y / cell).astype(np.int32) + 1
  cj = (x / cell).astype(np.int32) + 1
  if warp is not None:
    ci, cj = np.clip(ci, 1, g - 2), np.clip(cj, 1, g - 2)
  d1 = np.full((size, size), np.inf, np.float32)
  d2 = np.full((size, size), np.inf, np.float32)
  for di in (-1, 0, 1):
    for dj in (-1, 0, 1):
      p = seeds[ci + di, cj + dj]
      d = np.hypot(p[..., 0] - y, p[..., 1] - x)
      d2 = np.minimum(d2, np.maximum(d1, d))
      d1 = np.minimum(d1, d)
  return 0.5 * (d2 - d1)


def disc_coverage(size: int, factor: int, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
  """Anti-aliased coverage of filled discs (output-px centres (x, y) and radii)."""
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  pts = canvas_points(centres, factor)
  rr = np.round(np.asarray(radii) * factor * 16.0).astype(np.int64)
  for (cx, cy), r in zip(pts, rr):
    cv2.circle(canvas, (int(cx), int(cy)), max(int(r), 8), 255, -1, cv2.LINE_AA, 4)
  return downsample(canvas, size)


def render_skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float, float]:
  """Skin of a random tone with shading, redness, texture and skin lines; returns luma too."""
  tone = float(rng.beta(1.6, 3.0))  # 0 = very light, 1 = dark
  light = np.array((238, 198, 186), np.float32)
  medium = np.array((214, 162, 134), np.float32)
  dark = np.array((150, 100, 74), np.float32)
  base = light + (medium - light) * min(tone * 2, 1.0) + (dark - medium) * max(tone * 2 - 1, 0.0)
  # Cameras differ: some images look pinker, some more yellow/beige.
  base = base * np.array((1.0, 1.0 + rng.normal(0, 0.03), 1.0 + rng.normal(0, 0.05)), np.float32)
  shade = 1.0 + 0.035 * smooth_noise(rng, size, 3)
  redness = smoothstep(-0.5, 1.8, smooth_noise(rng, size, 4)) * np.float32(rng.uniform(0, 0.1))
  # Fine skin texture (a few px) and faint skin furrows (zero crossings of band-pass noise).
  texture = 1.0 + np.float32(rng.uniform(0.01, 0.03)) * smooth_noise(rng, size, max(size // 3, 4))
  lines_noise = smooth_noise(rng, size, 10)
  skin_lines = (1.0 - smoothstep(0.0, 0.08, np.abs(lines_noise))) * np.float32(
      rng.uniform(0.0, 0.04))
  lum = shade * texture * (1.0 - skin_lines)
  skin = np.empty((size, size, 3), np.float32)
  skin[..., 0] = base[0] * lum
  skin[..., 1] = base[1] * lum * (1.0 - 0.55 * redness)
  skin[..., 2] = base[2] * lum * (1.0 - 0.4 * redness)
  luma = float(base @ np.array((0.299, 0.587, 0.114), np.float32))
  return skin, luma, tone
