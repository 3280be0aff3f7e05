"""Procedural dermoscopy renderer behind the embedded `synthetic_lesions` dataset.

Every example is drawn from a seed: a diagnosis is sampled first (priors roughly 0.6 nevus,
0.2 melanoma, 0.2 seborrheic keratosis), then ABCD-style cues (asymmetry, border irregularity,
colours, diameter, ...) from overlapping class-conditional distributions, so the label is
learnable but not perfectly. The cues drive a renderer that imitates ISIC-archive dermoscopy:
pinkish/beige skin with shading and texture, a lesion with coloured zones, pigment network,
globules or milia-like cysts, occlusions (hair, ruler ticks, gel bubbles, calibration
stickers) and the dark circular field of view of a dermoscope.

Pure numpy + OpenCV (no TensorFlow), deterministic: the same (seed, config) gives identical
bytes. Each part of the picture draws from its own random stream, so switching an occlusion
off (probability 0) or on (probability 1) changes only that occlusion, never the lesion: the
same seed renders the same lesion with and without hair, which is handy for hair removal.
Geometry is sampled in image-relative units, so one seed gives the same scene at every size
(only the finest textures and pixel noise differ).

Masks: `mask` is the hard lesion contour (anti-aliased at `supersample` x and thresholded at
50% coverage) restricted to the visible field of view, unaffected by occlusions. Occlusion
masks mark pixels at least 25% covered by a (visible) occluder.

Dermoscopic structures (the five attributes of ISIC 2018 task 2): `feature_masks` marks, per
structure in FEATURE_NAMES order, where it was drawn. Pigment network, globules and milia-like
cysts are always drawn as before; negative network and streaks are drawn only with
`RenderConfig(dermoscopic_features=True)`. They take their randomness from streams of their own,
so with the option off every seed renders exactly the bytes it rendered before they existed,
and with it on a lesion without the new structures renders the same pixels as with it off
(streaks cross the lesion border, so with them `mask` also covers their outer parts).

Class sets: `RenderConfig(class_set="isic2017")` (the default) has the 3 diagnoses above and
renders every seed as before class sets existed. `class_set="ham10000"` has the 7 HAM10000 /
ISIC 2018 task 3 classes (DIAGNOSES_HAM10000, malignant per MALIGNANT_HAM10000): nevus and
melanoma keep their cue models, benign keratosis uses the seborrheic keratosis one, and four
appearance classes are added with cues of their own and structures drawn from a stream of their
own (STRUCTURE_NAMES): vascular lesion (red to purple lacunae, sharply demarcated), basal cell
carcinoma (pink, translucent; arborising vessels, blue-grey ovoid nests, ulceration),
dermatofibroma (small; central white scar-like patch, faint light-brown peripheral ring) and
actinic keratosis (red pseudo-network of skin-coloured follicular openings, whitish scale). As
with the three classes, every diagnosis has look-alikes (_APPEARANCE_HAM10000), and a few
signature structures turn up, rarely, in other classes (e.g. regression, a white scar-like
area, in melanoma).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import cv2
import numpy as np

DIAGNOSES = ("nevus", "melanoma", "seborrheic_keratosis")  # class index = position
# Channels of `feature_masks`, in order (the ISIC 2018 task 2 lesion attributes).
FEATURE_NAMES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
MALIGNANT = {"nevus": False, "melanoma": True, "seborrheic_keratosis": False}

# The seven ISIC 2018 task 3 / HAM10000 classes (RenderConfig(class_set="ham10000")), in the
# alphabetical order of HAM10000's `dx` codes (HAM10000_CODES). Note: the `ham10000` and `isic2018`
# builders order their labels as the ISIC 2018 CSV columns do (common.HAM_CLASSES), not like this.
DIAGNOSES_HAM10000 = ("actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis",
                      "dermatofibroma", "melanoma", "nevus", "vascular_lesion")
HAM10000_CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# Malignant as HAM10000 counts it (mel, bcc and akiec; actinic keratoses/Bowen's disease are
# in situ carcinoma or its precursor, so the dataset's convention counts them as malignant).
MALIGNANT_HAM10000 = {"actinic_keratosis": True, "basal_cell_carcinoma": True,
                      "benign_keratosis": False, "dermatofibroma": False, "melanoma": True,
                      "nevus": False, "vascular_lesion": False}
# Image counts of the classes in HAM10000 (10015 images), DIAGNOSES_HAM10000 order; normalised,
# the priors RenderConfig(class_set="ham10000") samples real-world proportions with.
HAM10000_COUNTS = (327, 514, 1099, 115, 1113, 6705, 142)
HAM10000_PRIORS = tuple(c / sum(HAM10000_COUNTS) for c in HAM10000_COUNTS)
CLASS_SETS = {"isic2017": DIAGNOSES, "ham10000": DIAGNOSES_HAM10000}
_MALIGNANT_BY_SET = {"isic2017": MALIGNANT, "ham10000": MALIGNANT_HAM10000}


def class_names(class_set: str = "isic2017") -> tuple[str, ...]:
  """The diagnoses of a class set ("isic2017": DIAGNOSES, "ham10000": DIAGNOSES_HAM10000)."""
  if class_set not in CLASS_SETS:
    raise ValueError(f"class_set must be one of {tuple(CLASS_SETS)}, got {class_set!r}")
  return CLASS_SETS[class_set]


def malignant_map(class_set: str = "isic2017") -> dict[str, bool]:
  """Diagnosis name -> malignant, for a class set (a copy)."""
  class_names(class_set)  # validates
  return dict(_MALIGNANT_BY_SET[class_set])

# Dermoscopic colours (RGB on light skin; darkened on darker skin). Index order is used by cues.
COLOUR_NAMES = ("light_brown", "dark_brown", "black", "blue_grey", "red_pink")
_PALETTE = np.array(
    [
        (178, 118, 80),  # light brown
        (102, 58, 38),  # dark brown
        (40, 30, 32),  # black
        (110, 122, 148),  # blue-grey
        (206, 110, 116),  # red / pink
    ],
    np.float32,
)
_SK_TAN = np.array((170, 116, 76), np.float32)  # seborrheic keratosis: lighter, waxy tan
_CYST_RGB = np.array((246, 240, 214), np.float32)  # milia-like cysts: bright, yellowish white
_WAX_RGB = np.array((236, 214, 188), np.float32)  # warm whitish haze of keratoses
_REF_SKIN_LUMA = 195.0

_OCCLUSION_THRESHOLD = 0.25  # coverage at which a pixel counts as occluded
_FOV_VISIBLE = 0.3  # field-of-view transmission below which the lesion is not annotated
_CONTOUR_POINTS = 720


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """Rendering knobs; defaults are what the `synthetic_lesions` dataset uses.

  Attributes:
    image_size: output side S in pixels (square images); 32-512 supported.
    hair_probability: chance that an image has hairs (count 1-30, mostly few).
    ruler_probability: chance of ruler tick marks along one edge.
    bubble_probability: chance of gel bubbles.
    sticker_probability: chance of a coloured calibration sticker near a corner.
    vignette_probability: chance of a dark dermoscope field-of-view border.
    class_priors: diagnosis probabilities, in the order of the class set's names (3 for
      "isic2017", 7 for "ham10000", e.g. HAM10000_PRIORS); needed only when `label` is None.
    label: if set, force this diagnosis index (into the class set's names) instead of sampling.
    low_contrast_probability: chance of a faint, hard-to-segment lesion.
    supersample: anti-aliasing factor for hard edges (lesion contour, occluders); None picks
      4 up to 128 px and 2 above (cheaper, and large images need less).
    noise_level: scale of sensor noise (0 disables it).
    dermoscopic_features: also draw negative network and streaks (class-dependent, from
      their own random streams; off by default so that existing seeds render as before).
    hair_probability_by_label, ruler_probability_by_label: if set, the chance of hairs / ruler
      per diagnosis (class set order) instead of the one above: occlusions that correlate with
      the diagnosis, the shortcut a classifier learns (the purification paper's point).
    class_set: "isic2017" (DIAGNOSES: nevus, melanoma, seborrheic keratosis; what every seed
      rendered before class sets existed, unchanged) or "ham10000" (DIAGNOSES_HAM10000, the 7
      ISIC 2018 classes: nevus and melanoma keep their cue models, benign keratosis uses the
      seborrheic keratosis one, and vascular lesion, basal cell carcinoma, dermatofibroma and
      actinic keratosis have cue models and structures of their own; see _draw_class_structures).
  """
  image_size: int = 128
  hair_probability: float = 0.5
  ruler_probability: float = 0.15
  bubble_probability: float = 0.2
  sticker_probability: float = 0.1
  vignette_probability: float = 0.7
  class_priors: tuple[float, ...] = (0.6, 0.2, 0.2)
  label: int | None = None
  low_contrast_probability: float = 0.1
  supersample: int | None = None
  noise_level: float = 1.0
  dermoscopic_features: bool = False
  hair_probability_by_label: tuple[float, ...] | None = None
  ruler_probability_by_label: tuple[float, ...] | None = None
  class_set: str = "isic2017"


def _by_label(probability: float, by_label: tuple[float, ...] | None, label: int) -> float:
  return probability if by_label is None else float(by_label[label])


@dataclasses.dataclass(frozen=True)
class _ClassModel:
  """Class-conditional cue distributions; they overlap on purpose."""
  diameter: tuple[float, float]  # normal (mean, sd) of lesion diameter / image width
  asymmetry: tuple[float, float]  # beta(a, b)
  irregularity: tuple[float, float]  # beta(a, b)
  num_colours: tuple[float, ...]  # P(1..5 colours)
  colour_weights: tuple[float, ...]  # preference over COLOUR_NAMES
  border_blur: tuple[float, float]  # uniform range, px at 128 px
  contrast: tuple[float, float]  # uniform range of lesion opacity
  network_probability: float
  atypia: tuple[float, float]  # beta(a, b): irregularity of the pigment network
  globule_probability: float
  cyst_probability: float
  fissure_probability: float
  # Used only with RenderConfig.dermoscopic_features (drawn from a stream of their own).
  negative_network_probability: float = 0.0
  streak_probability: float = 0.0
  regular_streak_probability: float = 0.5  # P(symmetric starburst | streaks), else irregular


_CLASS_MODELS = (
    _ClassModel(  # nevus: small, symmetric, regular, one or two browns
        diameter=(0.32, 0.08), asymmetry=(2.0, 5.0), irregularity=(2.0, 5.5),
        num_colours=(0.30, 0.45, 0.18, 0.06, 0.01),
        colour_weights=(0.45, 0.42, 0.04, 0.03, 0.06),
        border_blur=(1.0, 3.0), contrast=(0.6, 1.0), network_probability=0.6,
        atypia=(2.0, 5.0), globule_probability=0.35, cyst_probability=0.05,
        fissure_probability=0.0, negative_network_probability=0.05, streak_probability=0.08,
        regular_streak_probability=0.8),
    _ClassModel(  # melanoma: larger, asymmetric, irregular, many colours incl. blue-grey/black
        diameter=(0.44, 0.09), asymmetry=(4.0, 2.5), irregularity=(4.0, 2.5),
        num_colours=(0.03, 0.14, 0.30, 0.33, 0.20),
        colour_weights=(0.22, 0.25, 0.20, 0.18, 0.15),
        border_blur=(0.5, 3.0), contrast=(0.6, 1.0), network_probability=0.55,
        atypia=(4.0, 3.0), globule_probability=0.5, cyst_probability=0.0,
        fissure_probability=0.0, negative_network_probability=0.35, streak_probability=0.4,
        regular_streak_probability=0.2),
    _ClassModel(  # seborrheic keratosis: mid-size, sharp border, tan, waxy, cysts
        diameter=(0.38, 0.08), asymmetry=(2.5, 4.0), irregularity=(2.5, 4.0),
        num_colours=(0.25, 0.45, 0.25, 0.05, 0.0),
        colour_weights=(0.50, 0.35, 0.07, 0.05, 0.03),
        border_blur=(0.3, 1.2), contrast=(0.7, 1.0), network_probability=0.1,
        atypia=(2.0, 4.0), globule_probability=0.5, cyst_probability=0.75,
        fissure_probability=0.6, negative_network_probability=0.02, streak_probability=0.03,
        regular_streak_probability=0.3),
    # The appearance classes below are drawn only with RenderConfig(class_set="ham10000").
    # Their base is a colour of their own (_CLASS_BASE_RGB), their cue colours other than
    # red/pink are zones on it, and their signature structures come from _STRUCTURE_MODELS.
    _ClassModel(  # vascular lesion: small-mid, round, sharply demarcated, red (blue-grey veil)
        diameter=(0.28, 0.07), asymmetry=(2.0, 5.0), irregularity=(1.8, 6.0),
        num_colours=(0.6, 0.34, 0.06, 0.0, 0.0),
        colour_weights=(0.04, 0.04, 0.02, 0.3, 0.6),
        border_blur=(0.3, 1.0), contrast=(0.8, 1.0), network_probability=0.0,
        atypia=(2.0, 5.0), globule_probability=0.02, cyst_probability=0.0,
        fissure_probability=0.0),
    _ClassModel(  # basal cell carcinoma: pink, translucent, few browns, blue-grey
        diameter=(0.36, 0.09), asymmetry=(3.0, 3.5), irregularity=(2.5, 4.0),
        num_colours=(0.45, 0.4, 0.13, 0.02, 0.0),
        colour_weights=(0.12, 0.08, 0.02, 0.33, 0.45),
        border_blur=(1.0, 3.0), contrast=(0.55, 0.85), network_probability=0.02,
        atypia=(2.0, 5.0), globule_probability=0.05, cyst_probability=0.02,
        fissure_probability=0.0, streak_probability=0.08, regular_streak_probability=0.3),
    _ClassModel(  # dermatofibroma: small, round, regular, pink-brown, fading into the skin
        diameter=(0.26, 0.05), asymmetry=(1.8, 6.0), irregularity=(1.8, 6.0),
        num_colours=(0.65, 0.3, 0.05, 0.0, 0.0),
        colour_weights=(0.2, 0.08, 0.01, 0.03, 0.68),
        border_blur=(2.0, 4.0), contrast=(0.6, 0.95), network_probability=0.1,
        atypia=(2.0, 5.0), globule_probability=0.03, cyst_probability=0.0,
        fissure_probability=0.0, negative_network_probability=0.15,
        regular_streak_probability=0.5),
    _ClassModel(  # actinic keratosis: mid-size, ill-defined, red/pink, rarely pigmented
        diameter=(0.38, 0.1), asymmetry=(3.0, 3.0), irregularity=(3.0, 3.5),
        num_colours=(0.5, 0.38, 0.1, 0.02, 0.0),
        colour_weights=(0.2, 0.1, 0.02, 0.03, 0.65),
        border_blur=(2.5, 5.0), contrast=(0.6, 0.9), network_probability=0.03,
        atypia=(3.0, 3.0), globule_probability=0.03, cyst_probability=0.02,
        fissure_probability=0.02),
)
_LOOK_DF = 5  # appearance classes 3-6: vascular lesion, BCC, dermatofibroma, actinic keratosis
# Base colour (RGB on light skin) of the appearance classes 3-6.
_CLASS_BASE_RGB = np.array(
    [
        (212, 132, 142),  # vascular lesion: pale red-pink septa between the lacunae
        (224, 150, 154),  # basal cell carcinoma: pink, translucent (low contrast)
        (204, 148, 126),  # dermatofibroma: pinkish light brown
        (216, 116, 118),  # actinic keratosis: erythema (the pseudo-network's background)
    ],
    np.float32,
)
_VESSEL_RGB = np.array((196, 36, 52), np.float32)  # arborising vessels: bright, in-focus red
_NEST_RGB = np.array((98, 112, 138), np.float32)  # blue-grey ovoid nests / globules of BCC
_ULCER_RGB = np.array((118, 42, 38), np.float32)  # ulceration / haemorrhagic crust
_SCAR_RGB = np.array((246, 238, 232), np.float32)  # white scar-like patch (regression in mel)
_SCALE_RGB = np.array((240, 232, 218), np.float32)  # whitish-yellow scale of keratoses
_PLUG_RGB = np.array((238, 226, 196), np.float32)  # keratin plugs in follicular openings
# Lacunae, from red to thrombosed: red, maroon, purple, blue-black.
_LACUNA_RGB = np.array([(204, 52, 66), (144, 34, 56), (124, 58, 112), (62, 40, 72)], np.float32)


@dataclasses.dataclass(frozen=True)
class _StructureModel:
  """P(structure) per appearance class, for the structures of RenderConfig(class_set="ham10000").

  Each is the signature of one class, but occurs, rarely, in others: regression (a white,
  scar-like area) in melanoma, arborising vessels in amelanotic melanoma, scale on keratoses.
  """
  lacunae: float = 0.0  # vascular lesion: round, sharply demarcated red-purple blobs
  arborizing_vessels: float = 0.0  # basal cell carcinoma: thin, branching red vessels
  blue_grey_nests: float = 0.0  # basal cell carcinoma: blue-grey ovoid nests and globules
  ulceration: float = 0.0  # basal cell carcinoma (mostly): dark red-brown crust
  white_scar: float = 0.0  # dermatofibroma: central white scar-like patch
  pigment_ring: float = 0.0  # dermatofibroma: faint light-brown ring at the periphery
  pseudo_network: float = 0.0  # actinic keratosis: red background, skin-coloured follicles
  scale: float = 0.0  # actinic keratosis: whitish scale


STRUCTURE_NAMES = tuple(f.name for f in dataclasses.fields(_StructureModel))
_STRUCTURE_MODELS = (  # by appearance class (the columns of _APPEARANCE_HAM10000)
    _StructureModel(white_scar=0.02),  # nevus
    _StructureModel(lacunae=0.01, arborizing_vessels=0.06, blue_grey_nests=0.04, ulceration=0.03,
                    white_scar=0.15, pseudo_network=0.02, scale=0.02),  # melanoma
    _StructureModel(arborizing_vessels=0.03, pseudo_network=0.05, scale=0.15),  # keratosis
    _StructureModel(lacunae=0.97, arborizing_vessels=0.02, ulceration=0.05,
                    white_scar=0.05),  # vascular lesion
    _StructureModel(lacunae=0.02, arborizing_vessels=0.85, blue_grey_nests=0.6, ulceration=0.25,
                    white_scar=0.12, pseudo_network=0.03, scale=0.05),  # basal cell carcinoma
    _StructureModel(arborizing_vessels=0.02, white_scar=0.88, pigment_ring=0.85,
                    pseudo_network=0.02, scale=0.02),  # dermatofibroma
    _StructureModel(arborizing_vessels=0.05, ulceration=0.05, white_scar=0.03,
                    pseudo_network=0.88, scale=0.7),  # actinic keratosis
)


# How secondary colours are arranged, P(style) per appearance class and colour (COLOUR_NAMES
# order): nevi have central/peripheral zones and regular globules, melanomas eccentric blotches
# and irregular dots, keratoses blotches and comedo-like dots.
_STYLES = ("centre", "ring", "blotch", "dots")
_STYLE_PROBABILITIES = (
    ((0.1, 0.6, 0.3, 0.0), (0.55, 0.15, 0.1, 0.2), (0.3, 0.0, 0.0, 0.7), (0.7, 0.0, 0.3, 0.0),
     (0.2, 0.4, 0.4, 0.0)),
    ((0.0, 0.4, 0.6, 0.0), (0.15, 0.0, 0.6, 0.25), (0.0, 0.0, 0.55, 0.45), (0.1, 0.0, 0.7, 0.2),
     (0.0, 0.3, 0.7, 0.0)),
    ((0.2, 0.2, 0.6, 0.0), (0.15, 0.0, 0.45, 0.4), (0.0, 0.0, 0.3, 0.7), (0.2, 0.0, 0.8, 0.0),
     (0.0, 0.3, 0.7, 0.0)),
    # class_set="ham10000" only: vascular lesion, basal cell carcinoma (blue-grey blotches and
    # dots, brown dots of pigmented BCC), dermatofibroma (brown rings), actinic keratosis.
    ((0.2, 0.2, 0.6, 0.0), (0.1, 0.0, 0.6, 0.3), (0.0, 0.0, 0.4, 0.6), (0.3, 0.0, 0.7, 0.0),
     (0.0, 0.0, 1.0, 0.0)),
    ((0.0, 0.2, 0.8, 0.0), (0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 0.3, 0.7), (0.0, 0.0, 0.5, 0.5),
     (0.0, 0.3, 0.7, 0.0)),
    ((0.0, 0.8, 0.2, 0.0), (0.0, 0.6, 0.4, 0.0), (0.0, 0.0, 0.5, 0.5), (0.3, 0.0, 0.7, 0.0),
     (0.0, 0.3, 0.7, 0.0)),
    ((0.0, 0.2, 0.8, 0.0), (0.0, 0.0, 0.7, 0.3), (0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 0.7, 0.3),
     (0.0, 0.3, 0.7, 0.0)),
)

# P(appearance class | diagnosis): rows are diagnoses, columns the class model cues are drawn from.
_APPEARANCE = (
    (0.92, 0.06, 0.02),  # nevus: sometimes dysplastic (melanoma-like) or papillomatous
    (0.12, 0.88, 0.0),  # melanoma: early ones look like nevi
    (0.06, 0.02, 0.92),  # seborrheic keratosis: flat ones look like nevi
)
# The same for class_set="ham10000": rows in DIAGNOSES_HAM10000 order, columns the appearance
# classes nevus, melanoma, keratosis, vascular lesion, BCC, dermatofibroma, actinic keratosis.
_APPEARANCE_HAM10000 = (
    (0.0, 0.03, 0.07, 0.0, 0.05, 0.0, 0.85),  # actinic keratosis: pigmented ones, BCC-like
    (0.02, 0.05, 0.03, 0.0, 0.86, 0.0, 0.04),  # basal cell carcinoma: pigmented ones
    (0.06, 0.02, 0.88, 0.0, 0.0, 0.0, 0.04),  # benign keratosis: lichen planus-like ones AK-like
    (0.08, 0.0, 0.04, 0.0, 0.03, 0.85, 0.0),  # dermatofibroma: some look like nevi
    (0.12, 0.84, 0.0, 0.0, 0.02, 0.0, 0.02),  # melanoma: early ones nevus-like, amelanotic ones
    (0.90, 0.06, 0.02, 0.0, 0.0, 0.02, 0.0),  # nevus
    (0.03, 0.03, 0.0, 0.90, 0.04, 0.0, 0.0),  # vascular lesion: nodular melanoma, BCC look-alikes
)


def own_appearance(class_set: str, label: int) -> int:
  """The appearance class a diagnosis's cues usually come from (cues['appearance'] of its typical,
  not look-alike, examples)."""
  table = _APPEARANCE if class_set == "isic2017" else _APPEARANCE_HAM10000
  return int(np.argmax(table[label]))


# ----------------------------------------------------------------------------------------------
# Small helpers.


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
  """Hermite step from 0 at edge0 to 1 at edge1 (edge0 > edge1 gives a falling step)."""
  t = np.clip((x - edge0) * (1.0 / (edge1 - edge0)), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


@functools.lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates as broadcastable (S, 1) and (1, S) arrays; cached per size."""
  c = np.arange(size, dtype=np.float32) + 0.5
  y, x = c[:, None].copy(), c[None, :].copy()
  y.flags.writeable = False
  x.flags.writeable = False
  return y, x


def _child(rng: np.random.Generator) -> np.random.Generator:
  """A generator for a draw whose size depends on the image size.

  It takes one number from `rng` whatever the size, so later draws from `rng` (positions of
  dots, cysts, ...) are the same at every image size.
  """
  return np.random.default_rng(int(rng.integers(2**63)))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Zero-mean, roughly unit-variance noise with blobs about size / cells px across."""
  cells = max(int(cells), 2)
  # White noise on a grid 4x finer than the features, blurred there and then upsampled:
  # upsampling a coarse grid directly (value noise) leaves axis-aligned blocky artefacts.
  n = min(4 * cells, size)
  sigma = n / (2.0 * cells)
  pad = int(math.ceil(2 * sigma))
  grid = _child(rng).standard_normal((n + 2 * pad, n + 2 * pad), dtype=np.float32)
  grid = cv2.GaussianBlur(grid, (0, 0), sigma)[pad:pad + n, pad:pad + n]
  field = grid if n == size else cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
  # Blurred unit white noise has standard deviation 1 / (2 sqrt(pi) sigma).
  return field * np.float32(2.0 * math.sqrt(math.pi) * sigma)


def _canvas_points(points: np.ndarray, factor: int) -> np.ndarray:
  """Output-pixel coordinates (x, y) -> fixed-point (shift=4) coordinates on a factor x canvas."""
  return np.round((np.asarray(points, np.float64) * factor - 0.5) * 16.0).astype(np.int32)


def _downsample(canvas: np.ndarray, size: int) -> np.ndarray:
  """Area-averages a supersampled uint8 canvas to size x size float32 values in [0, 1]."""
  small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
  return small.astype(np.float32) * np.float32(1.0 / 255.0)


def _beta(rng: np.random.Generator, ab: tuple[float, float]) -> float:
  return float(rng.beta(*ab))


# ----------------------------------------------------------------------------------------------
# Cues and geometry (image-relative units, independent of the output size).


def _sample_cues(rng: np.random.Generator, label: int, config: RenderConfig) -> dict[str, Any]:
  """Draws the cues that the renderer turns into pixels.

  Cues come from the model of an appearance class, which is usually the diagnosis but not
  always: dysplastic nevi look like melanoma, early melanomas like nevi, flat seborrheic
  keratoses like nevi. These look-alikes bound the achievable accuracy, as in real dermoscopy.
  """
  table = _APPEARANCE if config.class_set == "isic2017" else _APPEARANCE_HAM10000
  look = int(rng.choice(len(table[label]), p=table[label]))
  m = _CLASS_MODELS[look]
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


def _sample_feature_cues(rng: np.random.Generator, look: int) -> dict[str, float]:
  """Negative network and streaks (RenderConfig.dermoscopic_features), from their own stream.

  They depend on the appearance class like the other cues: mostly melanoma (and Spitz/Reed-like
  nevi, the nevus-looking melanomas and melanoma-looking nevi give the overlap).
  """
  m = _CLASS_MODELS[look]
  u = rng.random(3)  # always three draws, whatever is drawn
  streaks = u[1] < m.streak_probability
  return {
      "negative_network": float(u[0] < m.negative_network_probability),
      "streaks": float(streaks),
      "streaks_regular": float(streaks and u[2] < m.regular_streak_probability),
  }


def _lesion_contour(rng: np.random.Generator, cues: dict[str, Any]) -> np.ndarray:
  """Radius table r(theta) / image width over _CONTOUR_POINTS angles from theta = 0.

  r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k)): k = 2 is symmetric elongation; the odd
  low orders carry asymmetry; orders 4..20 carry border irregularity (notches, bumps).
  """
  r0 = cues["diameter"] / 2.0
  theta = np.linspace(0.0, 2.0 * np.pi, _CONTOUR_POINTS, endpoint=False)
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


# ----------------------------------------------------------------------------------------------
# Layers.


def _render_skin(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float, float]:
  """Skin of a random tone with shading, redness, texture and skin lines; returns luma too."""
  tone = float(rng.beta(1.6, 3.0))  # 0 = very light, 1 = dark
  light = np.array((238, 198, 186), np.float32)
  medium = np.array((214, 162, 134), np.float32)
  dark = np.array((150, 100, 74), np.float32)
  base = light + (medium - light) * min(tone * 2, 1.0) + (dark - medium) * max(tone * 2 - 1, 0.0)
  # Cameras differ: some images look pinker, some more yellow/beige.
  base = base * np.array((1.0, 1.0 + rng.normal(0, 0.03), 1.0 + rng.normal(0, 0.05)), np.float32)
  shade = 1.0 + 0.035 * _smooth_noise(rng, size, 3)
  redness = _smoothstep(-0.5, 1.8, _smooth_noise(rng, size, 4)) * np.float32(rng.uniform(0, 0.1))
  # Fine skin texture (a few px) and faint skin furrows (zero crossings of band-pass noise).
  texture = 1.0 + np.float32(rng.uniform(0.01, 0.03)) * _smooth_noise(rng, size, max(size // 3, 4))
  lines_noise = _smooth_noise(rng, size, 10)
  skin_lines = (1.0 - _smoothstep(0.0, 0.08, np.abs(lines_noise))) * np.float32(
      rng.uniform(0.0, 0.04))
  lum = shade * texture * (1.0 - skin_lines)
  skin = np.empty((size, size, 3), np.float32)
  skin[..., 0] = base[0] * lum
  skin[..., 1] = base[1] * lum * (1.0 - 0.55 * redness)
  skin[..., 2] = base[2] * lum * (1.0 - 0.4 * redness)
  luma = float(base @ np.array((0.299, 0.587, 0.114), np.float32))
  return skin, luma, tone


def _worley_edge_distance(rng: np.random.Generator, size: int, cell: float, jitter: float,
                          warp: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
  """Distance (px) to the nearest Voronoi boundary of jittered grid seeds: a honeycomb.

  `warp` = (dy, dx) px offsets (S, S) of the lookup position bends the cell walls (serpiginous
  lines); without it the result is what it always was.
  """
  g = int(math.ceil(size / cell)) + 3
  idx = np.arange(g, dtype=np.float32) - 1.0
  seeds = np.stack(np.meshgrid(idx, idx, indexing="ij"), axis=-1) + 0.5
  seeds[1::2, :, 1] += 0.5  # staggered rows: hexagonal cells, not a square plaid
  seeds = (seeds + jitter * (_child(rng).random((g, g, 2), dtype=np.float32) - 0.5)) * np.float32(
      cell)
  y, x = _pixel_centres(size)
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


def _disc_coverage(size: int, factor: int, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
  """Anti-aliased coverage of filled discs (output-px centres (x, y) and radii)."""
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  pts = _canvas_points(centres, factor)
  rr = np.round(np.asarray(radii) * factor * 16.0).astype(np.int64)
  for (cx, cy), r in zip(pts, rr):
    cv2.circle(canvas, (int(cx), int(cy)), max(int(r), 8), 255, -1, cv2.LINE_AA, 4)
  return _downsample(canvas, size)


def _points_in_lesion(rng: np.random.Generator, n: int, centre: np.ndarray, rtab: np.ndarray,
                      rho_range: tuple[float, float], size: int) -> np.ndarray:
  """n points (x, y) in output px at normalised radius in rho_range of the lesion contour."""
  theta = rng.uniform(0.0, 2.0 * np.pi, n)
  rho = np.sqrt(rng.uniform(rho_range[0]**2, rho_range[1]**2, n))  # uniform over area
  r = rtab[(theta / (2.0 * np.pi) * _CONTOUR_POINTS).astype(int) % _CONTOUR_POINTS]
  return centre + (rho * r * size)[:, None] * np.stack([np.cos(theta), np.sin(theta)], -1)


def _draw_streaks(rng: np.random.Generator, regular: bool, size: int, factor: int,
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
    r = rtab[int(round((a % (2 * np.pi)) / (2 * np.pi) * _CONTOUR_POINTS)) % _CONTOUR_POINTS]
    radius = (r_start + (r_end - r_start) * t) * r * size
    phi = a + b * t
    along = np.stack([np.cos(phi), np.sin(phi)], -1)
    axis = centre + radius[:, None] * along
    normal = np.stack([-along[:, 1], along[:, 0]], -1)
    half = 0.5 * max(wd * s128, 0.6) * (1.0 - (0.2 if k else 0.5) * t)
    outline = np.concatenate([axis + half[:, None] * normal, (axis - half[:, None] * normal)[::-1]])
    cv2.fillPoly(canvas, [_canvas_points(outline, factor)], 255, cv2.LINE_AA, 4)
    if k:
      tip = _canvas_points(axis[-1:], factor)[0]
      knob_radius = max(int(round(half[0] * 1.25 * factor * 16)), 8)
      cv2.circle(canvas, (int(tip[0]), int(tip[1])), knob_radius, 255, -1, cv2.LINE_AA, 4)
  cover = _downsample(canvas, size)
  if size >= 96:  # pigment, not ink: soft edges
    cover = cv2.GaussianBlur(cover, (0, 0), 0.5 * s128)
  return cover, int(n)


def _negative_network(rng: np.random.Generator, cues: dict[str, Any], size: int,
                      centre: np.ndarray, rtab: np.ndarray,
                      rho: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Negative network: (light lines, dark holes, region) maps in [0, 1], each (S, S).

  Light, serpiginous lines around larger dark "holes": a honeycomb coarser than the pigment
  network and inverted. It covers a patch around a random point of the lesion (a third of the
  time about the whole lesion, as in Spitz nevi) and fades out before the border.
  """
  cell = max(size / rng.uniform(11, 18), 3.0)
  bend = np.float32(rng.uniform(0.25, 0.45) * cell)
  warp = (_smooth_noise(rng, size, 9) * bend, _smooth_noise(rng, size, 9) * bend)
  edge = _worley_edge_distance(rng, size, cell, jitter=0.9, warp=warp)
  width = cell * rng.uniform(0.1, 0.16) * (1.0 + 0.4 * _smooth_noise(rng, size, 10))
  lines = 1.0 - _smoothstep(0.0, 1.0, edge / np.maximum(width, 0.4))
  holes = _smoothstep(0.0, 0.3 * cell, edge)
  y, x = _pixel_centres(size)
  point = _points_in_lesion(rng, 1, centre, rtab, (0.0, 0.5), size)[0]
  reach = (rng.uniform(1.6, 2.2) if rng.random() < 0.33 else rng.uniform(0.55, 1.0))
  reach *= cues["diameter"] / 2.0 * size
  d = np.hypot(x - np.float32(point[0]), y - np.float32(point[1])) * np.float32(1.0 / reach)
  d = d + 0.25 * _smooth_noise(rng, size, 5)
  region = _smoothstep(1.0, 0.7, d) * _smoothstep(1.0, 0.82, rho)
  return lines, holes, region


