"""Occluders drawn over the skin: hairs, ruler ticks, gel bubbles and calibration stickers.

`add_occluders` is the renderer's occlusion stage; the `_draw_*` helpers each rasterise one kind
of occluder (supersampled, so their coverage is anti-aliased) and return its coverage, which the
renderer turns into `hair_mask` and `occlusion_mask`. Each kind has its own random stream.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from lesion_jax.data.synthetic.noise import canvas_points, downsample, pixel_centres
from lesion_jax.data.synthetic.tables import RenderConfig


def _by_label(probability: float, by_label: tuple[float, ...] | None, label: int) -> float:
  """The chance of an occluder: per diagnosis if `by_label` is set (the shortcut configs)."""
  return probability if by_label is None else float(by_label[label])


@dataclasses.dataclass(frozen=True, eq=False)
class Occlusions:
  """Coverage maps (S, S) in [0, 1] of each occluder drawn (zeros where none), and the hairs'
  count: what the renderer's occlusion masks and cues are made from."""
  hair: np.ndarray
  bubble: np.ndarray
  ruler: np.ndarray
  sticker: np.ndarray
  num_hairs: float


def add_occluders(image: np.ndarray, rngs: dict[str, np.random.Generator], config: RenderConfig,
                  label: int, fov_centre: np.ndarray, fov_inner: float,
                  factor: int) -> tuple[np.ndarray, Occlusions]:
  """Draws the occluders over the scene `image` (S, S, 3) float32, which it may change in place.

  In physical order: hairs on the skin, gel bubbles, then ruler and sticker. Each comes, or not,
  from its own stream in `rngs` ("hair", "bubble", "ruler", "sticker"), so switching one off
  leaves the others as they were. They stay inside the field of view (`fov_centre`, smallest
  radius `fov_inner`, px). Returns the occluded image and the occluders' coverage.
  """
  size = image.shape[0]
  rng_hair, rng_bubble, rng_ruler, rng_sticker = (rngs[k] for k in ("hair", "bubble", "ruler",
                                                                    "sticker"))
  hair = np.zeros((size, size), np.float32)
  num_hairs = 0.0
  hair_chance = _by_label(config.hair_probability, config.hair_probability_by_label, label)
  if rng_hair.random() < hair_chance:
    hair_rgb, hair, count = _draw_hairs(rng_hair, size, factor, fov_centre, fov_inner)
    image = image * (1.0 - hair[..., None]) + hair_rgb
    num_hairs = float(count)
  bubble = np.zeros((size, size), np.float32)
  if rng_bubble.random() < config.bubble_probability:
    bubble, rim, edge = _draw_bubbles(rng_bubble, size, factor, fov_centre, fov_inner)
    image += (bubble * np.float32(rng_bubble.uniform(0.05, 0.18)))[..., None] * (255.0 - image)
    image *= (1.0 - 0.3 * edge)[..., None]
    image += (rim * np.float32(rng_bubble.uniform(0.5, 0.85)))[..., None] * (255.0 - image)
  ruler = np.zeros((size, size), np.float32)
  ruler_chance = _by_label(config.ruler_probability, config.ruler_probability_by_label, label)
  if rng_ruler.random() < ruler_chance:
    # Keep the ticks inside the field of view whichever edge they end up on.
    inset = max(0.0, max(*fov_centre, *(size - fov_centre)) - fov_inner)
    ruler = _draw_ruler(rng_ruler, size, factor, inset)
    ink = np.array((20, 20, 24), np.float32) * np.float32(rng_ruler.uniform(0.6, 2.0))
    image += (ruler * np.float32(rng_ruler.uniform(0.75, 0.95)))[..., None] * (ink - image)
  sticker = np.zeros((size, size), np.float32)
  if rng_sticker.random() < config.sticker_probability:
    sticker_rgb, sticker = _draw_sticker(rng_sticker, size, factor, fov_centre, fov_inner)
    image += sticker[..., None] * (sticker_rgb - image)
  return image, Occlusions(hair=hair, bubble=bubble, ruler=ruler, sticker=sticker,
                           num_hairs=num_hairs)


