"""Cues and geometry: what a lesion looks like, decided before any pixel is drawn.

The cue samplers turn a diagnosis into ABCD-style cues (via an appearance class, so classes
overlap), the optional dermoscopic-feature cues and the ham10000 structure cues, each from the
stream it is given. `lesion_contour` draws the outline in image-relative units, so a seed gives
the same lesion at every size; `lesion_geometry` rasterises it into the per-pixel coordinates
the layers share (LesionGeometry). `points_in_lesion` places dots inside the contour.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from lesion_jax.data.synthetic.noise import canvas_points, downsample, pixel_centres
from lesion_jax.data.synthetic.tables import (APPEARANCE, APPEARANCE_HAM10000, CLASS_MODELS,
                                              CONTOUR_POINTS, STRUCTURE_MODELS, STRUCTURE_NAMES,
                                              RenderConfig)


def _beta(rng: np.random.Generator, ab: tuple[float, float]) -> float:
  return float(rng.beta(*ab))


def sample_cues(rng: np.random.Generator, label: int, config: RenderConfig) -> dict[str, Any]:
  """Draws the cues that the renderer turns into pixels.

  Cues come from the model of an appearance class, which is usually the diagnosis but not
  always: dysplastic nevi look like melanoma, early melanomas like nevi, flat seborrheic
  keratoses like nevi. These look-alikes bound the achievable accuracy, as in real dermoscopy.
  """
  table = APPEARANCE if config.class_set == "isic2017" else APPEARANCE_HAM10000
  look = int(rng.choice(len(table[label]), p=table[label]))
  m = CLASS_MODELS[look]
  cues: dict[str, Any] = {"appearance": float(look)}
  cues["diameter"] = float(np.clip(rng.normal(*m.diameter), 0.15, 0.6))
  cues["asymmetry"] = _beta(rng, m.asymmetry)
  cues["border_irregularity"] = _beta(rng, m.irregularity)
  n = int(rng.choice(5, p=m.num_colours)) + 1
  chosen = rng.choice(5, size=n, replace=False, p=m.colour_weights)
  cues["colours"] = sorted(int(c) for c in chosen)
  cues["num_colours"] = float(n)
  cues["border_blur"] = float(rng.uniform(*m.border_blur))
  low_contrast = rng.random() < config.low_contrast_probability
  cues["contrast"] = float(rng.uniform(0.35, 0.5) if low_contrast else rng.uniform(*m.contrast))
  cues["network"] = float(rng.uniform(0.35, 0.9)) if rng.random() < m.network_probability else 0.0
  cues["network_atypia"] = _beta(rng, m.atypia)
  cues["globules"] = float(rng.random() < m.globule_probability)
  cues["cysts"] = float(rng.random() < m.cyst_probability)
  cues["fissures"] = float(rng.random() < m.fissure_probability)
  return cues


def sample_feature_cues(rng: np.random.Generator, look: int) -> dict[str, float]:
  """Negative network and streaks (RenderConfig.dermoscopic_features), from their own stream.

  They depend on the appearance class like the other cues: mostly melanoma (and Spitz/Reed-like
  nevi, the nevus-looking melanomas and melanoma-looking nevi give the overlap).
  """
  m = CLASS_MODELS[look]
  u = rng.random(3)  # always three draws, whatever is drawn
  streaks = u[1] < m.streak_probability
  return {
      "negative_network": float(u[0] < m.negative_network_probability),
      "streaks": float(streaks),
      "streaks_regular": float(streaks and u[2] < m.regular_streak_probability),
  }


def lesion_contour(rng: np.random.Generator, cues: dict[str, Any]) -> np.ndarray:
  """Radius table r(theta) / image width over CONTOUR_POINTS angles from theta = 0.

  r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k)): k = 2 is symmetric elongation; the odd
  low orders carry asymmetry; orders 4..20 carry border irregularity (notches, bumps).
  """
  r0 = cues["diameter"] / 2.0
  theta = np.linspace(0.0, 2.0 * np.pi, CONTOUR_POINTS, endpoint=False)
  phases = rng.uniform(0.0, 2.0 * np.pi, size=21)
  amp = np.zeros(21)
  amp[2] = rng.uniform(0.0, 0.18)
  a = cues["asymmetry"]
  amp[1] = a * 0.14 * rng.uniform(0.5, 1.0)
  amp[3] = a * 0.16 * rng.uniform(0.5, 1.0)
  k = np.arange(4, 21)
  b = cues["border_irregularity"]
  # Decay ~1/k keeps the contour a blob; a large b makes it ragged with deep notches.
  amp[4:] = (0.02 + 0.30 * b**1.5) / k**0.95 * rng.uniform(0.2, 1.0, size=k.size)
  series = np.cos(np.outer(theta, np.arange(21)) + phases) @ amp
  return (r0 * np.maximum(1.0 + series, 0.35)).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class LesionGeometry:
  """Where the lesion lies in the output image: what every lesion layer is drawn against.

  Bundled because the lesion and structure layers all need the same handful of arrays; passing
  them one by one made signatures of a dozen parameters.
  """
  size: int  # output side S in px
  factor: int  # supersampling factor of hard edges
  centre: np.ndarray  # (x, y) in output px, float64
  rtab: np.ndarray  # lesion_contour's radius table (fraction of the image width)
  rho: np.ndarray  # (S, S) radius relative to the smoothed outline (1 at about the border)
  theta: np.ndarray  # (S, S) angle about the centre
  coverage: np.ndarray  # (S, S) anti-aliased coverage of the hard contour, in [0, 1]


def lesion_geometry(centre: np.ndarray, rtab: np.ndarray, size: int, factor: int) -> LesionGeometry:
  """The per-pixel angle, normalised radius and contour coverage of a lesion at `centre`."""
  y, x = pixel_centres(size)
  dy, dx = y - np.float32(centre[1]), x - np.float32(centre[0])
  theta = np.arctan2(dy, dx)
  bins = ((theta + np.float32(np.pi)) * np.float32(CONTOUR_POINTS / (2 * np.pi))).astype(np.int32)
  # Internal zones use a radial coordinate relative to a smoothed outline (orders <= 3): the
  # ragged contour itself would give them spoke-like straight edges.
  spectrum = np.fft.rfft(rtab)
  spectrum[4:] = 0
  smooth = np.fft.irfft(spectrum, CONTOUR_POINTS).astype(np.float32) * np.float32(size)
  smooth = np.roll(smooth, -CONTOUR_POINTS // 2)  # bins start at theta = -pi
  rho = np.hypot(dx, dy) / smooth[bins % CONTOUR_POINTS]
  ang = np.linspace(0, 2 * np.pi, CONTOUR_POINTS, endpoint=False)
  contour = centre + (rtab * size)[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  cv2.fillPoly(canvas, [canvas_points(contour, factor)], 255, cv2.LINE_8, 4)
  coverage = downsample(canvas, size)
  return LesionGeometry(size=size, factor=factor, centre=centre, rtab=rtab, rho=rho, theta=theta,
                        coverage=coverage)


def points_in_lesion(rng: np.random.Generator, n: int, centre: np.ndarray, rtab: np.ndarray,
                     rho_range: tuple[float, float], size: int) -> np.ndarray:
  """n points (x, y) in output px at normalised radius in rho_range of the lesion contour."""
  theta = rng.uniform(0.0, 2.0 * np.pi, n)
  rho = np.sqrt(rng.uniform(rho_range[0]**2, rho_range[1]**2, n))  # uniform over area
  r = rtab[(theta / (2.0 * np.pi) * CONTOUR_POINTS).astype(int) % CONTOUR_POINTS]
  return centre + (rho * r * size)[:, None] * np.stack([np.cos(theta), np.sin(theta)], -1)


def sample_structure_cues(rng: np.random.Generator, look: int) -> dict[str, float]:
  """0/1 per STRUCTURE_NAMES (class_set="ham10000"), from the appearance class's model."""
  m = STRUCTURE_MODELS[look]
  u = rng.random(len(STRUCTURE_NAMES))  # always one draw per structure, whatever is drawn
  return {name: float(u[i] < getattr(m, name)) for i, name in enumerate(STRUCTURE_NAMES)}