def _render_lesion(rng: np.random.Generator, cues: dict[str, Any], look: int, size: int,
                   factor: int, centre: np.ndarray, rtab: np.ndarray, rho: np.ndarray,
                   theta: np.ndarray, skin_luma: float,
                   rng_negative: np.random.Generator | None = None,
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
  """
  structures: dict[str, np.ndarray] = {}
  s128 = size / 128.0
  # Lesions on darker skin are darker too; brightness and hue vary per image.
  scale = float(np.clip(skin_luma / _REF_SKIN_LUMA, 0.6, 1.08)) * rng.uniform(0.88, 1.12)
  palette = _PALETTE * np.float32(scale) * (1 + rng.normal(0, 0.04, (5, 3))).astype(np.float32)
  colours = list(cues["colours"])
  # The base is the lightest brown present (pink or blue-grey only without browns); the other
  # colours are zones drawn on top, darker ones last.
  base_order = [0, 1, 4, 3, 2]
  colours.sort(key=base_order.index)
  colours[1:] = sorted(colours[1:], key=[0, 4, 1, 3, 2].index)
  base_rgb = palette[colours[0]]
  zones = colours[1:]
  if look == 2:  # seborrheic keratosis: waxy tan base instead of light brown
    base_rgb = _SK_TAN * np.float32(scale * rng.uniform(0.9, 1.1)) if colours[0] == 0 else base_rgb
  elif look >= 3:  # the classes of class_set="ham10000": a base of their own, and every cue
    # colour other than red/pink (which the base stands for) a zone on it
    base_rgb = _CLASS_BASE_RGB[look - 3] * np.float32(scale * rng.uniform(0.93, 1.07))
    zones = sorted((c for c in colours if c != 4), key=[0, 4, 1, 3, 2].index)
  lesion = np.empty((size, size, 3), np.float32)
  lesion[:] = base_rgb
  asym = cues["asymmetry"]
  # Zones are drawn in a warped radial coordinate: organic outlines, shifted to one side when
  # the lesion is asymmetric.
  skew = np.float32(asym * 0.6) * np.cos(theta - np.float32(rng.uniform(0, 2 * np.pi)))
  rho_w = rho * (1.0 + skew) + 0.16 * _smooth_noise(rng, size, 6)
  for c in zones:
    style = _choose_style(rng, look, c)
    strength = np.float32(rng.uniform(0.7, 1.0))
    if style == "centre":
      t = rng.uniform(0.3, 0.65)
      m = _smoothstep(t + 0.12, t - 0.12, rho_w)
    elif style == "ring":
      t = rng.uniform(0.6, 0.85)
      m = _smoothstep(t - 0.1, t + 0.1, rho_w)
    elif style == "blotch":
      bias = np.float32(0.5 + asym) * rho * np.cos(theta - np.float32(rng.uniform(0, 2 * np.pi)))
      field = _smooth_noise(rng, size, 7) + bias
      t = rng.uniform(0.2, 1.0)
      m = _smoothstep(t - 0.5, t + 0.5, field)
    else:  # dots / globules / peppering
      n = int(rng.poisson(rng.uniform(6, 30) * (cues["diameter"] / 0.3)**2)) + 3
      lo = rng.uniform(0.0, 0.5) if look == 1 else rng.uniform(0.3, 0.7)
      pts = _points_in_lesion(rng, n, centre, rtab, (lo, 0.95), size)
      radii = rng.uniform(0.6, 1.8, n) * s128 * (1.4 if c != 3 else 0.8)
      m = _disc_coverage(size, factor, pts, np.maximum(radii, 0.45))
      if c in (1, 2):  # brown/black dots count as globules (ISIC's "globules" has dots too);
        # blue-grey peppering is not one of the five structures.
        structures["globules"] = np.maximum(structures.get("globules", 0.0), m)
    lesion += (m * strength)[..., None] * (palette[c] - lesion)

  # Pigment network: honeycomb of dark lines; typical ones fade out towards the border,
  # atypical ones are coarse, uneven and broken.
  if cues["network"] > 0:
    atypia = cues["network_atypia"]
    cell = max(size / rng.uniform(26, 40) * (1 + 0.5 * atypia), 2.6)
    edge = _worley_edge_distance(rng, size, cell, jitter=0.6 + 0.3 * atypia)
    width = cell * (0.26 + 0.14 * atypia) * (1.0 + atypia * 0.5 * _smooth_noise(rng, size, 10))
    lines = 1.0 - _smoothstep(0.0, 1.0, edge / np.maximum(width, 0.4))
    if atypia > 0.5:
      region = _smoothstep(-0.8, -0.2, _smooth_noise(rng, size, 8))
    else:
      region = _smoothstep(1.05, 0.55, rho)
    lines *= region
    structures["pigment_network"] = region
    # Lines are brown pigment (darker for atypical networks), not a grey shadow.
    line_rgb = palette[1] * np.float32(1.0 - 0.35 * atypia)
    strength = np.float32(cues["network"] * (0.55 + 0.3 * atypia))
    lesion += (lines * strength)[..., None] * (line_rgb - lesion)

  if rng_negative is not None:  # dark holes, then light lines on top; hides pigment network
    nn_lines, nn_holes, nn_region = _negative_network(rng_negative, cues, size, centre, rtab, rho)
    hole_rgb = palette[1] * np.float32(rng_negative.uniform(0.75, 1.0))
    light_rgb = 0.35 * palette[0] + 0.65 * np.float32(scale) * np.array((232, 200, 182), np.float32)
    hole_strength = np.float32(rng_negative.uniform(0.5, 0.8))
    line_strength = np.float32(rng_negative.uniform(0.6, 0.9))
    lesion += (nn_region * nn_holes * hole_strength)[..., None] * (hole_rgb - lesion)
    lesion += (nn_region * nn_lines * line_strength)[..., None] * (light_rgb - lesion)
    structures["negative_network"] = nn_region

  if streaks is not None:
    rng_streaks, streak_cover = streaks
    dark = palette[1] * np.float32(0.8)  # dark brown, towards black when the lesion has black
    if 2 in colours:
      dark = dark + np.float32(rng_streaks.uniform(0.3, 0.8)) * (palette[2] - dark)
    dark = dark * np.float32(rng_streaks.uniform(0.85, 1.1))
    strength = np.float32(rng_streaks.uniform(0.75, 0.95))
    lesion += (streak_cover * strength)[..., None] * (dark - lesion)
    structures["streaks"] = streak_cover

  if cues["globules"]:
    n = int(rng.poisson(rng.uniform(5, 25) * (cues["diameter"] / 0.3)**2)) + 2
    if look == 1:  # irregular: anywhere, various sizes
      pts = _points_in_lesion(rng, n, centre, rtab, (0.1, 1.0), size)
      radii = rng.uniform(0.6, 2.4, n) * s128
    elif look == 0:  # regular: a ring of similar globules towards the periphery
      pts = _points_in_lesion(rng, n, centre, rtab, (0.6, 0.92), size)
      radii = rng.uniform(1.0, 1.6, n) * s128
    else:  # seborrheic keratosis: a few comedo-like openings
      n = n // 2 + 1
      pts = _points_in_lesion(rng, n, centre, rtab, (0.0, 0.9), size)
      radii = rng.uniform(0.6, 1.3, n) * s128
    dark = palette[2] if 2 in colours and look == 1 else palette[1] * 0.85
    m = _disc_coverage(size, factor, pts, np.maximum(radii, 0.45))
    if size >= 96:  # globules have soft edges
      m = cv2.GaussianBlur(m, (0, 0), 0.5 * s128)
    structures["globules"] = np.maximum(structures.get("globules", 0.0), m)
    lesion += (m * np.float32(rng.uniform(0.45, 0.85)))[..., None] * (dark - lesion)

  if cues["fissures"]:  # cerebriform ridges and furrows of seborrheic keratoses
    n = _smooth_noise(rng, size, max(int(size / (6.0 * s128 + 1)), 6))
    furrows = 1.0 - _smoothstep(0.0, 0.25, np.abs(n))
    lesion *= (1.0 - np.float32(rng.uniform(0.25, 0.45)) * furrows)[..., None]

  if look == 2:  # waxy look: a slight whitish haze, less saturated
    lesion += np.float32(rng.uniform(0.0, 0.08)) * (_WAX_RGB - lesion)

  if cues["cysts"]:  # milia-like cysts: small bright dots
    n = int(rng.poisson(rng.uniform(4, 12) * (cues["diameter"] / 0.3)**2)) + 2
    pts = _points_in_lesion(rng, n, centre, rtab, (0.0, 0.9), size)
    m = _disc_coverage(size, factor, pts, np.maximum(rng.uniform(0.8, 1.8, n) * s128, 0.5))
    lesion += (m * np.float32(rng.uniform(0.7, 1.0)))[..., None] * (_CYST_RGB * scale - lesion)
    structures["milia_like_cyst"] = m

  if class_structures is not None:
    rng_class, class_cues, skin = class_structures
    lesion = _draw_class_structures(rng_class, class_cues, look, lesion, skin, scale, cues, size,
                                    factor, centre, rtab, rho, structures)

  texture = 1.0 + np.float32(rng.uniform(0.04, 0.1)) * _smooth_noise(rng, size, max(size // 6, 4))
  lesion *= texture[..., None]
  return lesion, structures


def _sample_structure_cues(rng: np.random.Generator, look: int) -> dict[str, float]:
  """0/1 per STRUCTURE_NAMES (class_set="ham10000"), from the appearance class's model."""
  m = _STRUCTURE_MODELS[look]
  u = rng.random(len(STRUCTURE_NAMES))  # always one draw per structure, whatever is drawn
  return {name: float(u[i] < getattr(m, name)) for i, name in enumerate(STRUCTURE_NAMES)}


def _blend(lesion: np.ndarray, weight: np.ndarray, rgb: np.ndarray) -> None:
  """In place: lesion += weight (lesion towards rgb), weight (S, S), rgb (3,) or (S, S, 3)."""
  lesion += weight[..., None] * (rgb - lesion)


def _blob(rng: np.random.Generator, size: int, point: np.ndarray, radius: float, aspect: float,
          roughness: float, cells: int) -> np.ndarray:
  """Soft irregular patch (S, S) in [0, 1]: an ellipse of `radius` px (`aspect` >= 1 along a
  random direction) at `point`, its edge roughened by smooth noise."""
  y, x = _pixel_centres(size)
  a = rng.uniform(0.0, np.pi)
  ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
  ex, ey = x - np.float32(point[0]), y - np.float32(point[1])
  dist = np.hypot((ex * ca + ey * sa) / np.float32(aspect), -ex * sa + ey * ca) / np.float32(radius)
  dist = dist + np.float32(roughness) * _smooth_noise(rng, size, cells)
  return _smoothstep(1.0, 0.7, dist)


def _draw_arborizing_vessels(rng: np.random.Generator, size: int, factor: int, centre: np.ndarray,
                             rtab: np.ndarray, radius: float) -> np.ndarray:
  """Coverage (S, S) of arborising vessels: a few trees of thin, wiggly red lines whose branches
  fork into ever thinner ones (basal cell carcinoma). `radius` is the lesion's in px."""
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  n_trees = int(rng.integers(2, 5)) + int(radius > 0.2 * size)
  for _ in range(n_trees):
    start = _points_in_lesion(rng, 1, centre, rtab, (0.0, 0.7), size)[0]
    stack = [(start, rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.65) * radius,
              rng.uniform(1.1, 1.8) * size / 128.0, 0)]
    depth_max = 2 + int(rng.random() < 0.6)
    while stack:
      p0, angle, length, width, depth = stack.pop()
      turns = angle + np.cumsum(rng.normal(0.0, 0.25, 5))
      steps = (length / 5.0) * np.stack([np.cos(turns), np.sin(turns)], -1)
      pts = p0 + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
      thick = max(int(round(width * factor)), 1)
      cv2.polylines(canvas, [_canvas_points(pts, factor)], False, 255, thick, cv2.LINE_AA, 4)
      if depth < depth_max:
        for sign in (-1.0, 1.0):
          stack.append((pts[-1], turns[-1] + sign * rng.uniform(0.3, 0.9),
                        length * rng.uniform(0.5, 0.75), width * 0.62, depth + 1))
  return _downsample(canvas, size)


