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
with the three classes, every diagnosis has look-alikes (tables.APPEARANCE_HAM10000), and a few
signature structures turn up, rarely, in other classes (e.g. regression, a white scar-like
area, in melanoma).

Modules, by concern (this package re-exports the public names, so importers use
`from lesion_jax.data import synthetic` as before):
- tables: class sets, RenderConfig, the palette and the per-class cue/structure tables;
- noise: noise and texture fields, raster helpers, the skin;
- cues: cue sampling and the lesion's contour and geometry;
- lesion: the lesion layer (colours, zones, networks, streaks, dots);
- structures: the ham10000 classes' structures (lacunae, vessels, nests, scar, ...);
- occluders: hairs, ruler, gel bubbles, stickers;
- render: the render stages and `render_example`.
"""
from lesion_jax.data.synthetic.cues import sample_cues
from lesion_jax.data.synthetic.render import render_example
from lesion_jax.data.synthetic.tables import (CLASS_SETS, COLOUR_NAMES, DIAGNOSES,
                                              DIAGNOSES_HAM10000, FEATURE_NAMES, HAM10000_CODES,
                                              HAM10000_COUNTS, HAM10000_PRIORS, MALIGNANT,
                                              MALIGNANT_HAM10000, STRUCTURE_NAMES, RenderConfig,
                                              class_names, malignant_map, own_appearance)

# The name it had when the renderer was one module (tests sample cues through it).
_sample_cues = sample_cues

__all__ = [
    "CLASS_SETS", "COLOUR_NAMES", "DIAGNOSES", "DIAGNOSES_HAM10000", "FEATURE_NAMES",
    "HAM10000_CODES", "HAM10000_COUNTS", "HAM10000_PRIORS", "MALIGNANT", "MALIGNANT_HAM10000",
    "STRUCTURE_NAMES", "RenderConfig", "class_names", "malignant_map", "own_appearance",
    "render_example",
]
