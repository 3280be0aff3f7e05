"""TFDS builder `isic2018_features`: ISIC 2018 challenge, Task 2 lesion attributes.

The archive. "Skin Lesion Analysis Towards Melanoma Detection" (ISIC 2018), Task 2 (lesion
attribute detection): the Task 1 images, each with five expert binary masks of where a
dermoscopic attribute shows: globules, milia-like cysts, negative network, pigment network and
streaks (most masks of most images are empty). The official splits are 2594 training, 100
validation and 1000 test images.

Expected layout of manual_dir (the official zips unpacked in place):

  ISIC2018_Task1-2_Training_Input/ISIC_xxxxxxx.jpg      (the Task 1 images)
  ISIC2018_Task2_Training_GroundTruth_v3/ISIC_xxxxxxx_attribute_<name>.png
      one binary PNG ({0, 255}, same size as the image) for each <name> in globules,
      milia_like_cyst, negative_network, pigment_network, streaks
  ISIC2018_Task1-2_Validation_Input/  ISIC2018_Task2_Validation_GroundTruth/
  ISIC2018_Task1-2_Test_Input/  ISIC2018_Task2_Test_GroundTruth/
A ground-truth folder is found with or without the `_v3` suffix (not with both).

Splits. `train`, `validation`, `test` (the official Training / Validation / Test sets), keyed by
ISIC image id. A split is generated when its Task 2 ground-truth folder is there (its Input
folder is then required); one without it is not generated (with a warning), so Task 1 images of a
split whose Task 2 ground truth was not downloaded do no harm. No Task 2 ground-truth folder at
all is an error.

Features.
* `id`, `image` (JPEG), as in `isic2018`.
* `feature_masks`: uint8 (H, W, 5) {0, 1}, the attribute masks at the stored image's size, in
  the channel order ATTRIBUTES = ("pigment_network", "negative_network", "streaks",
  "milia_like_cyst", "globules") (also in `info.metadata["feature_names"]`; the first four are,
  in another order, `isic2017_features`' FEATURES), stored as a zlib-compressed Tensor (a PNG
  holds at most four channels).
No `mask`, `label` or `malignant` keys.

Configs. `512` (default): long side at most 512 px, the attribute masks resized with the image
by nearest-neighbour sampling at pixel centres (see isic2017_features.resize_nearest); `full`:
native resolution, JPEGs stored as downloaded. Bad examples (an image without one of its five
attribute PNGs or attribute PNGs without their image, an attribute PNG with an unknown name, an
unreadable or colour attribute PNG, one whose size differs from the image) fail preparation, each
named with its file, unless the builder gets `skip_bad_examples=True`; Beam generation: as in
`lesion_jax.data.builders.common`.

Citation: Codella et al., "Skin lesion analysis toward melanoma detection 2018: a challenge hosted
by the ISIC", arXiv:1902.03368.
"""
from __future__ import annotations

import os
import re
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from lesion_jax import io
from lesion_jax.data.builders import common
from lesion_jax.data.builders import isic2017_features

ATTRIBUTES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
_SPLITS = {"train": "Training", "validation": "Validation", "test": "Test"}
# The official ground-truth folder names; each is also accepted with / without this suffix.
_TRUTH = {"Training": "ISIC2018_Task2_Training_GroundTruth_v3",
          "Validation": "ISIC2018_Task2_Validation_GroundTruth",
          "Test": "ISIC2018_Task2_Test_GroundTruth"}
_SUFFIX = "_v3"
_ATTRIBUTE_FILE = re.compile(r"(ISIC_\d+)_attribute_(\w+?)\.png")


def truth_folder(manual_dir: epath.Path, part: str, dataset: str) -> str:
  """The Task 2 ground-truth folder of `part`, relative to manual_dir: the official name or its
  variant with / without `_v3`, whichever exists (the official name when neither does)."""
  official = _TRUTH[part]
  other = official[:-len(_SUFFIX)] if official.endswith(_SUFFIX) else official + _SUFFIX
  found = [name for name in (official, other) if (manual_dir / name).exists()]
  if len(found) == 2:
    raise common.ManualDataError(
        f"{dataset}: both {manual_dir / official} and {manual_dir / other} exist; keep one "
        "(the _v3 ground truth is the final release). " + common.instructions_hint(dataset))
  return found[0] if found else official


def load_example(record: common.Record, spec: common.LoadSpec) -> dict[str, Any]:
  """The stored example of `record` (values["attributes"]: name → PNG path): checked, resized
  and encoded, or a BadExampleError naming the file and the problem."""
  example, (height, width), size = isic2017_features.load_image(record, spec)
  masks = []
  for name in ATTRIBUTES:
    path = record.values["attributes"][name]
    try:
      mask = common.read_mask(path)
    except io.ImageError as e:
      raise common.BadExampleError(record.id, f"bad attribute mask: {e}") from e
    if mask.shape != (height, width):
      raise common.BadExampleError(
          record.id, f"attribute mask {path} is {mask.shape[1]}x{mask.shape[0]} px but its "
          f"image {record.image} is {width}x{height} px")
    masks.append(mask)
  stacked = np.stack(masks, axis=-1).astype(np.uint8)
  example["feature_masks"] = isic2017_features.resize_nearest(stacked, size)
  return example


