"""The lesion layer: its colours, zones, pigment and negative networks, streaks, dots, texture.

`render_lesion` paints the lesion's own colour image (S, S, 3), to be alpha-blended onto the
skin by the renderer, as a fixed sequence of layers that draw from the lesion's stream in order
(plus the optional streams of negative network, streaks and the ham10000 structures, which
structures.py draws). It also returns, per dermoscopic structure, where it was drawn.
`draw_streaks` is separate because the streaks' coverage extends the lesion's alpha as well.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from lesion_jax.data.synthetic.cues import LesionGeometry, points_in_lesion
from lesion_jax.data.synthetic.noise import (canvas_points, disc_coverage, downsample,
                                             pixel_centres, smooth_noise, smoothstep,
                                             worley_edge_distance)
from lesion_jax.data.synthetic.structures import draw_class_structures
from lesion_jax.data.synthetic.tables import (CLASS_BASE_RGB, CONTOUR_POINTS, CYST_RGB, PALETTE,
                                              REF_SKIN_LUMA, SK_TAN, STYLE_PROBABILITIES, STYLES,
                                              WAX_RGB)


def draw_streaks(rng: np.random.Generator, regular: bool, size: int, factor: int,
                 centre: np.ndarray, rtab: np.ndarray) -> tuple[np.ndarray, int]:
  """Coverage (S, S) of streaks: radial dark projections crossing the lesion border.

  Regular streaks (a symmetric starburst, as in Spitz/Reed nevi) go all round the lesion with
  similar lengths; irregular ones (melanoma) sit in one or two sectors of the periphery, with
  uneven lengths and widths, some ending in a bulbous tip (pseudopods). Each runs from about
  0.65-0.88 of the contour radius at its angle to 1.02-1.25 of it, tapering outwards.
  """
  s128 = size / 128.0
  if regular:
    n = int(rng.integers(16, 33))
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n
    angles = angles + rng.normal(0, 0.3 * 2 * np.pi / n, n)
    start = rng.uniform(0.72, 0.84) + rng.normal(0, 0.03, n)
    end = rng.uniform(1.06, 1.18) + rng.normal(0, 0.03, n)
    width = rng.uniform(1.8, 2.8) * rng.uniform(0.85, 1.15, n)
    knob = rng.random(n) < 0.15
  else:
    parts = []
    for _ in range(1 + int(rng.random() < 0.35)):
      m = int(rng.integers(4, 13))
      parts.append(rng.uniform(0, 2 * np.pi) + rng.uniform(-1, 1, m) * rng.uniform(0.35, 1.1))
    angles = np.concatenate(parts)
    n = angles.size
    start = rng.uniform(0.65, 0.88, n)
    end = rng.uniform(1.02, 1.25, n)
    width = rng.uniform(1.6, 3.6, n)
    knob = rng.random(n) < 0.35
  bend = rng.normal(0, 0.06, n)  # radians of sideways drift towards the tip
  end = np.where(knob, 1.0 + 0.65 * (end - 1.0), end)  # pseudopods are stubbier
  w = size * factor
  canvas = np.zeros((w, w), np.uint8)
  t = np.linspace(0.0, 1.0, 8)
  for a, r_start, r_end, wd, k, b in zip(angles, start, end, width, knob, bend):
    r = rtab[int(round((a % (2 * np.pi)) / (2 * np.pi) * CONTOUR_POINTS)) % CONTOUR_POINTS]
    radius = (r_start + (r_end - r_start) * t) * r * size
    phi = a + b * t
    along = np.stack([np.cos(phi), np.sin(phi)], -1)
    axis = centre + radius[:, None] * along
    normal = np.stack([-along[:, 1], along[:, 0]], -1)
    half = 0.5 * max(wd * s128, 0.6) * (1.0 - (0.2 if k else 0.5) * t)
    outline = np.concatenate([axis + half[:, None] * normal, (axis - half[:, None] * normal)[::-1]])
    cv2.fillPoly(canvas, [canvas_points(outline, factor)], 255, cv2.LINE_AA, 4)
    if k:
      tip = canvas_points(axis[-1:], factor)[0]
      knob_radius = max(int(round(half[0] * 1.25 * factor * 16)), 8)
      cv2.circle(canvas, (int(tip[0]), int(tip[1])), knob_radius, 255, -1, cv2.LINE_AA, 4)
  cover = downsample(canvas, size)
  if size >= 96:  # pigment, not ink: soft edges
    cover = cv2.GaussianBlur(cover, (0, 0), 0.5 * s128)
  return cover, int(n)


def _negative_network_maps(rng: np.random.Generator, cues: dict[str, Any],
                           geo: LesionGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Negative network: (light lines, dark holes, region) maps in [0, 1], each (S, S).

  Light, serpiginous lines around larger dark "holes": a honeycomb coarser than the pigment
  network and inverted. It covers a patch around a random point of the lesion (a third of the
  time about the whole lesion, as in Spitz nevi) and fades out before the border.
  """
  size, centre, rtab, rho = geo.size, geo.centre, geo.rtab, geo.rho
  cell = max(size / rng.uniform(11, 18), 3.0)
  bend = np.float32(rng.uniform(0.25, 0.45) * cell)
  warp = (smooth_noise(rng, size, 9) * bend, smooth_noise(rng, size, 9) * bend)
  edge = worley_edge_distance(rng, size, cell, jitter=0.9, warp=warp)
  width = cell * rng.uniform(0.1, 0.16) * (1.0 + 0.4 * smooth_noise(rng, size, 10))
  lines = 1.0 - smoothstep(0.0, 1.0, edge / np.maximum(width, 0.4))
  holes = smoothstep(0.0, 0.3 * cell, edge)
  y, x = pixel_centres(size)
  point = points_in_lesion(rng, 1, centre, rtab, (0.0, 0.5), size)[0]
  reach = (rng.uniform(1.6, 2.2) if rng.random() < 0.33 else rng.uniform(0.55, 1.0))
  reach *= cues["diameter"] / 2.0 * size
  d = np.hypot(x - np.float32(point[0]), y - np.float32(point[1])) * np.float32(1.0 / reach)
  d = d + 0.25 * smooth_noise(rng, size, 5)
  region = smoothstep(1.0, 0.7, d) * smoothstep(1.0, 0.82, rho)
  return lines, holes, region


