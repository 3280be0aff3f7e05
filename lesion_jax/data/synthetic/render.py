"""The render stages and `render_example`, the renderer's entry point.

`render_example` runs a fixed sequence of stages: pick the diagnosis and its cues, place the
dermoscope's field of view, rasterise the lesion's geometry, paint the skin and the lesion and
blend them, draw the occluders, expose both the occluded and the clean scene through the same
optics and sensor noise, and derive the masks. Each part of the picture draws from its own random
stream (see the package docstring), created here from the seed; the stages keep every stream's
draws in the order they always had, so a seed renders the same bytes as before the split.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from lesion_jax.data.synthetic.cues import (LesionGeometry, lesion_contour, lesion_geometry,
                                            sample_cues, sample_feature_cues,
                                            sample_structure_cues)
from lesion_jax.data.synthetic.lesion import draw_streaks, render_lesion
from lesion_jax.data.synthetic.noise import pixel_centres, render_skin, smoothstep
from lesion_jax.data.synthetic.occluders import Occlusions, add_occluders
from lesion_jax.data.synthetic.tables import (COLOUR_NAMES, FEATURE_NAMES, MALIGNANT_BY_SET,
                                              RenderConfig, class_names)

_OCCLUSION_THRESHOLD = 0.25  # coverage at which a pixel counts as occluded
_FOV_VISIBLE = 0.3  # field-of-view transmission below which the lesion is not annotated
# Streams 0-8, one per part of the picture, always created. Streams 9-11 (negative network,
# streaks and their cues) are created only with dermoscopic_features and stream 12 only with
# class_set="ham10000": nothing else draws from them, so existing seeds render unchanged.
_STREAMS = ("cues", "lesion", "skin", "view", "hair", "ruler", "bubble", "sticker", "noise")


def render_example(seed: int, config: RenderConfig = RenderConfig()) -> dict[str, Any]:
  """Renders one synthetic dermoscopy example.

  Args:
    seed: any non-negative int; the same (seed, config) always gives identical output.
    config: rendering knobs.

  Returns:
    dict with 'image' uint8 (S, S, 3) RGB; 'image_clean' the same scene without occluders
    (no hair, ruler, bubbles or sticker; same lesion, skin, optics and sensor noise); 'mask',
    'hair_mask', 'occlusion_mask' uint8 (S, S) in {0, 255} (occlusion = hair | ruler | bubbles |
    sticker); 'label' int index into class_names(config.class_set) (DIAGNOSES by default);
    'malignant' int 0/1 by that class set's map; 'cues' dict of floats: the ABCD cues used to
    draw it ('asymmetry', 'border_irregularity', 'num_colours', 'diameter' as a fraction of the
    image width, one-hot 'has_<colour>' flags) plus other drawing parameters ('border_blur' in px
    at 128 px, 'contrast', 'network', 'network_atypia', 'globules', 'cysts', 'fissures', and the
    nuisances 'skin_tone', 'vignette', 'num_hairs', ...); with `dermoscopic_features` also
    'negative_network', 'streaks', 'streaks_regular' (0/1) and 'num_streaks'; with
    class_set="ham10000" also one 0/1 per STRUCTURE_NAMES ('lacunae', 'arborizing_vessels',
    ...), and 'appearance' ranges over 7 appearance classes (3-6: vascular lesion, basal cell
    carcinoma, dermatofibroma, actinic keratosis).
    'feature_masks' uint8 (S, S, 5) in {0, 1}, channels in FEATURE_NAMES order, each inside
    `mask`: for the pigment and negative networks the region the network pattern occupies
    (where its fade-in weight is at least one half, as an annotator outlines a patch of
    network, not only the line pixels; pigment network is not marked where a negative network
    covers it, nor on the parts of streaks outside the lesion contour); for streaks, milia-like
    cysts and globules the drawn lines or dots (coverage at least 0.2), dilated by about 1 px
    per 128 px (at least 1 px). Globules include brown/black dot-style colour zones. It is given
    with the option off too: pigment network, cysts and globules are drawn regardless, and the
    negative network and streaks channels are then zero.
  """
  size = int(config.image_size)
  if size < 16:
    raise ValueError(f"image_size must be at least 16, got {size}")
  factor = config.supersample or (4 if size <= 128 else 2)
  rngs = {name: np.random.default_rng([seed, k]) for k, name in enumerate(_STREAMS)}
  names = class_names(config.class_set)
  _check_by_label(config, names)

  label, cues, rtab, centre = _sample_lesion(rngs["cues"], config, names, size)
  look = int(cues["appearance"])
  view = _sample_view(rngs["view"], config, size)
  geo = lesion_geometry(centre, rtab, size, factor)
  skin, skin_luma, tone = render_skin(rngs["skin"], size)
  extras = _optional_structures(seed, config, look, geo, skin)
  lesion, structures = render_lesion(rngs["lesion"], cues, look, geo, skin_luma,
                                     extras.rng_negative, extras.streaks, extras.class_structures)
  image = _blend_lesion(rngs["lesion"], cues, geo, skin, lesion, extras.streaks)
  clean = image.copy()  # the scene without occluders (ground truth for inpainting)
  image, occ = add_occluders(image, rngs, config, label, view.fov_centre, view.fov_inner, factor)
  light, visible, noise = _optics(rngs["noise"], config, view, size)
  image, clean = (_expose(scene, view, light, visible, noise) for scene in (image, clean))
  masks = _masks(geo, extras.streaks, view, visible, occ)

  cues_out = {k: float(v) for k, v in cues.items() if k != "colours"}
  for i, name in enumerate(COLOUR_NAMES):
    cues_out[f"has_{name}"] = float(i in cues["colours"])
  cues_out.update(skin_tone=tone, vignette=float(view.has_vignette), num_hairs=occ.num_hairs,
                  centre_x=float(centre[0] / size), centre_y=float(centre[1] / size))
  cues_out.update(extras.feature_cues)
  cues_out.update(extras.structure_cues)
  return {
      "image": image,
      "image_clean": clean,
      "mask": masks["lesion"].astype(np.uint8) * np.uint8(255),
      "hair_mask": masks["hair"].astype(np.uint8) * np.uint8(255),
      "occlusion_mask": masks["occlusion"].astype(np.uint8) * np.uint8(255),
      "label": label,
      "malignant": int(MALIGNANT_BY_SET[config.class_set][names[label]]),
      "cues": cues_out,
      "feature_masks": _feature_masks(structures, masks["lesion"], masks["body"], size),
  }


def _check_by_label(config: RenderConfig, names: tuple[str, ...]) -> None:
  """Per-diagnosis occluder chances must have one entry per class of the config's class set."""
  for field in ("hair_probability_by_label", "ruler_probability_by_label"):
    by_label = getattr(config, field)
    if by_label is not None and len(by_label) != len(names):
      raise ValueError(f"{field} needs {len(names)} entries ({names}), got {by_label}")


