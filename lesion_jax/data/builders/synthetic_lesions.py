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

Imbalanced configs (version 1.2.0; the other configs' data are unchanged). Their labels are not
sampled: each split's label list is fixed, with class counts proportional to the real dataset's
(largest remainders; classes below `min_per_class` are raised to it, taken from the largest
class), and shuffled deterministically (`split_labels`); the renderer draws each example with its
label forced. Counts, train / validation / test:
- `imbalanced2017`: 64 px, the 3 ISIC 2017 classes (nevus, melanoma, seborrheic keratosis) in the
  ISIC 2017 proportions of each split: train 1372/374/254 (2000), validation 78/30/42 (150),
  test 393/117/90 (600), exactly the challenge's counts.
- `imbalanced_tiny`: 32 px, the same proportions, train 66/18/12 (96), validation 17/6/9 (32),
  test 21/6/5 (32); every class at least twice per split. For tests.
- `ham7`: 64 px, the 7 HAM10000 / ISIC 2018 task 3 classes (`synthetic.DIAGNOSES_HAM10000`:
  akiec, bcc, bkl, df, mel, nv, vasc, in that order) in HAM10000's proportions (327/514/1099/
  115/1113/6705/142 of 10015) with at least 5 of each class per split: train 65/103/220/23/222/
  1339/28 (2000; about as few dermatofibromas as in reality), validation 10/15/33/5/33/199/5
  (300; dermatofibroma and vascular lesion raised from 4 to 5, taken from nevus, so that balanced
  accuracy sees every class), test 19/31/66/7/67/402/8 (600; exactly proportional). `malignant`
  follows HAM10000: mel, bcc and akiec.
- `ham7_tiny`: 32 px, the same with at least 2 of each class per split: train 3/5/11/2/11/62/2
  (96), validation and test 2/2/4/2/4/16/2 (32 each; the scarce classes raised, from nevus). For
  tests (e.g. one GAN per scarce class).
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
# Appended only for the configs with a fixed label list / the 7-class set.
_PROPORTIONS_DESCRIPTION = """\
Labels follow fixed per-split class counts proportional to a real dataset's (imbalanced).
"""
_HAM10000_DESCRIPTION = """\
Diagnoses are the 7 HAM10000 / ISIC 2018 task 3 classes (actinic keratosis, basal cell carcinoma,
benign keratosis, dermatofibroma, melanoma, nevus, vascular lesion), each with its own cues
(e.g. red-purple lacunae, arborising vessels and blue-grey nests, a central white scar, a
pseudo-network with scale); malignant = melanoma, basal cell carcinoma, actinic keratosis.
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
  `class_set`: the renderer's ("isic2017" or "ham10000"), and the `label` feature's names.
  `split_proportions`: per split (train, validation, test) class weights; if set, the labels are a
  fixed shuffled list with counts proportional to them (at least `min_per_class` each), see
  `split_labels`, instead of being sampled from the renderer's priors.
  """
  image_size: int = 64
  num_train: int = 1000
  num_validation: int = 200
  num_test: int = 200
  seed: int = 0
  dermoscopic_features: bool = False
  shortcut: bool = False
  class_set: str = "isic2017"
  split_proportions: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None = None
  min_per_class: int = 0


# Per diagnosis (nevus, melanoma, seborrheic keratosis) chance of hair / ruler in the shortcut
# configs' train and validation splits; the overall rate is near the renderer's defaults (0.5,
# 0.15) which the test split uses for every diagnosis.
SHORTCUT_HAIR = (0.3, 0.95, 0.3)
SHORTCUT_RULER = (0.05, 0.6, 0.05)

# Class counts of the real splits the imbalanced configs imitate (train, validation, test).
ISIC2017_COUNTS = ((1372, 374, 254), (78, 30, 42), (393, 117, 90))  # nevus, melanoma, SK
HAM10000_COUNTS = synthetic.HAM10000_COUNTS  # akiec, bcc, bkl, df, mel, nv, vasc of 10015


def proportional_counts(weights: tuple[float, ...], total: int,
                        min_per_class: int = 0) -> tuple[int, ...]:
  """Class counts summing to `total`, proportional to `weights` (largest remainders, ties to
  the first class); classes below `min_per_class` are raised to it, one at a time, each
  from the then largest class."""
  w = np.asarray(weights, np.float64)
  if w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
    raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
  if min_per_class * w.size > total:
    raise ValueError(f"{total} examples cannot hold {min_per_class} of each of {w.size} classes")
  exact = w / w.sum() * total
  counts = np.floor(exact).astype(np.int64)
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[:total - int(counts.sum())]] += 1
  while (counts < min_per_class).any():
    counts[int(np.argmax(counts < min_per_class))] += 1
    counts[int(np.argmax(counts))] -= 1
  return tuple(int(c) for c in counts)


