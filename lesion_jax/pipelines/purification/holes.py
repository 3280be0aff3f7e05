"""Random hole masks for training an inpainter: free-form strokes, thin hair-like curves and
blobs, as the purification paper augments its training pairs by random masking (after Liu et al.
2018's irregular masks). NumPy + OpenCV, deterministic given a seed; `ops.random_holes` runs it
inside tf.data.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from lesion_jax.config import field


@dataclasses.dataclass(frozen=True)
class HoleConfig:
  """Shapes and amounts of random holes; pixel sizes are for a 128-px image and scale with it."""
  max_strokes: int = field(4, "Free-form brush strokes per mask, at most (0 to 4 of them).")
  stroke_width: tuple[float, float] = field((3.0, 9.0), "Brush width range, px at 128 px.")
  max_hairs: int = field(12, "Thin curved hair-like strokes per mask, at most.")
  hair_width: tuple[float, float] = field((1.0, 2.5), "Hair-stroke width range, px at 128 px.")
  max_blobs: int = field(2, "Elliptic blobs per mask, at most.")
  blob_radius: tuple[float, float] = field((3.0, 12.0), "Blob semi-axis range, px at 128 px.")
  max_hole_fraction: float = field(0.35, "Masks with more hole than this are redrawn with fewer shapes.")


def _polyline(rng: np.random.Generator, size: int, steps: int, step_len: float, turn: float) -> np.ndarray:
  """A random walk with smoothly changing heading, (steps+1, 2) float points inside the image."""
  p = rng.uniform(0, size, 2)
  heading = rng.uniform(0, 2 * np.pi)
  out = [p.copy()]
  for _ in range(steps):
    heading += rng.normal(0, turn)
    p = np.clip(p + step_len * np.array([np.cos(heading), np.sin(heading)]), 0, size - 1)
    out.append(p.copy())
  return np.asarray(out)


def _draw(rng: np.random.Generator, size: int, config: HoleConfig, scale: float) -> np.ndarray:
  holes = np.zeros((size, size), np.uint8)
  for _ in range(rng.integers(0, config.max_strokes + 1)):
    width = max(1, int(round(rng.uniform(*config.stroke_width) * scale)))
    points = _polyline(rng, size, int(rng.integers(3, 9)), rng.uniform(0.05, 0.2) * size, 0.8)
    cv2.polylines(holes, [np.round(points).astype(np.int32)], False, 255, width, cv2.LINE_8)
  for _ in range(rng.integers(0, config.max_hairs + 1)):
    width = max(1, int(round(rng.uniform(*config.hair_width) * scale)))
    points = _polyline(rng, size, 12, rng.uniform(0.03, 0.07) * size, 0.15)
    cv2.polylines(holes, [np.round(points).astype(np.int32)], False, 255, width, cv2.LINE_8)
  for _ in range(rng.integers(0, config.max_blobs + 1)):
    axes = tuple(max(1, int(round(rng.uniform(*config.blob_radius) * scale))) for _ in range(2))
    centre = tuple(int(c) for c in rng.integers(0, size, 2))
    cv2.ellipse(holes, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
  return holes


def random_hole_mask(seed: int | np.ndarray, size: int, config: HoleConfig = HoleConfig()) -> np.ndarray:
  """uint8 (size, size) with 255 in the holes: 0-4 strokes, 0-12 hairs and 0-2 blobs, never
  empty, at most `max_hole_fraction` of the image (redrawn with fewer shapes otherwise)."""
  rng = np.random.default_rng(seed)
  scale = size / 128.0
  holes = _draw(rng, size, config, scale)
  for _ in range(8):
    if 0 < np.count_nonzero(holes) <= config.max_hole_fraction * holes.size:
      return holes
    shrunk = dataclasses.replace(config, max_strokes=config.max_strokes // 2, max_blobs=config.max_blobs // 2)
    holes = _draw(rng, size, shrunk, scale) if np.count_nonzero(holes) else _draw(rng, size, config, scale)
  if not holes.any():  # vanishingly rare: every draw came out empty
    cv2.circle(holes, (size // 2, size // 2), max(1, size // 16), 255, -1)
  return holes