def _draw_hairs(rng: np.random.Generator, size: int, factor: int, fov_centre: np.ndarray,
                fov_radius: float) -> tuple[np.ndarray, np.ndarray, int]:
  """Curved dark hairs: premultiplied colour (S, S, 3), coverage (S, S) and the hair count."""
  # Mostly a few hairs; heavy hair (a hard case) is rare.
  heavy = rng.random()
  if heavy < 0.7:
    count = int(rng.integers(1, 7))
  elif heavy < 0.92:
    count = int(rng.integers(6, 16))
  else:
    count = int(rng.integers(15, 31))
  w = size * factor
  colour_canvas = np.zeros((w, w, 3), np.uint8)
  cover_canvas = np.zeros((w, w), np.uint8)
  base = np.array((32, 24, 20), np.float64) * rng.uniform(0.7, 2.4)
  for _ in range(count):
    # Anchor the middle of the hair in the field of view so that every hair is visible.
    mid_angle = rng.uniform(0, 2 * np.pi)
    mid = fov_centre + np.sqrt(rng.random()) * 0.85 * fov_radius * np.array(
        (np.cos(mid_angle), np.sin(mid_angle)))
    mid = np.clip(mid, 0.05 * size, 0.95 * size)  # towards the centre: stays in the view
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.3, 1.4) * size
    direction = np.array((np.cos(angle), np.sin(angle)))
    start, end = mid - direction * length / 2, mid + direction * length / 2
    normal = np.array((-direction[1], direction[0]))
    bend = (start + end) / 2 + normal * rng.normal(0, 0.18) * length
    t = np.linspace(0.0, 1.0, 24)[:, None]
    curve = (1 - t)**2 * start + 2 * (1 - t) * t * bend + t**2 * end  # quadratic Bezier
    thickness = max(rng.uniform(0.8, 2.0) * size / 128.0, 0.75)
    thick_px = max(int(round(thickness * factor)), 1)
    colour = tuple(float(v) for v in np.clip(base * rng.uniform(0.8, 1.25), 0, 255))
    pts = [canvas_points(curve, factor)]
    cv2.polylines(colour_canvas, pts, False, colour, thick_px, cv2.LINE_AA, 4)
    cv2.polylines(cover_canvas, pts, False, 255, thick_px, cv2.LINE_AA, 4)
  colour = cv2.resize(colour_canvas, (size, size), interpolation=cv2.INTER_AREA)
  return colour.astype(np.float32), downsample(cover_canvas, size), count