def _sample_lesion(rng_cues: np.random.Generator, config: RenderConfig, names: tuple[str, ...],
                   size: int) -> tuple[int, dict[str, Any], np.ndarray, np.ndarray]:
  """The diagnosis, its cues, the contour's radius table and the lesion's centre (px)."""
  u = rng_cues.random()  # drawn even when the label is forced, to keep the stream aligned
  if config.label is None:
    if len(config.class_priors) != len(names):
      raise ValueError(f"class_priors needs {len(names)} entries ({names}), got "
                       f"{config.class_priors}" + (" (e.g. HAM10000_PRIORS)"
                                                   if config.class_set == "ham10000" else ""))
    cdf = np.cumsum(np.asarray(config.class_priors, np.float64))
    label = min(int(np.searchsorted(cdf / cdf[-1], u, side="right")), len(names) - 1)
  elif 0 <= config.label < len(names):
    label = int(config.label)
  else:
    raise ValueError(f"label must index the class set's names {names}, got {config.label}")
  cues = sample_cues(rng_cues, label, config)
  rtab = lesion_contour(rng_cues, cues)
  offset = np.clip(rng_cues.normal(0, 0.06, 2), -0.12, 0.12)
  centre = (0.5 + offset) * size
  return label, cues, rtab, centre


@dataclasses.dataclass(frozen=True, eq=False)
class _View:
  """The dermoscope's field of view and optics of one image (px where a length)."""
  has_vignette: bool
  fov_r: float  # radius of the field of view / image width (its longer semi-axis)
  fov_centre: np.ndarray  # (x, y) px
  fov_aspect: float
  fov_angle: float
  fov_edge: float  # width of the dark border's soft edge / image width
  falloff: float  # vignetting: relative light lost at the field of view's edge
  grad_amp: float  # illumination gradient across the image
  grad_dir: float
  white_balance: np.ndarray  # (3,) float32 per-channel gains
  black_level: float  # brightness of the dark border
  fov_inner: float  # smallest radius of the field of view, px: occluders stay inside it