def _draw_nests(rng: np.random.Generator, size: int, factor: int, centre: np.ndarray,
                rtab: np.ndarray, radius: float) -> np.ndarray:
  """Coverage (S, S) of blue-grey ovoid nests and a few blue-grey globules (basal cell
  carcinoma), slightly blurred: the pigment is deep."""
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  n = int(rng.integers(1, 6))
  pts = _canvas_points(_points_in_lesion(rng, n, centre, rtab, (0.0, 0.8), size), factor)
  major = rng.uniform(0.12, 0.3, n) * radius
  minor = major * rng.uniform(0.45, 0.8, n)
  angle = rng.uniform(0.0, 180.0, n)
  for (cx, cy), a, b, t in zip(pts, major, minor, angle):
    axes = (max(int(round(a * factor * 16)), 8), max(int(round(b * factor * 16)), 8))
    cv2.ellipse(canvas, (int(cx), int(cy)), axes, float(t), 0, 360, 255, -1, cv2.LINE_AA, 4)
  k = int(rng.poisson(4.0)) + 1
  dots = _points_in_lesion(rng, k, centre, rtab, (0.0, 0.9), size)
  dot_r = rng.uniform(0.05, 0.12, k) * radius
  for (cx, cy), r in zip(_canvas_points(dots, factor), dot_r):
    cv2.circle(canvas, (int(cx), int(cy)), max(int(round(r * factor * 16)), 8), 255, -1,
               cv2.LINE_AA, 4)
  cover = _downsample(canvas, size)
  sigma = 0.8 * size / 128.0
  return cv2.GaussianBlur(cover, (0, 0), sigma) if sigma > 0.3 else cover