def split_labels(config: "SyntheticLesionsConfig", split: str) -> np.ndarray | None:
  """The label of every example of `split` (int64 (num,)), or None where they are sampled.

  A fixed list: proportional_counts of the split's `split_proportions`, shuffled by a generator
  seeded with (config seed, split), so it is the same on every build.
  """
  if config.split_proportions is None:
    return None
  num = {"train": config.num_train, "validation": config.num_validation,
         "test": config.num_test}[split]
  weights = config.split_proportions[_SPLIT_IDS[split]]
  names = synthetic.class_names(config.class_set)
  if len(weights) != len(names):
    raise ValueError(f"{split} proportions need {len(names)} entries ({names}), got {weights}")
  counts = proportional_counts(weights, num, config.min_per_class)
  labels = np.repeat(np.arange(len(names)), counts)
  return np.random.default_rng([config.seed, _SPLIT_IDS[split], 2018]).permutation(labels)


def render_config(image_size: int, split: str, dermoscopic_features: bool = False,
                  shortcut: bool = False, class_set: str = "isic2017",
                  label: int | None = None) -> synthetic.RenderConfig:
  """The renderer settings of one split of a config (of one example, with `label`)."""
  by_label = shortcut and split != "test"
  if shortcut and class_set != "isic2017":
    raise ValueError("shortcut configs have the isic2017 class set only")
  extra = {"class_set": class_set, "class_priors": synthetic.HAM10000_PRIORS} if (
      class_set != "isic2017") else {}
  return synthetic.RenderConfig(image_size=image_size, dermoscopic_features=dermoscopic_features,
                                hair_probability_by_label=SHORTCUT_HAIR if by_label else None,
                                ruler_probability_by_label=SHORTCUT_RULER if by_label else None,
                                label=label, **extra)


def example_seed(seed: int, split: str, index: int) -> int:
  """Renderer seed of example `index` of `split`: distinct for all (seed, split, index < 2**32)."""
  return (seed * len(_SPLIT_IDS) + _SPLIT_IDS[split]) * 2**32 + index


def example_id(split: str, index: int) -> str:
  return f"synth_{split}_{index:06d}"


def make_example(image_size: int, seed: int, split: str, index: int,
                 dermoscopic_features: bool = False, shortcut: bool = False,
                 class_set: str = "isic2017", label: int | None = None) -> dict[str, Any]:
  """One example as the builder stores it (masks get a trailing channel axis).

  With `dermoscopic_features` it renders the new structures too and adds 'feature_masks'.
  `label` forces the diagnosis (index into the class set's names), as the imbalanced configs do
  with split_labels(config, split)[index].
  """
  config = render_config(image_size, split, dermoscopic_features, shortcut, class_set, label)
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

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "image_clean: the scene without occluders; shortcut configs.",
                   "1.2.0": "Imbalanced configs imbalanced2017, ham7 (the 7 HAM10000 classes) and "
                            "their tiny versions; the other configs' data are unchanged."}
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
      SyntheticLesionsConfig(
          name="imbalanced2017", description="64x64 px, 2000/150/600 examples, 3 classes in the "
          "ISIC 2017 counts of each split.", image_size=64, num_train=2000, num_validation=150,
          num_test=600, split_proportions=ISIC2017_COUNTS),
      SyntheticLesionsConfig(
          name="imbalanced_tiny", description="32x32 px, 96/32/32 examples, ISIC 2017 "
          "proportions, at least 2 per class and split, for tests.", image_size=32, num_train=96,
          num_validation=32, num_test=32, split_proportions=ISIC2017_COUNTS, min_per_class=2),
      SyntheticLesionsConfig(
          name="ham7", description="64x64 px, 2000/300/600 examples, the 7 HAM10000 classes in "
          "its proportions (at least 5 per class and split).", image_size=64, num_train=2000,
          num_validation=300, num_test=600, class_set="ham10000",
          split_proportions=(HAM10000_COUNTS,) * 3, min_per_class=5),
      SyntheticLesionsConfig(
          name="ham7_tiny", description="32x32 px, 96/32/32 examples, 7 HAM10000 classes, at "
          "least 2 per class and split, for tests.", image_size=32, num_train=96,
          num_validation=32, num_test=32, class_set="ham10000",
          split_proportions=(HAM10000_COUNTS,) * 3, min_per_class=2),
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
        "label": tfds.features.ClassLabel(
            names=list(synthetic.class_names(self.builder_config.class_set))),
        "malignant": tfds.features.ClassLabel(names=["benign", "malignant"]),
    }
    description = _DESCRIPTION
    if self.builder_config.split_proportions is not None:
      description += _PROPORTIONS_DESCRIPTION
    if self.builder_config.class_set != "isic2017":
      description += _HAM10000_DESCRIPTION
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
    labels = split_labels(c, split)
    for index in range(num):
      label = None if labels is None else int(labels[index])
      ex = make_example(c.image_size, c.seed, split, index, c.dermoscopic_features, c.shortcut,
                        c.class_set, label)
      yield ex["id"], ex