def _sample_view(rng_view: np.random.Generator, config: RenderConfig, size: int) -> _View:
  """The field of view (sampled up front: occluders are placed inside it) and the optics."""
  has_vignette = rng_view.random() < config.vignette_probability
  if rng_view.random() < 0.35:
    fov_r = rng_view.uniform(0.44, 0.56)  # the whole circle shows
  else:
    fov_r = rng_view.uniform(0.58, 0.74)  # only the corners are cut
  fov_centre = (0.5 + rng_view.normal(0, 0.03, 2)) * size
  fov_aspect = rng_view.uniform(0.9, 1.1)
  fov_angle = rng_view.uniform(0, np.pi)
  fov_edge = rng_view.uniform(0.01, 0.04)
  falloff = rng_view.uniform(0.03, 0.18) if has_vignette else rng_view.uniform(0.0, 0.1)
  grad_amp = rng_view.uniform(-0.1, 0.1)
  grad_dir = rng_view.uniform(0, 2 * np.pi)
  white_balance = np.exp(rng_view.normal(0, 0.035, 3)).astype(np.float32)
  black_level = rng_view.uniform(2, 14)
  if not has_vignette:
    fov_r, fov_aspect, fov_centre = 0.75, 1.0, np.array((0.5, 0.5)) * size
  return _View(has_vignette=has_vignette, fov_r=fov_r, fov_centre=fov_centre,
               fov_aspect=fov_aspect, fov_angle=fov_angle, fov_edge=fov_edge, falloff=falloff,
               grad_amp=grad_amp, grad_dir=grad_dir, white_balance=white_balance,
               black_level=black_level, fov_inner=fov_r * size / max(fov_aspect, 1.0))


@dataclasses.dataclass(frozen=True, eq=False)
class _Extras:
  """What the optional streams (dermoscopic_features, class_set="ham10000") add; all empty or
  None without them."""
  feature_cues: dict[str, float]
  rng_negative: np.random.Generator | None  # set where a negative network is drawn
  streaks: tuple[np.random.Generator, np.ndarray] | None  # (stream, coverage) where drawn
  class_structures: tuple[np.random.Generator, dict[str, float], np.ndarray] | None
  structure_cues: dict[str, float]


def _optional_structures(seed: int, config: RenderConfig, look: int, geo: LesionGeometry,
                         skin: np.ndarray) -> _Extras:
  """Cues (and the streaks' coverage) of the structures only some configs draw, from streams
  9-12, which are created only here: without the options no seed's stream 0-8 draws change."""
  feature_cues: dict[str, float] = {}
  rng_negative = streaks = None
  if config.dermoscopic_features:
    rng_features, rng_negative, rng_streaks = (np.random.default_rng([seed, k])
                                               for k in (9, 10, 11))
    feature_cues = sample_feature_cues(rng_features, look)
    feature_cues["num_streaks"] = 0.0
    if not feature_cues["negative_network"]:
      rng_negative = None
    if feature_cues["streaks"]:
      streak_cover, count = draw_streaks(rng_streaks, bool(feature_cues["streaks_regular"]),
                                         geo.size, geo.factor, geo.centre, geo.rtab)
      streaks = (rng_streaks, streak_cover)
      feature_cues["num_streaks"] = float(count)
  class_structures = None
  structure_cues: dict[str, float] = {}
  if config.class_set != "isic2017":
    rng_class = np.random.default_rng([seed, 12])
    structure_cues = sample_structure_cues(rng_class, look)
    class_structures = (rng_class, structure_cues, skin)
  return _Extras(feature_cues=feature_cues, rng_negative=rng_negative, streaks=streaks,
                 class_structures=class_structures, structure_cues=structure_cues)


def _blend_lesion(rng_lesion: np.random.Generator, cues: dict[str, Any], geo: LesionGeometry,
                  skin: np.ndarray, lesion: np.ndarray,
                  streaks: tuple[np.random.Generator, np.ndarray] | None) -> np.ndarray:
  """The scene (S, S, 3) float32: the lesion over the skin, through its blurred, faded alpha."""
  coverage = geo.coverage
  sigma = cues["border_blur"] * geo.size / 128.0
  alpha = cv2.GaussianBlur(coverage, (0, 0), sigma) if sigma > 0.25 else coverage
  if streaks is not None:  # streaks cross the border: they are part of the lesion
    alpha = np.maximum(alpha, streaks[1])
  fade = np.float32(rng_lesion.uniform(0.0, 0.3))
  alpha = alpha * np.float32(cues["contrast"]) * (1.0 - fade * np.minimum(geo.rho, 1.0)**2)
  return skin + alpha[..., None] * (lesion - skin)


