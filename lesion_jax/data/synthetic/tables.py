"""The renderer's tables: class sets, RenderConfig, colours and per-class cue models.

Everything here is data (plus the two lookups over it, `class_names` and `malignant_map`): the
class sets and their malignancy, the knobs of `RenderConfig`, the dermoscopic palette, and per
appearance class the cue distributions (ClassModel), the ham10000 structures' chances
(StructureModel), how secondary colours are arranged (STYLE_PROBABILITIES) and which appearance
class a diagnosis borrows its cues from (APPEARANCE, APPEARANCE_HAM10000). Kept apart from the
drawing code so that tuning a class means editing numbers in one place, never a draw order.
"""
from __future__ import annotations

import dataclasses

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
MALIGNANT_BY_SET = {"isic2017": MALIGNANT, "ham10000": MALIGNANT_HAM10000}


def class_names(class_set: str = "isic2017") -> tuple[str, ...]:
  """The diagnoses of a class set ("isic2017": DIAGNOSES, "ham10000": DIAGNOSES_HAM10000)."""
  if class_set not in CLASS_SETS:
    raise ValueError(f"class_set must be one of {tuple(CLASS_SETS)}, got {class_set!r}")
  return CLASS_SETS[class_set]


def malignant_map(class_set: str = "isic2017") -> dict[str, bool]:
  """Diagnosis name -> malignant, for a class set (a copy)."""
  class_names(class_set)  # validates
  return dict(MALIGNANT_BY_SET[class_set])


# Dermoscopic colours (RGB on light skin; darkened on darker skin). Index order is used by cues.
COLOUR_NAMES = ("light_brown", "dark_brown", "black", "blue_grey", "red_pink")
PALETTE = np.array(
    [
        (178, 118, 80),  # light brown
        (102, 58, 38),  # dark brown
        (40, 30, 32),  # black
        (110, 122, 148),  # blue-grey
        (206, 110, 116),  # red / pink
    ],
    np.float32,
)
SK_TAN = np.array((170, 116, 76), np.float32)  # seborrheic keratosis: lighter, waxy tan
CYST_RGB = np.array((246, 240, 214), np.float32)  # milia-like cysts: bright, yellowish white
WAX_RGB = np.array((236, 214, 188), np.float32)  # warm whitish haze of keratoses
REF_SKIN_LUMA = 195.0

CONTOUR_POINTS = 720  # angles of the lesion's radius table r(theta)


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
      actinic keratosis have cue models and structures of their own; see
      structures.draw_class_structures).
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


@dataclasses.dataclass(frozen=True)
class ClassModel:
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


