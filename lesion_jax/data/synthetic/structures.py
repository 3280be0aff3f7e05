"""The structures of class_set="ham10000": lacunae, vessels, nests, scars, pseudo-network, scale.

The signature structures of the four appearance classes that only the ham10000 class set has
(vascular lesion, basal cell carcinoma, dermatofibroma, actinic keratosis), which also turn up,
rarely, in other classes (STRUCTURE_MODELS). `draw_class_structures` paints the ones its cues
ask for onto the lesion layer, all from a random stream of their own, so that the isic2017 class
set, which never creates that stream, renders as it did before these structures existed.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from lesion_jax.data.synthetic.cues import LesionGeometry, points_in_lesion
from lesion_jax.data.synthetic.noise import (canvas_points, disc_coverage, downsample,
                                             pixel_centres, smooth_noise, smoothstep,
                                             worley_edge_distance)
from lesion_jax.data.synthetic.tables import (CONTOUR_POINTS, LACUNA_RGB, LOOK_DF, NEST_RGB,
                                              PALETTE, PLUG_RGB, SCALE_RGB, SCAR_RGB, ULCER_RGB,
                                              VESSEL_RGB)


def _blend(lesion: np.ndarray, weight: np.ndarray, rgb: np.ndarray) -> None:
  """In place: lesion += weight (lesion towards rgb), weight (S, S), rgb (3,) or (S, S, 3)."""
  lesion += weight[..., None] * (rgb - lesion)


def _blob(rng: np.random.Generator, size: int, point: np.ndarray, radius: float, aspect: float,
          roughness: float, cells: int) -> np.ndarray:
  """Soft irregular patch (S, S) in [0, 1]: an ellipse of `radius` px (`aspect` >= 1 along a
  random direction) at `point`, its edge roughened by smooth noise."""
  y, x = pixel_centres(size)
  a = rng.uniform(0.0, np.pi)
  ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
  ex, ey = x - np.float32(point[0]), y - np.float32(point[1])
  dist = np.hypot((ex * ca + ey * sa) / np.float32(aspect), -ex * sa + ey * ca) / np.float32(radius)
  dist = dist + np.float32(roughness) * smooth_noise(rng, size, cells)
  return smoothstep(1.0, 0.7, dist)


def _draw_arborizing_vessels(rng: np.random.Generator, size: int, factor: int, centre: np.ndarray,
                             rtab: np.ndarray, radius: float) -> np.ndarray:
  """Coverage (S, S) of arborising vessels: a few trees of thin, wiggly red lines whose branches
  fork into ever thinner ones (basal cell carcinoma). `radius` is the lesion's in px."""
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  n_trees = int(rng.integers(2, 5)) + int(radius > 0.2 * size)
  for _ in range(n_trees):
    start = points_in_lesion(rng, 1, centre, rtab, (0.0, 0.7), size)[0]
    stack = [(start, rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.65) * radius,
              rng.uniform(1.1, 1.8) * size / 128.0, 0)]
    depth_max = 2 + int(rng.random() < 0.6)
    while stack:
      p0, angle, length, width, depth = stack.pop()
      turns = angle + np.cumsum(rng.normal(0.0, 0.25, 5))
      steps = (length / 5.0) * np.stack([np.cos(turns), np.sin(turns)], -1)
      pts = p0 + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
      thick = max(int(round(width * factor)), 1)
      cv2.polylines(canvas, [canvas_points(pts, factor)], False, 255, thick, cv2.LINE_AA, 4)
      if depth < depth_max:
        for sign in (-1.0, 1.0):
          stack.append((pts[-1], turns[-1] + sign * rng.uniform(0.3, 0.9),
                        length * rng.uniform(0.5, 0.75), width * 0.62, depth + 1))
  return downsample(canvas, size)


