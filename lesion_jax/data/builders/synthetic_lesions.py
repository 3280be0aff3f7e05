"""TFDS builder `synthetic_lesions`: procedurally rendered dermoscopy, no download needed.

Usage:
  import lesion_jax.data.builders  # registers the builders with TFDS
  ds = tfds.load("synthetic_lesions", split="train", data_dir=...)          # default s64
  ds = tfds.load("synthetic_lesions/s128", split="test", data_dir=...)
  builder = tfds.builder("synthetic_lesions", data_dir=...,
                         config=SyntheticLesionsConfig(name="big", num_train=5000))

TFDS stores a config under data_dir/synthetic_lesions/<name>/1.0.0 and reuses whatever is there:
give each distinct custom config its own name (built-in names cannot be reused).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds

from lesion_jax.data import synthetic

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}

_DESCRIPTION = """\
Synthetic dermoscopy images with lesion masks, rendered procedurally by
`lesion_jax.data.synthetic`: skin of varying tone with shading and texture, a lesion whose shape,
colours and structures (pigment network, globules, milia-like cysts) follow ABCD-style cues that
depend, with overlap, on the diagnosis (nevus / melanoma / seborrheic keratosis), and occlusions
(hair, ruler marks, gel bubbles, calibration stickers) under a dermoscope field-of-view vignette.
`mask` is the lesion before occlusions; `hair_mask` and `occlusion_mask` mark the occluders.
"""


@dataclasses.dataclass
class SyntheticLesionsConfig(tfds.core.BuilderConfig):
  """Size and split sizes of a `synthetic_lesions` variant; `seed` selects a different sample."""
  image_size: int = 64
  num_train: int = 1000
  num_validation: int = 200
  num_test: int = 200
  seed: int = 0


def example_seed(seed: int, split: str, index: int) -> int:
  """Renderer seed of example `index` of `split`: distinct for all (seed, split, index < 2**32)."""
  return (seed * len(_SPLIT_IDS) + _SPLIT_IDS[split]) * 2**32 + index


def example_id(split: str, index: int) -> str:
  return f"synth_{split}_{index:06d}"


def make_example(image_size: int, seed: int, split: str, index: int) -> dict[str, Any]:
  """One example as the builder stores it (masks get a trailing channel axis)."""
  ex = synthetic.render_example(example_seed(seed, split, index),
                                synthetic.RenderConfig(image_size=image_size))
  return {
      "id": example_id(split, index),
      "image": ex["image"],
      "mask": ex["mask"][..., None],
      "hair_mask": ex["hair_mask"][..., None],
      "occlusion_mask": ex["occlusion_mask"][..., None],
      "label": ex["label"],
      "malignant": ex["malignant"],
  }


def _mask_feature(size: int) -> tfds.features.Image:
  return tfds.features.Image(shape=(size, size, 1), encoding_format="png")


class SyntheticLesions(tfds.core.GeneratorBasedBuilder):
  """Procedurally rendered dermoscopy images with lesion, hair and occlusion masks."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [  # the first one is the default
      SyntheticLesionsConfig(name="s64", description="64x64 px, 1000/200/200 examples.",
                             image_size=64),
      SyntheticLesionsConfig(name="s128", description="128x128 px, 1000/200/200 examples.",
                             image_size=128),
      SyntheticLesionsConfig(name="s256", description="256x256 px, 1000/200/200 examples.",
                             image_size=256),
      SyntheticLesionsConfig(name="tiny", description="32x32 px, 64/16/16 examples, for tests.",
                             image_size=32, num_train=64, num_validation=16, num_test=16),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    # DatasetInfo is built directly rather than via dataset_info_from_configs(): that would pick
    # up a README.md placed in this package, which all builders here share.
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(s, s, 3), encoding_format="png"),
            "mask": _mask_feature(s),
            "hair_mask": _mask_feature(s),
            "occlusion_mask": _mask_feature(s),
            "label": tfds.features.ClassLabel(names=list(synthetic.DIAGNOSES)),
            "malignant": tfds.features.ClassLabel(names=["benign", "malignant"]),
        }),
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
      ex = make_example(c.image_size, c.seed, split, index)
      yield ex["id"], ex