@dataclasses.dataclass(frozen=True, eq=False)
class _Paint:
  """The colours of one lesion, which every layer drawn on it mixes from."""
  scale: float  # brightness relative to light skin (darker lesions on darker skin), jittered
  palette: np.ndarray  # (5, 3) float32: this lesion's RGB of COLOUR_NAMES
  colours: list[int]  # the cue colours, the base first, then the zones (darker ones last)


def render_lesion(rng: np.random.Generator, cues: dict[str, Any], look: int, geo: LesionGeometry,
                  skin_luma: float, rng_negative: np.random.Generator | None = None,
                  streaks: tuple[np.random.Generator, np.ndarray] | None = None,
                  class_structures: tuple[np.random.Generator, dict[str, float], np.ndarray]
                  | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Lesion colour (S, S, 3): base colour, zones/blotches, network, dots, cysts, texture.

  Also returns, per structure drawn, a map (S, S) in [0, 1] of where it is: the region of a
  network (not just its lines), the coverage of dots. With `rng_negative` it draws a negative
  network from that stream; with `streaks` = (stream, coverage) streaks of that coverage. Both
  use nothing from `rng`, and leave pixels outside themselves untouched. `class_structures` =
  (stream, structure cues, skin) draws the structures of class_set="ham10000" (lacunae,
  vessels, ...) from that stream; looks 3-6 (that class set only) draw from `rng` as well.

  The layers below run in this order and each paints `lesion` in place: the order is that of
  the draws from `rng`, which a seed's picture depends on.
  """
  structures: dict[str, np.ndarray] = {}
  paint, lesion, zones = _base(rng, cues, look, geo.size, skin_luma)
  _draw_zones(rng, cues, look, geo, paint, zones, lesion, structures)
  if cues["network"] > 0:
    _draw_pigment_network(rng, cues, geo, paint, lesion, structures)
  if rng_negative is not None:
    _draw_negative_network(rng_negative, cues, geo, paint, lesion, structures)
  if streaks is not None:
    _draw_streak_pigment(streaks, paint, lesion, structures)
  if cues["globules"]:
    _draw_globules(rng, cues, look, geo, paint, lesion, structures)
  _draw_surface(rng, cues, look, geo.size, lesion)
  if cues["cysts"]:  # milia-like cysts: small bright dots
    _draw_cysts(rng, cues, geo, paint, lesion, structures)

  if class_structures is not None:
    rng_class, class_cues, skin = class_structures
    lesion = draw_class_structures(rng_class, class_cues, look, lesion, skin, paint.scale, cues,
                                   geo, structures)

  size = geo.size
  texture = 1.0 + np.float32(rng.uniform(0.04, 0.1)) * smooth_noise(rng, size, max(size // 6, 4))
  lesion *= texture[..., None]
  return lesion, structures


def _base(rng: np.random.Generator, cues: dict[str, Any], look: int, size: int,
          skin_luma: float) -> tuple[_Paint, np.ndarray, list[int]]:
  """The lesion's paint, its base colour filled in (S, S, 3), and the colours left as zones."""
  # Lesions on darker skin are darker too; brightness and hue vary per image.
  scale = float(np.clip(skin_luma / REF_SKIN_LUMA, 0.6, 1.08)) * rng.uniform(0.88, 1.12)
  palette = PALETTE * np.float32(scale) * (1 + rng.normal(0, 0.04, (5, 3))).astype(np.float32)
  colours = list(cues["colours"])
  # The base is the lightest brown present (pink or blue-grey only without browns); the other
  # colours are zones drawn on top, darker ones last.
  base_order = [0, 1, 4, 3, 2]
  colours.sort(key=base_order.index)
  colours[1:] = sorted(colours[1:], key=[0, 4, 1, 3, 2].index)
  base_rgb = palette[colours[0]]
  zones = colours[1:]
  if look == 2:  # seborrheic keratosis: waxy tan base instead of light brown
    base_rgb = SK_TAN * np.float32(scale * rng.uniform(0.9, 1.1)) if colours[0] == 0 else base_rgb
  elif look >= 3:  # the classes of class_set="ham10000": a base of their own, and every cue
    # colour other than red/pink (which the base stands for) a zone on it
    base_rgb = CLASS_BASE_RGB[look - 3] * np.float32(scale * rng.uniform(0.93, 1.07))
    zones = sorted((c for c in colours if c != 4), key=[0, 4, 1, 3, 2].index)
  lesion = np.empty((size, size, 3), np.float32)
  lesion[:] = base_rgb
  return _Paint(scale=scale, palette=palette, colours=colours), lesion, zones


def _draw_zones(rng: np.random.Generator, cues: dict[str, Any], look: int, geo: LesionGeometry,
                paint: _Paint, zones: list[int], lesion: np.ndarray,
                structures: dict[str, np.ndarray]) -> None:
  """The secondary colours, each as a centre, ring, blotch or dots (brown/black dots are
  globules)."""
  size, factor, centre, rtab, rho, theta = (geo.size, geo.factor, geo.centre, geo.rtab, geo.rho,
                                            geo.theta)
  s128 = size / 128.0
  palette = paint.palette
  asym = cues["asymmetry"]
  # Zones are drawn in a warped radial coordinate: organic outlines, shifted to one side when
  # the lesion is asymmetric.
  skew = np.float32(asym * 0.6) * np.cos(theta - np.float32(rng.uniform(0, 2 * np.pi)))
  rho_w = rho * (1.0 + skew) + 0.16 * smooth_noise(rng, size, 6)
  for c in zones:
    style = _choose_style(rng, look, c)
    strength = np.float32(rng.uniform(0.7, 1.0))
    if style == "centre":
      t = rng.uniform(0.3, 0.65)
      m = smoothstep(t + 0.12, t - 0.12, rho_w)
    elif style == "ring":
      t = rng.uniform(0.6, 0.85)
      m = smoothstep(t - 0.1, t + 0.1, rho_w)
    elif style == "blotch":
      bias = np.float32(0.5 + asym) * rho * np.cos(theta - np.float32(rng.uniform(0, 2 * np.pi)))
      field = smooth_noise(rng, size, 7) + bias
      t = rng.uniform(0.2, 1.0)
      m = smoothstep(t - 0.5, t + 0.5, field)
    else:  # dots / globules / peppering
      n = int(rng.poisson(rng.uniform(6, 30) * (cues["diameter"] / 0.3)**2)) + 3
      lo = rng.uniform(0.0, 0.5) if look == 1 else rng.uniform(0.3, 0.7)
      pts = points_in_lesion(rng, n, centre, rtab, (lo, 0.95), size)
      radii = rng.uniform(0.6, 1.8, n) * s128 * (1.4 if c != 3 else 0.8)
      m = disc_coverage(size, factor, pts, np.maximum(radii, 0.45))
      if c in (1, 2):  # brown/black dots count as globules (ISIC's "globules" has dots too);
        # blue-grey peppering is not one of the five structures.
        structures["globules"] = np.maximum(structures.get("globules", 0.0), m)
    lesion += (m * strength)[..., None] * (palette[c] - lesion)


def _draw_pigment_network(rng: np.random.Generator, cues: dict[str, Any], geo: LesionGeometry,
                          paint: _Paint, lesion: np.ndarray,
                          structures: dict[str, np.ndarray]) -> None:
  """Pigment network: honeycomb of dark lines; typical ones fade out towards the border,
  atypical ones are coarse, uneven and broken."""
  size = geo.size
  atypia = cues["network_atypia"]
  cell = max(size / rng.uniform(26, 40) * (1 + 0.5 * atypia), 2.6)
  edge = worley_edge_distance(rng, size, cell, jitter=0.6 + 0.3 * atypia)
  width = cell * (0.26 + 0.14 * atypia) * (1.0 + atypia * 0.5 * smooth_noise(rng, size, 10))
  lines = 1.0 - smoothstep(0.0, 1.0, edge / np.maximum(width, 0.4))
  if atypia > 0.5:
    region = smoothstep(-0.8, -0.2, smooth_noise(rng, size, 8))
  else:
    region = smoothstep(1.05, 0.55, geo.rho)
  lines *= region
  structures["pigment_network"] = region
  # Lines are brown pigment (darker for atypical networks), not a grey shadow.
  line_rgb = paint.palette[1] * np.float32(1.0 - 0.35 * atypia)
  strength = np.float32(cues["network"] * (0.55 + 0.3 * atypia))
  lesion += (lines * strength)[..., None] * (line_rgb - lesion)


def _draw_negative_network(rng_negative: np.random.Generator, cues: dict[str, Any],
                           geo: LesionGeometry, paint: _Paint, lesion: np.ndarray,
                           structures: dict[str, np.ndarray]) -> None:
  """Dark holes, then light lines on top; hides the pigment network where it lies."""
  palette, scale = paint.palette, paint.scale
  nn_lines, nn_holes, nn_region = _negative_network_maps(rng_negative, cues, geo)
  hole_rgb = palette[1] * np.float32(rng_negative.uniform(0.75, 1.0))
  light_rgb = 0.35 * palette[0] + 0.65 * np.float32(scale) * np.array((232, 200, 182), np.float32)
  hole_strength = np.float32(rng_negative.uniform(0.5, 0.8))
  line_strength = np.float32(rng_negative.uniform(0.6, 0.9))
  lesion += (nn_region * nn_holes * hole_strength)[..., None] * (hole_rgb - lesion)
  lesion += (nn_region * nn_lines * line_strength)[..., None] * (light_rgb - lesion)
  structures["negative_network"] = nn_region


def _draw_streak_pigment(streaks: tuple[np.random.Generator, np.ndarray], paint: _Paint,
                         lesion: np.ndarray, structures: dict[str, np.ndarray]) -> None:
  """Colours the streaks of coverage streaks[1] (drawn by draw_streaks) from stream streaks[0]."""
  palette = paint.palette
  rng_streaks, streak_cover = streaks
  dark = palette[1] * np.float32(0.8)  # dark brown, towards black when the lesion has black
  if 2 in paint.colours:
    dark = dark + np.float32(rng_streaks.uniform(0.3, 0.8)) * (palette[2] - dark)
  dark = dark * np.float32(rng_streaks.uniform(0.85, 1.1))
  strength = np.float32(rng_streaks.uniform(0.75, 0.95))
  lesion += (streak_cover * strength)[..., None] * (dark - lesion)
  structures["streaks"] = streak_cover


def _draw_globules(rng: np.random.Generator, cues: dict[str, Any], look: int, geo: LesionGeometry,
                   paint: _Paint, lesion: np.ndarray, structures: dict[str, np.ndarray]) -> None:
  """Globules: irregular (melanoma), a peripheral ring (nevus) or comedo-like openings (SK)."""
  size, factor, centre, rtab = geo.size, geo.factor, geo.centre, geo.rtab
  s128 = size / 128.0
  palette = paint.palette
  n = int(rng.poisson(rng.uniform(5, 25) * (cues["diameter"] / 0.3)**2)) + 2
  if look == 1:  # irregular: anywhere, various sizes
    pts = points_in_lesion(rng, n, centre, rtab, (0.1, 1.0), size)
    radii = rng.uniform(0.6, 2.4, n) * s128
  elif look == 0:  # regular: a ring of similar globules towards the periphery
    pts = points_in_lesion(rng, n, centre, rtab, (0.6, 0.92), size)
    radii = rng.uniform(1.0, 1.6, n) * s128
  else:  # seborrheic keratosis: a few comedo-like openings
    n = n // 2 + 1
    pts = points_in_lesion(rng, n, centre, rtab, (0.0, 0.9), size)
    radii = rng.uniform(0.6, 1.3, n) * s128
  dark = palette[2] if 2 in paint.colours and look == 1 else palette[1] * 0.85
  m = disc_coverage(size, factor, pts, np.maximum(radii, 0.45))
  if size >= 96:  # globules have soft edges
    m = cv2.GaussianBlur(m, (0, 0), 0.5 * s128)
  structures["globules"] = np.maximum(structures.get("globules", 0.0), m)
  lesion += (m * np.float32(rng.uniform(0.45, 0.85)))[..., None] * (dark - lesion)


def _draw_surface(rng: np.random.Generator, cues: dict[str, Any], look: int, size: int,
                  lesion: np.ndarray) -> None:
  """The keratoses' surface: cerebriform fissures (if cued), then a waxy haze (look 2)."""
  s128 = size / 128.0
  if cues["fissures"]:  # cerebriform ridges and furrows of seborrheic keratoses
    n = smooth_noise(rng, size, max(int(size / (6.0 * s128 + 1)), 6))
    furrows = 1.0 - smoothstep(0.0, 0.25, np.abs(n))
    lesion *= (1.0 - np.float32(rng.uniform(0.25, 0.45)) * furrows)[..., None]

  if look == 2:  # waxy look: a slight whitish haze, less saturated
    lesion += np.float32(rng.uniform(0.0, 0.08)) * (WAX_RGB - lesion)


def _draw_cysts(rng: np.random.Generator, cues: dict[str, Any], geo: LesionGeometry,
                paint: _Paint, lesion: np.ndarray, structures: dict[str, np.ndarray]) -> None:
  """Milia-like cysts: small bright, yellowish-white dots."""
  size, factor, centre, rtab = geo.size, geo.factor, geo.centre, geo.rtab
  s128 = size / 128.0
  scale = paint.scale
  n = int(rng.poisson(rng.uniform(4, 12) * (cues["diameter"] / 0.3)**2)) + 2
  pts = points_in_lesion(rng, n, centre, rtab, (0.0, 0.9), size)
  m = disc_coverage(size, factor, pts, np.maximum(rng.uniform(0.8, 1.8, n) * s128, 0.5))
  lesion += (m * np.float32(rng.uniform(0.7, 1.0)))[..., None] * (CYST_RGB * scale - lesion)
  structures["milia_like_cyst"] = m


def _choose_style(rng: np.random.Generator, look: int, colour: int) -> str:
  """How a secondary colour is arranged inside the lesion (by appearance class and colour)."""
  return STYLES[int(rng.choice(len(STYLES), p=STYLE_PROBABILITIES[look][colour]))]