def _join(image_dir: epath.Path, truth_dir: epath.Path, dataset: str) -> common.SplitIndex:
  """Images and their five attribute PNGs of one split, joined by id."""
  images = common.index_files(image_dir, r"(ISIC_\d+)\.jpg", dataset)
  common.require(truth_dir, dataset)
  attributes: dict[str, dict[str, epath.Path]] = {}
  unknown: dict[str, list[epath.Path]] = {}
  for path in truth_dir.iterdir():
    m = _ATTRIBUTE_FILE.fullmatch(path.name)
    if m:
      i, name = m.groups()
      if name in ATTRIBUTES:
        attributes.setdefault(i, {})[name] = path
      else:
        unknown.setdefault(i, []).append(path)
  if not attributes and not unknown:
    raise common.ManualDataError(
        f"{dataset}: {truth_dir} holds no file named like ISIC_xxxxxxx_attribute_<name>.png. "
        + common.instructions_hint(dataset))
  index = common.SplitIndex()
  for i in sorted(set(images) | set(attributes) | set(unknown)):
    found = attributes.get(i, {})
    if i not in images:
      source = next(iter(found.values()), None) or unknown[i][0]
      index.problems.append(common.Problem(
          i, f"attribute mask {source} has no image (expected {image_dir}/{i}.jpg)"))
    elif i in unknown:
      index.problems.append(common.Problem(
          i, f"attribute mask {unknown[i][0]} has an unknown attribute name (expected one of "
          f"{sorted(ATTRIBUTES)})"))
    elif len(found) < len(ATTRIBUTES):
      missing = [f"{truth_dir}/{i}_attribute_{n}.png" for n in ATTRIBUTES if n not in found]
      index.problems.append(common.Problem(
          i, f"image {images[i]} lacks attribute mask(s) {', '.join(missing)}"))
    else:
      index.records.append(common.Record(
          id=i, image=os.fspath(images[i]),
          values={"attributes": {n: os.fspath(p) for n, p in found.items()}}))
  return index


class Isic2018Features(isic2017_features.FeatureMapBuilder):
  """ISIC 2018 Task 2: five per-pixel lesion attribute masks."""

  BUILDER_CONFIGS = common.size_configs(masks=False, labels=False)
  FEATURE_NAMES = ATTRIBUTES
  OFFICIAL_SIZES = {"train": 2594, "validation": 100, "test": 1000}
  HOMEPAGE = "https://challenge.isic-archive.com/data/#2018"
  DESCRIPTION = ("ISIC 2018 challenge Task 2: dermoscopy images with per-pixel masks of five "
                 "attributes (pigment network, negative network, streaks, milia-like cysts, "
                 "globules).")
  CITATION = """\
@article{codella2019skin,
  title={Skin lesion analysis toward melanoma detection 2018: A challenge hosted by the
         International Skin Imaging Collaboration (ISIC)},
  author={Codella, Noel and Rotemberg, Veronica and Tschandl, Philipp and Celebi, M Emre and
          Dusza, Stephen and Gutman, David and Helba, Brian and Kalloo, Aadi and Liopyris,
          Konstantinos and Marchetti, Michael and others},
  journal={arXiv preprint arXiv:1902.03368},
  year={2019}
}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the ISIC 2018 challenge archives from https://challenge.isic-archive.com/data/#2018
(the Task 1-2 input images and the Task 2 ground truth) and unzip them into manual_dir, so that
it holds, for each split you want (Training → train, Validation → validation, Test → test):

  ISIC2018_Task1-2_Training_Input/ISIC_xxxxxxx.jpg
  ISIC2018_Task2_Training_GroundTruth_v3/ISIC_xxxxxxx_attribute_globules.png
      ... and _attribute_milia_like_cyst, _negative_network, _pigment_network, _streaks
  ISIC2018_Task1-2_Validation_Input/  ISIC2018_Task2_Validation_GroundTruth/
  ISIC2018_Task1-2_Test_Input/  ISIC2018_Task2_Test_GroundTruth/

Each ground-truth folder may be named with or without the _v3 suffix (not both). A split without
its ground-truth folder is skipped. Other files in these folders (LICENSE.txt, ATTRIBUTION.txt)
are ignored. The same folder can serve the `isic2018` builder's task1_* configs too.
"""

  load = staticmethod(load_example)

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {"feature_masks": isic2017_features.masks_tensor(len(ATTRIBUTES))}

  def _index(self, manual_dir: epath.Path) -> dict[str, common.SplitIndex]:
    paths = {split: (f"ISIC2018_Task1-2_{part}_Input", truth_folder(manual_dir, part, self.name))
             for split, part in _SPLITS.items()}
    present = common.present_splits(manual_dir, self.name,
                                    {split: (truth,) for split, (_, truth) in paths.items()})
    out = {}
    for split in present:
      image_dir, truth_dir = (manual_dir / p for p in paths[split])
      common.require(image_dir, self.name, "the images of this split")
      out[split] = _join(image_dir, truth_dir, self.name)
    return out