def _draw_ruler(rng: np.random.Generator, size: int, factor: int, inset: float) -> np.ndarray:
  """Coverage of ruler tick marks (1 mm spacing, longer every 5 and 10, numerals) on one edge."""
  w = size * factor
  canvas = np.zeros((w, w), np.uint8)
  spacing = size / rng.uniform(12, 24)
  y0 = inset + rng.uniform(0.01, 0.05) * size
  thick = max(int(round(max(rng.uniform(0.8, 1.4) * size / 128.0, 0.8) * factor)), 1)
  short = rng.uniform(0.025, 0.04) * size
  x = rng.uniform(0, spacing) - spacing * 10
  i = int(rng.integers(0, 10))
  number = int(rng.integers(0, 5))
  segments = []
  font_scale = 0.0012 * size * factor * rng.uniform(0.8, 1.1)
  while x < size * 1.2:
    length = short * (2.2 if i % 10 == 0 else 1.5 if i % 5 == 0 else 1.0)
    segments.append(canvas_points([(x, y0), (x, y0 + length)], factor))
    if i % 10 == 0:
      org = (int((x + 0.01 * size) * factor), int((y0 + length + 0.06 * size) * factor))
      cv2.putText(canvas, str(number), org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255,
                  max(thick // 2, 1), cv2.LINE_AA)
      number += 1
    x += spacing
    i += 1
  cv2.polylines(canvas, segments, False, 255, thick, cv2.LINE_AA, 4)
  if rng.random() < 0.5:  # baseline of the scale
    cv2.polylines(canvas, [canvas_points([(-size, y0), (2 * size, y0)], factor)], False, 255,
                  thick, cv2.LINE_AA, 4)
  # Put it on a random edge, slightly tilted.
  angle = 90.0 * int(rng.integers(0, 4)) + rng.normal(0, 4)
  rot = cv2.getRotationMatrix2D((w / 2 - 0.5, w / 2 - 0.5), angle, 1.0)
  canvas = cv2.warpAffine(canvas, rot, (w, w), flags=cv2.INTER_LINEAR)
  return downsample(canvas, size)


def _draw_bubbles(rng: np.random.Generator, size: int, factor: int, fov_centre: np.ndarray,
                  fov_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Gel bubbles: (disc coverage, bright rim + highlight coverage, dark outer edge coverage)."""
  n = int(rng.geometric(0.35))
  n = min(n, 10)
  radii = size * np.where(rng.random(n) < 0.15, rng.uniform(0.08, 0.18, n),
                          rng.uniform(0.015, 0.06, n))
  ang = rng.uniform(0, 2 * np.pi, n)
  dist = np.sqrt(rng.uniform(0, 1, n)) * fov_radius * 0.9
  centres = fov_centre + dist[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
  # The field of view can be wider than the frame; pulling the centres in keeps them in both.
  centres = np.clip(centres, 0.05 * size, 0.95 * size)
  w = size * factor
  disc = np.zeros((w, w), np.uint8)
  rim = np.zeros((w, w), np.uint8)
  edge = np.zeros((w, w), np.uint8)
  line = max(int(round(max(0.6 * size / 128.0, 0.5) * factor)), 1)
  pts = canvas_points(centres, factor)
  hl = canvas_points(centres - 0.4 * radii[:, None], factor)
  for (cx, cy), (hx, hy), r in zip(pts, hl, radii):
    rf = int(round(r * factor * 16))
    cv2.circle(disc, (int(cx), int(cy)), rf, 255, -1, cv2.LINE_AA, 4)
    cv2.circle(rim, (int(cx), int(cy)), rf, 200, line, cv2.LINE_AA, 4)
    cv2.circle(rim, (int(hx), int(hy)), max(int(rf * 0.18), 8), 255, -1, cv2.LINE_AA, 4)
    cv2.circle(edge, (int(cx), int(cy)), rf + line * 16, 255, line, cv2.LINE_AA, 4)
  return downsample(disc, size), downsample(rim, size), downsample(edge, size)


def _draw_sticker(rng: np.random.Generator, size: int, factor: int, fov_centre: np.ndarray,
                  fov_radius: float) -> tuple[np.ndarray, np.ndarray]:
  """A saturated calibration sticker near a corner: (colour image (S, S, 3), coverage)."""
  colours = ((225, 40, 45), (40, 175, 75), (45, 85, 205), (240, 205, 40), (245, 130, 30))
  rgb = np.array(colours[int(rng.integers(0, len(colours)))], np.float32)
  corner = np.pi / 4 + np.pi / 2 * int(rng.integers(0, 4)) + rng.normal(0, 0.15)
  radius = rng.uniform(0.05, 0.1) * size
  reach = min(fov_radius - radius * 1.2, 0.62 * size)
  centre = fov_centre + reach * np.array((np.cos(corner), np.sin(corner)))
  centre = np.clip(centre, 0.6 * radius, size - 0.6 * radius)  # mostly inside the frame
  w = size * factor
  canvas = np.zeros((w, w), np.uint8)
  if rng.random() < 0.7:
    c = canvas_points(centre[None], factor)[0]
    cv2.circle(canvas, (int(c[0]), int(c[1])), int(radius * factor * 16), 255, -1, cv2.LINE_AA, 4)
  else:
    box = cv2.boxPoints(((float(centre[0]), float(centre[1])),
                         (2 * radius, 2 * radius * rng.uniform(0.5, 1.0)), rng.uniform(0, 90)))
    cv2.fillPoly(canvas, [canvas_points(box, factor)], 255, cv2.LINE_AA, 4)
  cover = downsample(canvas, size)
  y, x = pixel_centres(size)
  # Printed stickers are glossy: a gentle brightness gradient across them.
  g = 1.0 + 0.15 * ((x - centre[0]) + (y - centre[1])) / (radius * 2)
  return rgb * np.clip(g, 0.75, 1.2)[..., None], cover