def _draw_nests(rng: np.random.Generator, size: int, factor: int, centre: np.ndarray,
                rtab: np.ndarray, radius: float) -> np.ndarray:
  """Coverage (S, S) of blue-grey ovoid nests and a few blue-grey globules (basal cell
  carcinoma), slightly blurred: the pigment is deep."""
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  n = int(rng.integers(1, 6))
  pts = canvas_points(points_in_lesion(rng, n, centre, rtab, (0.0, 0.8), size), factor)
  major = rng.uniform(0.12, 0.3, n) * radius
  minor = major * rng.uniform(0.45, 0.8, n)
  angle = rng.uniform(0.0, 180.0, n)
  for (cx, cy), a, b, t in zip(pts, major, minor, angle):
    axes = (max(int(round(a * factor * 16)), 8), max(int(round(b * factor * 16)), 8))
    cv2.ellipse(canvas, (int(cx), int(cy)), axes, float(t), 0, 360, 255, -1, cv2.LINE_AA, 4)
  k = int(rng.poisson(4.0)) + 1
  dots = points_in_lesion(rng, k, centre, rtab, (0.0, 0.9), size)
  dot_r = rng.uniform(0.05, 0.12, k) * radius
  for (cx, cy), r in zip(canvas_points(dots, factor), dot_r):
    cv2.circle(canvas, (int(cx), int(cy)), max(int(round(r * factor * 16)), 8), 255, -1,
               cv2.LINE_AA, 4)
  cover = downsample(canvas, size)
  sigma = 0.8 * size / 128.0
  return cv2.GaussianBlur(cover, (0, 0), sigma) if sigma > 0.3 else cover


def _draw_lacunae(rng: np.random.Generator, size: int, factor: int, centre: np.ndarray,
                  rtab: np.ndarray, diameter: float) -> list[tuple[np.ndarray, int]]:
  """Lacunae of a vascular lesion: round, sharply demarcated blobs packed in the lesion, from
  red to purple (blue-black when thrombosed). Returns [(coverage, LACUNA_RGB index)]."""
  n = int(rng.poisson(rng.uniform(22.0, 40.0) * (diameter / 0.3)**2)) + 5
  pts = points_in_lesion(rng, n, centre, rtab, (0.0, 0.92), size)
  radii = rng.uniform(0.018, 0.034, n) * size * math.sqrt(diameter / 0.3)
  purple = rng.beta(1.5, 2.5)
  black = 0.35 if rng.random() < 0.15 else 0.05  # thrombosed: some blue-black lacunae
  p = np.array(((1 - purple) * 0.6, (1 - purple) * 0.4, purple, black))
  kind = rng.choice(4, size=n, p=p / p.sum())
  return [(disc_coverage(size, factor, pts[kind == k], radii[kind == k]), k)
          for k in range(4) if (kind == k).any()]