def _optics(rng_noise: np.random.Generator, config: RenderConfig, view: _View,
            size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Illumination (gradient and vignette falloff), field-of-view transmission, sensor noise."""
  y, x = pixel_centres(size)
  gx, gy = np.cos(view.grad_dir), np.sin(view.grad_dir)
  light = 1.0 + np.float32(view.grad_amp) * ((x - size / 2) * np.float32(gx) +
                                             (y - size / 2) * np.float32(gy)) / np.float32(size)
  ex, ey = x - np.float32(view.fov_centre[0]), y - np.float32(view.fov_centre[1])
  ca, sa = np.float32(np.cos(view.fov_angle)), np.float32(np.sin(view.fov_angle))
  r_ell = np.hypot((ex * ca + ey * sa) * np.float32(view.fov_aspect), -ex * sa + ey * ca)
  r_fov = np.float32(view.fov_r * size)
  light = light * (1.0 - np.float32(view.falloff) * np.minimum(r_ell / r_fov, 1.0)**2)
  if view.has_vignette:
    visible = smoothstep(r_fov, r_fov - np.float32(view.fov_edge * size), r_ell)
  else:
    visible = np.ones((size, size), np.float32)
  noise = None
  if config.noise_level > 0:
    sd = np.float32(rng_noise.uniform(0.8, 2.5) * config.noise_level)
    noise = rng_noise.standard_normal((size, size, 3), dtype=np.float32) * sd
  return light, visible, noise


def _expose(scene: np.ndarray, view: _View, light: np.ndarray, visible: np.ndarray,
            noise: np.ndarray | None) -> np.ndarray:
  """uint8 image of `scene`: light, dark field-of-view border, white balance, sensor noise (the
  same for the occluded and the clean scene)."""
  scene = scene * (light * visible)[..., None] * view.white_balance
  scene += (1.0 - visible)[..., None] * np.float32(view.black_level)
  if noise is not None:
    scene += noise
  return np.clip(scene + 0.5, 0, 255).astype(np.uint8)


def _masks(geo: LesionGeometry, streaks: tuple[np.random.Generator, np.ndarray] | None,
           view: _View, visible: np.ndarray, occ: Occlusions) -> dict[str, np.ndarray]:
  """Boolean (S, S) masks: 'lesion' (with the streaks), 'body' (the lesion without the outer
  parts of streaks), 'hair' and 'occlusion', each where visible enough."""
  lesion_mask = geo.coverage >= 0.5
  body_mask = lesion_mask  # the lesion without the outer parts of streaks
  if streaks is not None:
    lesion_mask = lesion_mask | (streaks[1] >= 0.5)
  if view.has_vignette:
    lesion_mask &= visible >= _FOV_VISIBLE
    body_mask &= visible >= _FOV_VISIBLE
  hair_mask = occ.hair * visible >= _OCCLUSION_THRESHOLD
  occlusion = np.maximum(np.maximum(occ.hair, occ.bubble), np.maximum(occ.ruler, occ.sticker))
  occlusion_mask = (occlusion * visible >= _OCCLUSION_THRESHOLD) | hair_mask
  return {"lesion": lesion_mask, "body": body_mask, "hair": hair_mask,
          "occlusion": occlusion_mask}


def _feature_masks(structures: dict[str, np.ndarray], lesion_mask: np.ndarray,
                   body_mask: np.ndarray, size: int) -> np.ndarray:
  """uint8 (S, S, len(FEATURE_NAMES)) in {0, 1} from the structure maps (see render_example).

  Networks are kept to `body_mask` (the lesion contour: not on the parts of streaks that stick
  out), the other structures to `lesion_mask`.
  """
  out = np.zeros((size, size, len(FEATURE_NAMES)), np.uint8)
  r = max(int(round(size / 128.0)), 1)
  kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
  for i, name in enumerate(FEATURE_NAMES):
    if name not in structures:
      continue
    if name.endswith("network"):
      m = structures[name] >= 0.5
      if name == "pigment_network" and "negative_network" in structures:
        m &= structures["negative_network"] < 0.5
      m &= body_mask
    else:
      m = cv2.dilate((structures[name] >= 0.2).astype(np.uint8), kernel) > 0
    out[..., i] = m & lesion_mask
  return out