CLASS_MODELS = (
    ClassModel(  # nevus: small, symmetric, regular, one or two browns
        diameter=(0.32, 0.08), asymmetry=(2.0, 5.0), irregularity=(2.0, 5.5),
        num_colours=(0.30, 0.45, 0.18, 0.06, 0.01),
        colour_weights=(0.45, 0.42, 0.04, 0.03, 0.06),
        border_blur=(1.0, 3.0), contrast=(0.6, 1.0), network_probability=0.6,
        atypia=(2.0, 5.0), globule_probability=0.35, cyst_probability=0.05,
        fissure_probability=0.0, negative_network_probability=0.05, streak_probability=0.08,
        regular_streak_probability=0.8),
    ClassModel(  # melanoma: larger, asymmetric, irregular, many colours incl. blue-grey/black
        diameter=(0.44, 0.09), asymmetry=(4.0, 2.5), irregularity=(4.0, 2.5),
        num_colours=(0.03, 0.14, 0.30, 0.33, 0.20),
        colour_weights=(0.22, 0.25, 0.20, 0.18, 0.15),
        border_blur=(0.5, 3.0), contrast=(0.6, 1.0), network_probability=0.55,
        atypia=(4.0, 3.0), globule_probability=0.5, cyst_probability=0.0,
        fissure_probability=0.0, negative_network_probability=0.35, streak_probability=0.4,
        regular_streak_probability=0.2),
    ClassModel(  # seborrheic keratosis: mid-size, sharp border, tan, waxy, cysts
        diameter=(0.38, 0.08), asymmetry=(2.5, 4.0), irregularity=(2.5, 4.0),
        num_colours=(0.25, 0.45, 0.25, 0.05, 0.0),
        colour_weights=(0.50, 0.35, 0.07, 0.05, 0.03),
        border_blur=(0.3, 1.2), contrast=(0.7, 1.0), network_probability=0.1,
        atypia=(2.0, 4.0), globule_probability=0.5, cyst_probability=0.75,
        fissure_probability=0.6, negative_network_probability=0.02, streak_probability=0.03,
        regular_streak_probability=0.3),
    # The appearance classes below are drawn only with RenderConfig(class_set="ham10000").
    # Their base is a colour of their own (CLASS_BASE_RGB), their cue colours other than
    # red/pink are zones on it, and their signature structures come from STRUCTURE_MODELS.
    ClassModel(  # vascular lesion: small-mid, round, sharply demarcated, red (blue-grey veil)
        diameter=(0.28, 0.07), asymmetry=(2.0, 5.0), irregularity=(1.8, 6.0),
        num_colours=(0.6, 0.34, 0.06, 0.0, 0.0),
        colour_weights=(0.04, 0.04, 0.02, 0.3, 0.6),
        border_blur=(0.3, 1.0), contrast=(0.8, 1.0), network_probability=0.0,
        atypia=(2.0, 5.0), globule_probability=0.02, cyst_probability=0.0,
        fissure_probability=0.0),
    ClassModel(  # basal cell carcinoma: pink, translucent, few browns, blue-grey
        diameter=(0.36, 0.09), asymmetry=(3.0, 3.5), irregularity=(2.5, 4.0),
        num_colours=(0.45, 0.4, 0.13, 0.02, 0.0),
        colour_weights=(0.12, 0.08, 0.02, 0.33, 0.45),
        border_blur=(1.0, 3.0), contrast=(0.55, 0.85), network_probability=0.02,
        atypia=(2.0, 5.0), globule_probability=0.05, cyst_probability=0.02,
        fissure_probability=0.0, streak_probability=0.08, regular_streak_probability=0.3),
    ClassModel(  # dermatofibroma: small, round, regular, pink-brown, fading into the skin
        diameter=(0.26, 0.05), asymmetry=(1.8, 6.0), irregularity=(1.8, 6.0),
        num_colours=(0.65, 0.3, 0.05, 0.0, 0.0),
        colour_weights=(0.2, 0.08, 0.01, 0.03, 0.68),
        border_blur=(2.0, 4.0), contrast=(0.6, 0.95), network_probability=0.1,
        atypia=(2.0, 5.0), globule_probability=0.03, cyst_probability=0.0,
        fissure_probability=0.0, negative_network_probability=0.15,
        regular_streak_probability=0.5),
    ClassModel(  # actinic keratosis: mid-size, ill-defined, red/pink, rarely pigmented
        diameter=(0.38, 0.1), asymmetry=(3.0, 3.0), irregularity=(3.0, 3.5),
        num_colours=(0.5, 0.38, 0.1, 0.02, 0.0),
        colour_weights=(0.2, 0.1, 0.02, 0.03, 0.65),
        border_blur=(2.5, 5.0), contrast=(0.6, 0.9), network_probability=0.03,
        atypia=(3.0, 3.0), globule_probability=0.03, cyst_probability=0.02,
        fissure_probability=0.02),
)
LOOK_DF = 5  # appearance classes 3-6: vascular lesion, BCC, dermatofibroma, actinic keratosis
# Base colour (RGB on light skin) of the appearance classes 3-6.
CLASS_BASE_RGB = np.array(
    [
        (212, 132, 142),  # vascular lesion: pale red-pink septa between the lacunae
        (224, 150, 154),  # basal cell carcinoma: pink, translucent (low contrast)
        (204, 148, 126),  # dermatofibroma: pinkish light brown
        (216, 116, 118),  # actinic keratosis: erythema (the pseudo-network's background)
    ],
    np.float32,
)
VESSEL_RGB = np.array((196, 36, 52), np.float32)  # arborising vessels: bright, in-focus red
NEST_RGB = np.array((98, 112, 138), np.float32)  # blue-grey ovoid nests / globules of BCC
ULCER_RGB = np.array((118, 42, 38), np.float32)  # ulceration / haemorrhagic crust
SCAR_RGB = np.array((246, 238, 232), np.float32)  # white scar-like patch (regression in mel)
SCALE_RGB = np.array((240, 232, 218), np.float32)  # whitish-yellow scale of keratoses
PLUG_RGB = np.array((238, 226, 196), np.float32)  # keratin plugs in follicular openings
# Lacunae, from red to thrombosed: red, maroon, purple, blue-black.
LACUNA_RGB = np.array([(204, 52, 66), (144, 34, 56), (124, 58, 112), (62, 40, 72)], np.float32)


@dataclasses.dataclass(frozen=True)
class StructureModel:
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


STRUCTURE_NAMES = tuple(f.name for f in dataclasses.fields(StructureModel))
STRUCTURE_MODELS = (  # by appearance class (the columns of APPEARANCE_HAM10000)
    StructureModel(white_scar=0.02),  # nevus
    StructureModel(lacunae=0.01, arborizing_vessels=0.06, blue_grey_nests=0.04, ulceration=0.03,
                   white_scar=0.15, pseudo_network=0.02, scale=0.02),  # melanoma
    StructureModel(arborizing_vessels=0.03, pseudo_network=0.05, scale=0.15),  # keratosis
    StructureModel(lacunae=0.97, arborizing_vessels=0.02, ulceration=0.05,
                   white_scar=0.05),  # vascular lesion
    StructureModel(lacunae=0.02, arborizing_vessels=0.85, blue_grey_nests=0.6, ulceration=0.25,
                   white_scar=0.12, pseudo_network=0.03, scale=0.05),  # basal cell carcinoma
    StructureModel(arborizing_vessels=0.02, white_scar=0.88, pigment_ring=0.85,
                   pseudo_network=0.02, scale=0.02),  # dermatofibroma
    StructureModel(arborizing_vessels=0.05, ulceration=0.05, white_scar=0.03,
                   pseudo_network=0.88, scale=0.7),  # actinic keratosis
)


# How secondary colours are arranged, P(style) per appearance class and colour (COLOUR_NAMES
# order): nevi have central/peripheral zones and regular globules, melanomas eccentric blotches
# and irregular dots, keratoses blotches and comedo-like dots.
STYLES = ("centre", "ring", "blotch", "dots")
STYLE_PROBABILITIES = (
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
APPEARANCE = (
    (0.92, 0.06, 0.02),  # nevus: sometimes dysplastic (melanoma-like) or papillomatous
    (0.12, 0.88, 0.0),  # melanoma: early ones look like nevi
    (0.06, 0.02, 0.92),  # seborrheic keratosis: flat ones look like nevi
)
# The same for class_set="ham10000": rows in DIAGNOSES_HAM10000 order, columns the appearance
# classes nevus, melanoma, keratosis, vascular lesion, BCC, dermatofibroma, actinic keratosis.
APPEARANCE_HAM10000 = (
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
  table = APPEARANCE if class_set == "isic2017" else APPEARANCE_HAM10000
  return int(np.argmax(table[label]))