def _follicles(rng: np.random.Generator, centre: np.ndarray, rtab: np.ndarray,
               size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Follicular openings of a pseudo-network: a jittered hexagonal lattice (spacing a few % of
  the image) clipped to the lesion. Returns (points (n, 2) px, radii px, has a keratin plug)."""
  spacing = rng.uniform(0.028, 0.042)
  g = int(math.ceil(2.0 * float(rtab.max()) / spacing)) + 2
  idx = np.arange(g, dtype=np.float64) - (g - 1) / 2.0
  ii, jj = np.meshgrid(idx, idx, indexing="ij")
  grid = np.stack([jj + 0.5 * (np.arange(g)[:, None] % 2), ii * 0.866], -1)
  rel = (grid + rng.uniform(-0.3, 0.3, (g, g, 2))).reshape(-1, 2) * spacing
  radii = rng.uniform(0.26, 0.38) * spacing * size * rng.uniform(0.75, 1.25, g * g)
  plug = rng.random(g * g) < rng.uniform(0.15, 0.45)
  ang = np.arctan2(rel[:, 1], rel[:, 0]) % (2 * np.pi)
  r_at = rtab[(ang / (2 * np.pi) * CONTOUR_POINTS).astype(int) % CONTOUR_POINTS]
  keep = np.hypot(rel[:, 0], rel[:, 1]) < 0.95 * r_at
  return centre + rel[keep] * size, radii[keep], plug[keep]


def draw_class_structures(rng: np.random.Generator, sc: dict[str, float], look: int,
                          lesion: np.ndarray, skin: np.ndarray, scale: float,
                          cues: dict[str, Any], geo: LesionGeometry,
                          structures: dict[str, np.ndarray]) -> np.ndarray:
  """The structures of class_set="ham10000" (STRUCTURE_NAMES; `sc` says which), on `lesion`.

  Dermatofibroma: a faint light-brown ring at the periphery (sometimes with a delicate network)
  and a central white scar-like patch (the same patch, off centre, is regression in others).
  Vascular lesion: red-purple lacunae. Actinic keratosis: pseudo-network (skin-coloured
  follicular openings, some with keratin plugs, interrupting the red background) and whitish
  scale. Basal cell carcinoma: blue-grey ovoid nests, arborising vessels on top, ulceration.
  Everything draws from `rng` (a stream of its own) and in image-relative units. The ring's
  network is added to structures["pigment_network"]; the other structures are none of the five.
  """
  size, factor, centre, rtab, rho = geo.size, geo.factor, geo.centre, geo.rtab, geo.rho
  s128 = size / 128.0
  sc_scale = np.float32(scale)
  light = np.float32(min(1.0, 0.4 + 0.6 * scale))  # white stays whitish on darker skin
  radius = cues["diameter"] / 2.0 * size
  if sc["pigment_ring"]:
    t = rng.uniform(0.55, 0.75)
    rho_w = rho + 0.1 * smooth_noise(rng, size, 8)
    ring = smoothstep(t - 0.2, t + 0.05, rho_w) * smoothstep(1.08, 0.9, rho)
    ring_rgb = PALETTE[0] * sc_scale * np.float32(rng.uniform(0.9, 1.1))
    _blend(lesion, ring * np.float32(rng.uniform(0.35, 0.6)), ring_rgb)
    if rng.random() < 0.5:  # a delicate pigment network in the ring
      cell = max(size / rng.uniform(30, 42), 2.6)
      edge = worley_edge_distance(rng, size, cell, jitter=0.6)
      lines = 1.0 - smoothstep(0.0, 1.0, edge / max(cell * 0.22, 0.4))
      _blend(lesion, lines * ring * np.float32(rng.uniform(0.25, 0.45)), PALETTE[1] * sc_scale)
      structures["pigment_network"] = np.maximum(structures.get("pigment_network", 0.0), ring)
  if sc["white_scar"]:
    central = look == LOOK_DF
    off = rng.uniform(0.0, 0.2) if central else rng.uniform(0.15, 0.5)
    size_rel = rng.uniform(0.32, 0.5) if central else rng.uniform(0.2, 0.4)
    a = rng.uniform(0, 2 * np.pi)
    r_at = rtab[int(a / (2 * np.pi) * CONTOUR_POINTS) % CONTOUR_POINTS] * size
    point = centre + off * r_at * np.array((np.cos(a), np.sin(a)))
    patch = _blob(rng, size, point, size_rel * radius, rng.uniform(1.0, 1.5), 0.25, 14)
    _blend(lesion, patch * np.float32(rng.uniform(0.65, 0.9)), SCAR_RGB * light)
  if sc["lacunae"]:
    for cover, k in _draw_lacunae(rng, size, factor, centre, rtab, cues["diameter"]):
      _blend(lesion, cover * np.float32(rng.uniform(0.85, 1.0)), LACUNA_RGB[k] * sc_scale)
  if sc["pseudo_network"]:
    pts, radii, plug = _follicles(rng, centre, rtab, size)
    holes = disc_coverage(size, factor, pts, np.maximum(radii, 0.4))
    plugs = disc_coverage(size, factor, pts[plug], np.maximum(0.45 * radii[plug], 0.4))
    if size >= 96:  # soft edges
      holes = cv2.GaussianBlur(holes, (0, 0), 0.4 * s128)
    _blend(lesion, holes * np.float32(rng.uniform(0.7, 0.9)), skin * np.float32(1.02))
    _blend(lesion, plugs * np.float32(rng.uniform(0.5, 0.8)), PLUG_RGB * light)
  if sc["blue_grey_nests"]:
    nests = _draw_nests(rng, size, factor, centre, rtab, radius)
    _blend(lesion, nests * np.float32(rng.uniform(0.6, 0.85)), NEST_RGB * sc_scale)
  if sc["arborizing_vessels"]:
    vessels = _draw_arborizing_vessels(rng, size, factor, centre, rtab, radius)
    vessels *= smoothstep(1.02, 0.85, rho)
    _blend(lesion, vessels * np.float32(rng.uniform(0.75, 0.95)), VESSEL_RGB * sc_scale)
  if sc["ulceration"]:
    point = points_in_lesion(rng, 1, centre, rtab, (0.0, 0.6), size)[0]
    crust = _blob(rng, size, point, rng.uniform(0.15, 0.35) * radius, rng.uniform(1.0, 1.8),
                  0.35, 16)
    _blend(lesion, crust * np.float32(rng.uniform(0.7, 0.9)), ULCER_RGB * sc_scale)
  if sc["scale"]:
    field = smooth_noise(rng, size, 7) + 0.5 * smooth_noise(rng, size, max(size // 5, 4))
    t = rng.uniform(0.0, 1.0)
    flakes = smoothstep(t - 0.4, t + 0.6, field) * smoothstep(1.05, 0.75, rho)
    _blend(lesion, flakes * np.float32(rng.uniform(0.45, 0.75)), SCALE_RGB * light)
  return lesion