def _draw_lacunae(rng: np.random.Generator, size: int, factor: int, centre: np.ndarray,
                  rtab: np.ndarray, diameter: float) -> list[tuple[np.ndarray, int]]:
  """Lacunae of a vascular lesion: round, sharply demarcated blobs packed in the lesion, from
  red to purple (blue-black when thrombosed). Returns [(coverage, _LACUNA_RGB index)]."""
  n = int(rng.poisson(rng.uniform(22.0, 40.0) * (diameter / 0.3)**2)) + 5
  pts = _points_in_lesion(rng, n, centre, rtab, (0.0, 0.92), size)
  radii = rng.uniform(0.018, 0.034, n) * size * math.sqrt(diameter / 0.3)
  purple = rng.beta(1.5, 2.5)
  black = 0.35 if rng.random() < 0.15 else 0.05  # thrombosed: some blue-black lacunae
  p = np.array(((1 - purple) * 0.6, (1 - purple) * 0.4, purple, black))
  kind = rng.choice(4, size=n, p=p / p.sum())
  return [(_disc_coverage(size, factor, pts[kind == k], radii[kind == k]), k)
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
  r_at = rtab[(ang / (2 * np.pi) * _CONTOUR_POINTS).astype(int) % _CONTOUR_POINTS]
  keep = np.hypot(rel[:, 0], rel[:, 1]) < 0.95 * r_at
  return centre + rel[keep] * size, radii[keep], plug[keep]


def _draw_class_structures(rng: np.random.Generator, sc: dict[str, float], look: int,
                           lesion: np.ndarray, skin: np.ndarray, scale: float,
                           cues: dict[str, Any], size: int, factor: int, centre: np.ndarray,
                           rtab: np.ndarray, rho: np.ndarray,
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
  s128 = size / 128.0
  sc_scale = np.float32(scale)
  light = np.float32(min(1.0, 0.4 + 0.6 * scale))  # white stays whitish on darker skin
  radius = cues["diameter"] / 2.0 * size
  if sc["pigment_ring"]:
    t = rng.uniform(0.55, 0.75)
    rho_w = rho + 0.1 * _smooth_noise(rng, size, 8)
    ring = _smoothstep(t - 0.2, t + 0.05, rho_w) * _smoothstep(1.08, 0.9, rho)
    ring_rgb = _PALETTE[0] * sc_scale * np.float32(rng.uniform(0.9, 1.1))
    _blend(lesion, ring * np.float32(rng.uniform(0.35, 0.6)), ring_rgb)
    if rng.random() < 0.5:  # a delicate pigment network in the ring
      cell = max(size / rng.uniform(30, 42), 2.6)
      edge = _worley_edge_distance(rng, size, cell, jitter=0.6)
      lines = 1.0 - _smoothstep(0.0, 1.0, edge / max(cell * 0.22, 0.4))
      _blend(lesion, lines * ring * np.float32(rng.uniform(0.25, 0.45)), _PALETTE[1] * sc_scale)
      structures["pigment_network"] = np.maximum(structures.get("pigment_network", 0.0), ring)
  if sc["white_scar"]:
    central = look == _LOOK_DF
    off = rng.uniform(0.0, 0.2) if central else rng.uniform(0.15, 0.5)
    size_rel = rng.uniform(0.32, 0.5) if central else rng.uniform(0.2, 0.4)
    a = rng.uniform(0, 2 * np.pi)
    r_at = rtab[int(a / (2 * np.pi) * _CONTOUR_POINTS) % _CONTOUR_POINTS] * size
    point = centre + off * r_at * np.array((np.cos(a), np.sin(a)))
    patch = _blob(rng, size, point, size_rel * radius, rng.uniform(1.0, 1.5), 0.25, 14)
    _blend(lesion, patch * np.float32(rng.uniform(0.65, 0.9)), _SCAR_RGB * light)
  if sc["lacunae"]:
    for cover, k in _draw_lacunae(rng, size, factor, centre, rtab, cues["diameter"]):
      _blend(lesion, cover * np.float32(rng.uniform(0.85, 1.0)), _LACUNA_RGB[k] * sc_scale)
  if sc["pseudo_network"]:
    pts, radii, plug = _follicles(rng, centre, rtab, size)
    holes = _disc_coverage(size, factor, pts, np.maximum(radii, 0.4))
    plugs = _disc_coverage(size, factor, pts[plug], np.maximum(0.45 * radii[plug], 0.4))
    if size >= 96:  # soft edges
      holes = cv2.GaussianBlur(holes, (0, 0), 0.4 * s128)
    _blend(lesion, holes * np.float32(rng.uniform(0.7, 0.9)), skin * np.float32(1.02))
    _blend(lesion, plugs * np.float32(rng.uniform(0.5, 0.8)), _PLUG_RGB * light)
  if sc["blue_grey_nests"]:
    nests = _draw_nests(rng, size, factor, centre, rtab, radius)
    _blend(lesion, nests * np.float32(rng.uniform(0.6, 0.85)), _NEST_RGB * sc_scale)
  if sc["arborizing_vessels"]:
    vessels = _draw_arborizing_vessels(rng, size, factor, centre, rtab, radius)
    vessels *= _smoothstep(1.02, 0.85, rho)
    _blend(lesion, vessels * np.float32(rng.uniform(0.75, 0.95)), _VESSEL_RGB * sc_scale)
  if sc["ulceration"]:
    point = _points_in_lesion(rng, 1, centre, rtab, (0.0, 0.6), size)[0]
    crust = _blob(rng, size, point, rng.uniform(0.15, 0.35) * radius, rng.uniform(1.0, 1.8),
                  0.35, 16)
    _blend(lesion, crust * np.float32(rng.uniform(0.7, 0.9)), _ULCER_RGB * sc_scale)
  if sc["scale"]:
    field = _smooth_noise(rng, size, 7) + 0.5 * _smooth_noise(rng, size, max(size // 5, 4))
    t = rng.uniform(0.0, 1.0)
    flakes = _smoothstep(t - 0.4, t + 0.6, field) * _smoothstep(1.05, 0.75, rho)
    _blend(lesion, flakes * np.float32(rng.uniform(0.45, 0.75)), _SCALE_RGB * light)
  return lesion


def _choose_style(rng: np.random.Generator, look: int, colour: int) -> str:
  """How a secondary colour is arranged inside the lesion (by appearance class and colour)."""
  return _STYLES[int(rng.choice(len(_STYLES), p=_STYLE_PROBABILITIES[look][colour]))]


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
    pts = [_canvas_points(curve, factor)]
    cv2.polylines(colour_canvas, pts, False, colour, thick_px, cv2.LINE_AA, 4)
    cv2.polylines(cover_canvas, pts, False, 255, thick_px, cv2.LINE_AA, 4)
  colour = cv2.resize(colour_canvas, (size, size), interpolation=cv2.INTER_AREA)
  return colour.astype(np.float32), _downsample(cover_canvas, size), count


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
    segments.append(_canvas_points([(x, y0), (x, y0 + length)], factor))
    if i % 10 == 0:
      org = (int((x + 0.01 * size) * factor), int((y0 + length + 0.06 * size) * factor))
      cv2.putText(canvas, str(number), org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255,
                  max(thick // 2, 1), cv2.LINE_AA)
      number += 1
    x += spacing
    i += 1
  cv2.polylines(canvas, segments, False, 255, thick, cv2.LINE_AA, 4)
  if rng.random() < 0.5:  # baseline of the scale
    cv2.polylines(canvas, [_canvas_points([(-size, y0), (2 * size, y0)], factor)], False, 255,
                  thick, cv2.LINE_AA, 4)
  # Put it on a random edge, slightly tilted.
  angle = 90.0 * int(rng.integers(0, 4)) + rng.normal(0, 4)
  rot = cv2.getRotationMatrix2D((w / 2 - 0.5, w / 2 - 0.5), angle, 1.0)
  canvas = cv2.warpAffine(canvas, rot, (w, w), flags=cv2.INTER_LINEAR)
  return _downsample(canvas, size)


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
  pts = _canvas_points(centres, factor)
  hl = _canvas_points(centres - 0.4 * radii[:, None], factor)
  for (cx, cy), (hx, hy), r in zip(pts, hl, radii):
    rf = int(round(r * factor * 16))
    cv2.circle(disc, (int(cx), int(cy)), rf, 255, -1, cv2.LINE_AA, 4)
    cv2.circle(rim, (int(cx), int(cy)), rf, 200, line, cv2.LINE_AA, 4)
    cv2.circle(rim, (int(hx), int(hy)), max(int(rf * 0.18), 8), 255, -1, cv2.LINE_AA, 4)
    cv2.circle(edge, (int(cx), int(cy)), rf + line * 16, 255, line, cv2.LINE_AA, 4)
  return _downsample(disc, size), _downsample(rim, size), _downsample(edge, size)


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
    c = _canvas_points(centre[None], factor)[0]
    cv2.circle(canvas, (int(c[0]), int(c[1])), int(radius * factor * 16), 255, -1, cv2.LINE_AA, 4)
  else:
    box = cv2.boxPoints(((float(centre[0]), float(centre[1])),
                         (2 * radius, 2 * radius * rng.uniform(0.5, 1.0)), rng.uniform(0, 90)))
    cv2.fillPoly(canvas, [_canvas_points(box, factor)], 255, cv2.LINE_AA, 4)
  cover = _downsample(canvas, size)
  y, x = _pixel_centres(size)
  # Printed stickers are glossy: a gentle brightness gradient across them.
  g = 1.0 + 0.15 * ((x - centre[0]) + (y - centre[1])) / (radius * 2)
  return rgb * np.clip(g, 0.75, 1.2)[..., None], cover


# ----------------------------------------------------------------------------------------------
# Public entry point.


def render_example(seed: int, config: RenderConfig = RenderConfig()) -> dict[str, Any]:
  """Renders one synthetic dermoscopy example.

  Args:
    seed: any non-negative int; the same (seed, config) always gives identical output.
    config: rendering knobs.

  Returns:
    dict with 'image' uint8 (S, S, 3) RGB; 'image_clean' the same scene without occluders
    (no hair, ruler, bubbles or sticker; same lesion, skin, optics and sensor noise); 'mask', 'hair_mask', 'occlusion_mask' uint8 (S, S)
    in {0, 255} (occlusion = hair | ruler | bubbles | sticker); 'label' int index into
    class_names(config.class_set) (DIAGNOSES by default); 'malignant' int 0/1 by that class
    set's map; 'cues' dict of floats: the ABCD cues used to draw it
    ('asymmetry', 'border_irregularity', 'num_colours', 'diameter' as a fraction of the image
    width, one-hot 'has_<colour>' flags) plus other drawing parameters ('border_blur' in px at
    128 px, 'contrast', 'network', 'network_atypia', 'globules', 'cysts', 'fissures', and the
    nuisances 'skin_tone', 'vignette', 'num_hairs', ...); with `dermoscopic_features` also
    'negative_network', 'streaks', 'streaks_regular' (0/1) and 'num_streaks'; with
    class_set="ham10000" also one 0/1 per STRUCTURE_NAMES ('lacunae', 'arborizing_vessels',
    ...), and 'appearance' ranges over 7 appearance classes (3-6: vascular lesion, basal cell
    carcinoma, dermatofibroma, actinic keratosis).
    'feature_masks' uint8 (S, S, 5) in {0, 1}, channels in FEATURE_NAMES order, each inside
    `mask`: for the pigment and negative networks the region the network pattern occupies
    (where its fade-in weight is at least one half, as an annotator outlines a patch of
    network, not only the line pixels; pigment network is not marked where a negative network
    covers it, nor on the parts of streaks outside the lesion contour); for streaks, milia-like cysts and globules the drawn lines or dots (coverage at
    least 0.2), dilated by about 1 px per 128 px (at least 1 px). Globules include brown/black
    dot-style colour zones. It is given with the option off too: pigment network, cysts and
    globules are drawn regardless, and the negative network and streaks channels are then zero.
  """
  size = int(config.image_size)
  if size < 16:
    raise ValueError(f"image_size must be at least 16, got {size}")
  factor = config.supersample or (4 if size <= 128 else 2)
  # One independent stream per part of the picture (see the module docstring).
  (rng_cues, rng_lesion, rng_skin, rng_view, rng_hair, rng_ruler, rng_bubble, rng_sticker,
   rng_noise) = (np.random.default_rng([seed, k]) for k in range(9))
  # Streams 9-11 are only created with dermoscopic_features, for the structures added with it;
  # nothing above draws from them, so existing seeds render unchanged.

  # Stream 12 is only created with class_set="ham10000", for the structures of its classes.
  names = class_names(config.class_set)
  for field in ("hair_probability_by_label", "ruler_probability_by_label"):
    by_label = getattr(config, field)
    if by_label is not None and len(by_label) != len(names):
      raise ValueError(f"{field} needs {len(names)} entries ({names}), got {by_label}")

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
  cues = _sample_cues(rng_cues, label, config)
  rtab = _lesion_contour(rng_cues, cues)
  offset = np.clip(rng_cues.normal(0, 0.06, 2), -0.12, 0.12)
  centre = (0.5 + offset) * size

  # Field of view (sampled up front: occluders are placed inside it).
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
  fov_inner = fov_r * size / max(fov_aspect, 1.0)  # smallest radius of the field of view

  # Lesion geometry at pixel level.
  y, x = _pixel_centres(size)
  dy, dx = y - np.float32(centre[1]), x - np.float32(centre[0])
  theta = np.arctan2(dy, dx)
  bins = ((theta + np.float32(np.pi)) * np.float32(_CONTOUR_POINTS / (2 * np.pi))).astype(np.int32)
  # Internal zones use a radial coordinate relative to a smoothed outline (orders <= 3): the
  # ragged contour itself would give them spoke-like straight edges.
  spectrum = np.fft.rfft(rtab)
  spectrum[4:] = 0
  smooth = np.fft.irfft(spectrum, _CONTOUR_POINTS).astype(np.float32) * np.float32(size)
  smooth = np.roll(smooth, -_CONTOUR_POINTS // 2)  # bins start at theta = -pi
  rho = np.hypot(dx, dy) / smooth[bins % _CONTOUR_POINTS]
  ang = np.linspace(0, 2 * np.pi, _CONTOUR_POINTS, endpoint=False)
  contour = centre + (rtab * size)[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
  canvas = np.zeros((size * factor, size * factor), np.uint8)
  cv2.fillPoly(canvas, [_canvas_points(contour, factor)], 255, cv2.LINE_8, 4)
  coverage = _downsample(canvas, size)

  skin, skin_luma, tone = _render_skin(rng_skin, size)
  look = int(cues["appearance"])
  feature_cues: dict[str, float] = {}
  rng_negative = streaks = None
  if config.dermoscopic_features:
    rng_features, rng_negative, rng_streaks = (np.random.default_rng([seed, k])
                                               for k in (9, 10, 11))
    feature_cues = _sample_feature_cues(rng_features, look)
    feature_cues["num_streaks"] = 0.0
    if not feature_cues["negative_network"]:
      rng_negative = None
    if feature_cues["streaks"]:
      streak_cover, count = _draw_streaks(rng_streaks, bool(feature_cues["streaks_regular"]), size,
                                          factor, centre, rtab)
      streaks = (rng_streaks, streak_cover)
      feature_cues["num_streaks"] = float(count)
  class_structures = None
  structure_cues: dict[str, float] = {}
  if config.class_set != "isic2017":
    rng_class = np.random.default_rng([seed, 12])
    structure_cues = _sample_structure_cues(rng_class, look)
    class_structures = (rng_class, structure_cues, skin)
  lesion, structures = _render_lesion(rng_lesion, cues, look, size, factor, centre, rtab, rho,
                                      theta, skin_luma, rng_negative, streaks, class_structures)
  sigma = cues["border_blur"] * size / 128.0
  alpha = cv2.GaussianBlur(coverage, (0, 0), sigma) if sigma > 0.25 else coverage
  if streaks is not None:  # streaks cross the border: they are part of the lesion
    alpha = np.maximum(alpha, streaks[1])
  fade = np.float32(rng_lesion.uniform(0.0, 0.3))
  alpha = alpha * np.float32(cues["contrast"]) * (1.0 - fade * np.minimum(rho, 1.0)**2)
  image = skin + alpha[..., None] * (lesion - skin)

  # Occluders, in physical order: hairs on the skin, gel bubbles, then ruler and sticker.
  clean = image.copy()  # the scene without occluders (ground truth for inpainting)
  hair = np.zeros((size, size), np.float32)
  num_hairs = 0.0
  if rng_hair.random() < _by_label(config.hair_probability, config.hair_probability_by_label, label):
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
  if rng_ruler.random() < _by_label(config.ruler_probability, config.ruler_probability_by_label, label):
    # Keep the ticks inside the field of view whichever edge they end up on.
    inset = max(0.0, max(*fov_centre, *(size - fov_centre)) - fov_inner)
    ruler = _draw_ruler(rng_ruler, size, factor, inset)
    ink = np.array((20, 20, 24), np.float32) * np.float32(rng_ruler.uniform(0.6, 2.0))
    image += (ruler * np.float32(rng_ruler.uniform(0.75, 0.95)))[..., None] * (ink - image)
  sticker = np.zeros((size, size), np.float32)
  if rng_sticker.random() < config.sticker_probability:
    sticker_rgb, sticker = _draw_sticker(rng_sticker, size, factor, fov_centre, fov_inner)
    image += sticker[..., None] * (sticker_rgb - image)

  # Optics: illumination gradient, vignette falloff, dark field-of-view border, white balance.
  gx, gy = np.cos(grad_dir), np.sin(grad_dir)
  light = 1.0 + np.float32(grad_amp) * ((x - size / 2) * np.float32(gx) +
                                        (y - size / 2) * np.float32(gy)) / np.float32(size)
  ex, ey = x - np.float32(fov_centre[0]), y - np.float32(fov_centre[1])
  ca, sa = np.float32(np.cos(fov_angle)), np.float32(np.sin(fov_angle))
  r_ell = np.hypot((ex * ca + ey * sa) * np.float32(fov_aspect), -ex * sa + ey * ca)
  r_fov = np.float32(fov_r * size)
  light = light * (1.0 - np.float32(falloff) * np.minimum(r_ell / r_fov, 1.0)**2)
  if has_vignette:
    visible = _smoothstep(r_fov, r_fov - np.float32(fov_edge * size), r_ell)
  else:
    visible = np.ones((size, size), np.float32)
  noise = None
  if config.noise_level > 0:
    sd = np.float32(rng_noise.uniform(0.8, 2.5) * config.noise_level)
    noise = rng_noise.standard_normal((size, size, 3), dtype=np.float32) * sd

  def expose(scene: np.ndarray) -> np.ndarray:  # the same optics and sensor noise for both
    scene = scene * (light * visible)[..., None] * white_balance
    scene += (1.0 - visible)[..., None] * np.float32(black_level)
    if noise is not None:
      scene += noise
    return np.clip(scene + 0.5, 0, 255).astype(np.uint8)

  image, clean = expose(image), expose(clean)

  lesion_mask = coverage >= 0.5
  body_mask = lesion_mask  # the lesion without the outer parts of streaks
  if streaks is not None:
    lesion_mask = lesion_mask | (streaks[1] >= 0.5)
  if has_vignette:
    lesion_mask &= visible >= _FOV_VISIBLE
    body_mask &= visible >= _FOV_VISIBLE
  hair_mask = hair * visible >= _OCCLUSION_THRESHOLD
  occlusion = np.maximum(np.maximum(hair, bubble), np.maximum(ruler, sticker)) * visible
  occlusion_mask = (occlusion >= _OCCLUSION_THRESHOLD) | hair_mask

  cues_out = {k: float(v) for k, v in cues.items() if k != "colours"}
  for i, name in enumerate(COLOUR_NAMES):
    cues_out[f"has_{name}"] = float(i in cues["colours"])
  cues_out.update(skin_tone=tone, vignette=float(has_vignette), num_hairs=num_hairs,
                  centre_x=float(centre[0] / size), centre_y=float(centre[1] / size))
  cues_out.update(feature_cues)
  cues_out.update(structure_cues)
  return {
      "image": image,
      "image_clean": clean,
      "mask": lesion_mask.astype(np.uint8) * np.uint8(255),
      "hair_mask": hair_mask.astype(np.uint8) * np.uint8(255),
      "occlusion_mask": occlusion_mask.astype(np.uint8) * np.uint8(255),
      "label": label,
      "malignant": int(_MALIGNANT_BY_SET[config.class_set][names[label]]),
      "cues": cues_out,
      "feature_masks": _feature_masks(structures, lesion_mask, body_mask, size),
  }


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
