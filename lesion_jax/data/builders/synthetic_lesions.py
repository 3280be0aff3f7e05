"""TFDS builder `synthetic_lesions`: procedurally rendered dermoscopy, no download needed.

Usage:
  import lesion_jax.data.builders  # registers the builders with TFDS
  ds = tfds.load("synthetic_lesions", split="train", data_dir=...)          # default s64
  ds = tfds.load("synthetic_lesions/s128", split="test", data_dir=...)
  ds = tfds.load("synthetic_lesions/features128", split="train", data_dir=...)  # + feature_masks
  builder = tfds.builder("synthetic_lesions", data_dir=...,
                         config=SyntheticLesionsConfig(name="big", num_train=5000))

TFDS stores a config under data_dir/synthetic_lesions/<name>/<version> and reuses whatever is
there: give each distinct custom config its own name (built-in names cannot be reused).

Every example has `image_clean`: the same scene without occluders (hair, ruler, bubbles, sticker),
the exact target of occlusion removal (version 1.1.0; `image` and the masks are byte for byte
those of 1.0.0).

The `shortcut*` configs make occlusions a cue for the diagnosis in the train and validation splits
(melanomas mostly have hair and often a ruler, benign lesions seldom), but not in the test split
(every diagnosis with the default chances): a classifier that learns hairs and rulers as cues
scores well on validation and worse on test, the purification paper's point.

The `features*` configs render with `RenderConfig(dermoscopic_features=True)`: lesions may also
show negative network and streaks, and examples carry `feature_masks`, uint8 (S, S, 5) in {0, 1}
with channels in `synthetic.FEATURE_NAMES` order (pigment network, negative network, streaks,
milia-like cysts, globules).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from lesion_jax.data import synthetic

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}

_DESCRIPTION = """\
Synthetic dermoscopy images with lesion masks, rendered procedurally by
`lesion_jax.data.synthetic`: skin of varying tone with shading and texture, a lesion whose shape,
colours and structures (pigment network, globules, milia-like cysts) follow ABCD-style cues that
depend, with overlap, on the diagnosis (nevus / melanoma / seborrheic keratosis), and occlusions
(hair, ruler marks, gel bubbles, calibration stickers) under a dermoscope field-of-view vignette.
`mask` is the lesion before occlusions; `hair_mask` and `occlusion_mask` mark the occluders;
`image_clean` is the same scene rendered without occluders.
"""
# Appended only for configs with dermoscopic_features (the others keep their DatasetInfo as is).
_FEATURES_DESCRIPTION = """\
This config also draws negative network and streaks (more often in melanoma) and gives
`feature_masks`, one {0, 1} channel per dermoscopic structure (pigment network, negative network,
streaks, milia-like cysts, globules), each marking where that structure is drawn.
"""


@dataclasses.dataclass
class SyntheticLesionsConfig(tfds.core.BuilderConfig):
  """Size and split sizes of a `synthetic_lesions` variant; `seed` selects a different sample.

  `dermoscopic_features` draws negative network and streaks too and adds `feature_masks`.
  `shortcut`: in train and validation, hairs and rulers with the per-diagnosis chances of
  SHORTCUT_HAIR / SHORTCUT_RULER (the test split keeps the renderer's defaults).
  """
  image_size: int = 64
  num_train: int = 1000
  num_validation: int = 200
  num_test: int = 200
  seed: int = 0
  dermoscopic_features: bool = False
  shortcut: bool = False


# Per diagnosis (nevus, melanoma, seborrheic keratosis) chance of hair / ruler in the shortcut
# configs' train and validation splits; the overall rate is near the renderer's defaults (0.5,
# 0.15) which the test split uses for every diagnosis.
SHORTCUT_HAIR = (0.3, 0.95, 0.3)
SHORTCUT_RULER = (0.05, 0.6, 0.05)


def render_config(image_size: int, split: str, dermoscopic_features: bool = False,
                  shortcut: bool = False) -> synthetic.RenderConfig:
  """The renderer settings of one split of a config."""
  by_label = shortcut and split != "test"
  return synthetic.RenderConfig(image_size=image_size, dermoscopic_features=dermoscopic_features,
                                hair_probability_by_label=SHORTCUT_HAIR if by_label else None,
                                ruler_probability_by_label=SHORTCUT_RULER if by_label else None)


def example_seed(seed: int, split: str, index: int) -> int:
  """Renderer seed of example `index` of `split`: distinct for all (seed, split, index < 2**32)."""
  return (seed * len(_SPLIT_IDS) + _SPLIT_IDS[split]) * 2**32 + index


def example_id(split: str, index: int) -> str:
  return f"synth_{split}_{index:06d}"


def make_example(image_size: int, seed: int, split: str, index: int,
                 dermoscopic_features: bool = False, shortcut: bool = False) -> dict[str, Any]:
  """One example as the builder stores it (masks get a trailing channel axis).

  With `dermoscopic_features` it renders the new structures too and adds 'feature_masks'.
  """
  config = render_config(image_size, split, dermoscopic_features, shortcut)
  ex = synthetic.render_example(example_seed(seed, split, index), config)
  out = {
      "id": example_id(split, index),
      "image": ex["image"],
      "image_clean": ex["image_clean"],
      "mask": ex["mask"][..., None],
      "hair_mask": ex["hair_mask"][..., None],
      "occlusion_mask": ex["occlusion_mask"][..., None],
      "label": ex["label"],
      "malignant": ex["malignant"],
  }
  if dermoscopic_features:
    out["feature_masks"] = ex["feature_masks"]
  return out


def _mask_feature(size: int) -> tfds.features.Image:
  return tfds.features.Image(shape=(size, size, 1), encoding_format="png")


class SyntheticLesions(tfds.core.GeneratorBasedBuilder):
  """Procedurally rendered dermoscopy images with lesion, hair and occlusion masks."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "image_clean: the scene without occluders; shortcut configs."}
  BUILDER_CONFIGS = [  # the first one is the default
      SyntheticLesionsConfig(name="s64", description="64x64 px, 1000/200/200 examples.",
                             image_size=64),
      SyntheticLesionsConfig(name="s128", description="128x128 px, 1000/200/200 examples.",
                             image_size=128),
      SyntheticLesionsConfig(name="s256", description="256x256 px, 1000/200/200 examples.",
                             image_size=256),
      SyntheticLesionsConfig(name="tiny", description="32x32 px, 64/16/16 examples, for tests.",
                             image_size=32, num_train=64, num_validation=16, num_test=16),
      SyntheticLesionsConfig(
          name="features64", description="64x64 px, 1000/200/200 examples, with negative "
          "network, streaks and per-structure feature_masks.", image_size=64,
          dermoscopic_features=True),
      SyntheticLesionsConfig(
          name="features128", description="128x128 px, 1000/200/200 examples, with negative "
          "network, streaks and per-structure feature_masks.", image_size=128,
          dermoscopic_features=True),
      SyntheticLesionsConfig(
          name="features_tiny", description="32x32 px, 64/16/16 examples, with feature_masks, "
          "for tests.", image_size=32, num_train=64, num_validation=16, num_test=16,
          dermoscopic_features=True),
      SyntheticLesionsConfig(
          name="shortcut128", description="128x128 px, 1000/200/200 examples; hairs and rulers "
          "follow the diagnosis in train/validation, not in test.", image_size=128, shortcut=True),
      SyntheticLesionsConfig(
          name="shortcut_tiny", description="32x32 px, 64/16/16 examples, shortcut occlusions, "
          "for tests.", image_size=32, num_train=64, num_validation=16, num_test=16, shortcut=True),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    features = {
        "id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
        "image_clean": tfds.features.Image(shape=(s, s, 3), encoding_format="png",
                                           doc="The scene without occluders."),
        "mask": _mask_feature(s),
        "hair_mask": _mask_feature(s),
        "occlusion_mask": _mask_feature(s),
        "label": tfds.features.ClassLabel(names=list(synthetic.DIAGNOSES)),
        "malignant": tfds.features.ClassLabel(names=["benign", "malignant"]),
    }
    description = _DESCRIPTION
    if self.builder_config.dermoscopic_features:
      description += _FEATURES_DESCRIPTION
      # Five channels do not fit a PNG; zlib keeps the sparse {0, 1} masks small.
      features["feature_masks"] = tfds.features.Tensor(
          shape=(s, s, len(synthetic.FEATURE_NAMES)), dtype=np.uint8,
          encoding=tfds.features.Encoding.ZLIB,
          doc="1 where a structure is, channels: " + ", ".join(synthetic.FEATURE_NAMES))
    # DatasetInfo is built directly rather than via dataset_info_from_configs(): that would pick
    # up a README.md placed in this package, which all builders here share.
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    c = self.builder_config
    return {
        tfds.Split.TRAIN: self._generate_examples("train", c.num_train),
        tfds.Split.VALIDATION: self._generate_examples("validation", c.num_validation),
        tfds.Split.TEST: self._generate_examples("test", c.num_test),
    }

  def _generate_examples(self, split: str, num: int) -> Iterator[tuple[str, dict[str, Any]]]:
    c = self.builder_config
    for index in range(num):
      ex = make_example(c.image_size, c.seed, split, index, c.dermoscopic_features, c.shortcut)
      yield ex["id"], ex
