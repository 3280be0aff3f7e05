"""TFDS builder `isic2017_features`: ISIC 2017 challenge, Part 2 dermoscopic features.

The archive. "Skin Lesion Analysis Towards Melanoma Detection" (ISBI 2017), Part 2 (dermoscopic
feature extraction): the Part 1 images, each cut into superpixels, with an expert's verdict per
superpixel on four dermoscopic features: pigment network, negative network, milia-like cysts and
streaks. The official splits are 2000 training, 150 validation and 600 test images.

Expected layout of manual_dir (the official zips unpacked in place; see
MANUAL_DOWNLOAD_INSTRUCTIONS):

  ISIC-2017_Training_Data/ISIC_xxxxxxx.jpg              (the Part 1 images)
  ISIC-2017_Training_Data/ISIC_xxxxxxx_superpixels.png  superpixel map, same size as the image;
      each pixel's superpixel index in RGB: index = R + 256 * G + 65536 * B (ISIC's encoding)
  ISIC-2017_Training_Part2_GroundTruth/ISIC_xxxxxxx_features.json
      {"pigment_network": [0, 1, ...], "negative_network": [...], "milia_like_cyst": [...],
       "streaks": [...]}: per superpixel index, 1 if that superpixel shows the feature
  ... the same with Validation and Test_v2 instead of Training.

Splits. `train` (Training), `validation` (Validation), `test` (Test_v2), keyed by ISIC image id.
A split is generated when its Part2_GroundTruth folder is there (its Data folder is then
required); one without it is not generated (a warning says so), so Part 1 images of a split
whose Part 2 ground truth was not downloaded do no harm. No Part2_GroundTruth folder at all is an
error.

Features.
* `id`, `image` (JPEG), as in `isic2017`.
* `superpixels`: int32 (H, W), the decoded superpixel index of each pixel, at the stored image's
  size. Stored as a zlib-compressed Tensor (lossless, no cap on the number of superpixels);
  the RGB encoding of the source PNG is undone once, here.
* `features`: uint8 (num_superpixels, 4), row i = superpixel i's 0/1 labels in the column order
  FEATURES = ("pigment_network", "negative_network", "milia_like_cyst", "streaks") (also in
  `info.metadata["feature_names"]`).
* `feature_masks`: uint8 (H, W, 4) {0, 1}, same column order: each pixel takes its superpixel's
  labels (= `features[superpixels]`), stored as a zlib-compressed Tensor.
No `mask`, `label` or `malignant` keys (those are `isic2017`'s).

Configs. `512` (default): long side at most 512 px, the superpixel map resized with the image by
nearest-neighbour sampling at pixel centres (indices are never blended), the per-pixel masks
derived from the resized map; `full`: native resolution, JPEGs stored as downloaded. Bad examples
(an image without its superpixel map or feature file or the reverse, an unreadable or non-RGB
superpixel PNG, one whose size differs from the image, a feature file that is not valid JSON,
lacks one of the four keys or has another, lists of different lengths or with values other than
0/1, a map whose highest index + 1 is not the lists' length) fail preparation, each named with
its file, unless the builder gets `skip_bad_examples=True`; Beam generation: as in
`lesion_jax.data.builders.common`.

This module also holds what `isic2018_features` shares with it: `FeatureMapBuilder`, a
`DermoscopyBuilder` whose examples are made by a per-dataset `load` function (common's own
`load_example` knows only images, lesion masks and label values), with common's bad-example and
Beam handling (its generation takes the builder's `load`).

Citation: Codella et al., "Skin lesion analysis toward melanoma detection: a challenge at the
2017 ISBI, hosted by the ISIC", ISBI 2018 (arXiv:1710.05006).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from lesion_jax import io
from lesion_jax.data.builders import common
from lesion_jax.data.builders import isic2017

FEATURES = ("pigment_network", "negative_network", "milia_like_cyst", "streaks")
_SPLITS = {"train": "Training", "validation": "Validation", "test": "Test_v2"}

LoadFn = Callable[[common.Record, common.LoadSpec], dict[str, Any]]


# ---------------------------------------------------------------------------------------------
# Shared with isic2018_features: the image part, nearest resizing, and the builder with a `load`.


def load_image(record: common.Record, spec: common.LoadSpec
               ) -> tuple[dict[str, Any], tuple[int, int], tuple[int, int]]:
  """({"id", "image"}, source (height, width), stored (height, width)) of `record`'s image,
  checked and resized as common.load_example does it, or a BadExampleError."""
  try:
    image = io.read_rgb_image(record.image)
  except io.ImageError as e:
    raise common.BadExampleError(record.id, f"bad image: {e}") from e
  height, width = image.shape[:2]
  size = common.target_size(height, width, spec.max_size)
  if spec.image_format == "jpeg":
    with open(record.image, "rb") as f:
      raw = f.read()
    # Unresized JPEGs are stored as they are: no second lossy encoding at native size.
    encoded = raw if size == (height, width) and common.is_plain_rgb_jpeg(raw) else (
        common.encode_jpeg(common.resize_image(image, size)))
  else:
    encoded = io.encode_png(common.resize_image(image, size))
  return {"id": record.id, "image": encoded}, (height, width), size


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """`array` (H, W, ...) of any dtype resized to `size` = (height, width) by nearest-neighbour
  sampling at pixel centres: output pixel (i, j) is input pixel (floor((i + 0.5) * H / height),
  floor((j + 0.5) * W / width)), so labels are never blended and stay aligned with an
  area-resized image."""
  h, w = array.shape[:2]
  if (h, w) == tuple(size):
    return array
  rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
  return np.ascontiguousarray(array[rows[:, None], cols[None, :]])


class FeatureMapBuilder(common.DermoscopyBuilder, skip_registration=True):
  """A DermoscopyBuilder whose examples are made by `load` (a module-level function of
  (Record, LoadSpec), raising BadExampleError) and whose `FEATURE_NAMES` (the channel order of
  its per-pixel masks) are recorded in `info.metadata["feature_names"]`."""

  FEATURE_NAMES: tuple[str, ...] = ()
  load: staticmethod

  def _info(self) -> tfds.core.DatasetInfo:
    info = super()._info()
    info.metadata["feature_names"] = list(self.FEATURE_NAMES)
    return info

  def _load_fn(self) -> LoadFn:
    return type(self).load


def masks_tensor(channels: int) -> tfds.features.Tensor:
  """(H, W, channels) uint8 {0, 1} per-pixel masks, zlib-compressed (PNG holds at most 4)."""
  return tfds.features.Tensor(shape=(None, None, channels), dtype=np.uint8, encoding="zlib")


# ---------------------------------------------------------------------------------------------
# ISIC 2017 Part 2.


def _paths(part: str) -> tuple[str, str]:
  """(image + superpixel folder, Part 2 ground-truth folder) of one split, relative to
  manual_dir."""
  return f"ISIC-2017_{part}_Data", f"ISIC-2017_{part}_Part2_GroundTruth"


def decode_superpixels(rgb: np.ndarray) -> np.ndarray:
  """int32 (H, W) superpixel indices from an RGB (H, W, 3) uint8 map: R + 256 G + 65536 B."""
  rgb = rgb.astype(np.int32)
  return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def read_superpixels(path: str | os.PathLike) -> np.ndarray:
  """The decoded int32 (H, W) superpixel map of an ISIC 2017 *_superpixels.png, or io.ImageError
  naming the file and the problem (it must be an 8-bit, 3-channel PNG; an opaque alpha channel
  is dropped)."""
  path = os.fspath(path)
  bgr = common.decode_image_file(path, "superpixel map")
  if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[-1] not in (3, 4):
    channels = 1 if bgr.ndim == 2 else bgr.shape[-1]
    raise io.ImageError(f"{path}: superpixel map has {channels} channel(s) of {bgr.dtype}; "
                        "expected 8-bit RGB (index = R + 256 G + 65536 B)")
  if bgr.shape[-1] == 4:
    if bgr[..., 3].min() != 255:
      raise io.ImageError(f"{path}: superpixel map has a (non-opaque) alpha channel")
    bgr = bgr[..., :3]
  return decode_superpixels(bgr[..., ::-1])


def read_feature_table(path: str | os.PathLike) -> np.ndarray:
  """uint8 (num_superpixels, 4) from a Part 2 *_features.json (columns in FEATURES order), or
  ValueError naming the file and the problem."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8-sig") as f:
      truth = json.load(f)
  except OSError as e:
    raise ValueError(f"{path}: cannot read feature file ({e.strerror or e})") from e
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(truth, dict):
    raise ValueError(f"{path}: expected a JSON object with keys {list(FEATURES)}, got "
                     f"{type(truth).__name__}")
  missing = [k for k in FEATURES if k not in truth]
  unknown = sorted(k for k in truth if k not in FEATURES)
  if missing or unknown:
    what = "; ".join(([f"missing feature keys {missing}"] if missing else [])
                     + ([f"unknown feature keys {unknown}"] if unknown else []))
    raise ValueError(f"{path}: {what} (expected exactly {list(FEATURES)})")
  columns = []
  for key in FEATURES:
    values = truth[key]
    if not isinstance(values, list):
      raise ValueError(f"{path}: {key!r} is a {type(values).__name__}, expected a list of 0/1")
    bad = [v for v in values if not isinstance(v, (int, float)) or v not in (0, 1)]
    if bad:
      raise ValueError(f"{path}: {key!r} has values other than 0 and 1 (e.g. {bad[0]!r})")
    columns.append(values)
  lengths = {k: len(v) for k, v in zip(FEATURES, columns)}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"{path}: the feature lists differ in length {lengths}; expected one entry "
                     "per superpixel in each")
  return np.array(columns, dtype=np.uint8).T.reshape(-1, len(FEATURES))


def load_example(record: common.Record, spec: common.LoadSpec) -> dict[str, Any]:
  """The stored example of `record` (values: "superpixels" and "truth" paths): checked, resized
  and encoded, or a BadExampleError naming the file and the problem."""
  example, (height, width), size = load_image(record, spec)
  superpixel_path, truth_path = record.values["superpixels"], record.values["truth"]
  try:
    superpixels = read_superpixels(superpixel_path)
  except io.ImageError as e:
    raise common.BadExampleError(record.id, f"bad superpixel map: {e}") from e
  if superpixels.shape != (height, width):
    raise common.BadExampleError(
        record.id, f"superpixel map {superpixel_path} is {superpixels.shape[1]}x"
        f"{superpixels.shape[0]} px but its image {record.image} is {width}x{height} px")
  try:
    table = read_feature_table(truth_path)
  except ValueError as e:
    raise common.BadExampleError(record.id, f"bad feature file: {e}") from e
  count, highest = len(table), int(superpixels.max())
  if highest >= count:
    raise common.BadExampleError(
        record.id, f"superpixel map {superpixel_path} has index {highest}, beyond the "
        f"{count} entries of the lists in {truth_path}")
  if highest + 1 != count:
    raise common.BadExampleError(
        record.id, f"the lists in {truth_path} have {count} entries but the superpixel map "
        f"{superpixel_path} has {highest + 1} superpixels (indices 0..{highest})")
  superpixels = resize_nearest(superpixels, size)
  example["superpixels"] = superpixels
  example["features"] = table
  example["feature_masks"] = table[superpixels]
  return example


def _join(data_dir: epath.Path, truth_dir: epath.Path, dataset: str) -> common.SplitIndex:
  """Images, superpixel maps and feature files of one split, joined by id."""
  images = common.index_files(data_dir, r"(ISIC_\d+)\.jpg", dataset)
  regex = re.compile(r"(ISIC_\d+)_superpixels\.png")
  superpixels = {m.group(1): path for path in data_dir.iterdir()
                 if (m := regex.fullmatch(path.name))}
  truths = common.index_files(truth_dir, r"(ISIC_\d+)_features\.json", dataset)
  index = common.SplitIndex()
  for i in sorted(set(images) | set(superpixels) | set(truths)):
    if i not in images:
      source = f"feature file {truths[i]}" if i in truths else f"superpixel map {superpixels[i]}"
      index.problems.append(common.Problem(i, f"{source} has no image (expected "
                                              f"{data_dir}/{i}.jpg)"))
    elif i not in truths:
      index.problems.append(common.Problem(i, f"image {images[i]} has no feature file (expected "
                                              f"{truth_dir}/{i}_features.json)"))
    elif i not in superpixels:
      index.problems.append(common.Problem(i, f"image {images[i]} has no superpixel map "
                                              f"(expected {data_dir}/{i}_superpixels.png)"))
    else:
      index.records.append(common.Record(
          id=i, image=os.fspath(images[i]),
          values={"superpixels": os.fspath(superpixels[i]), "truth": os.fspath(truths[i])}))
  return index


class Isic2017Features(FeatureMapBuilder):
  """ISIC 2017 Part 2: superpixel maps with per-superpixel dermoscopic feature labels."""

  BUILDER_CONFIGS = common.size_configs(masks=False, labels=False)
  FEATURE_NAMES = FEATURES
  OFFICIAL_SIZES = {"train": 2000, "validation": 150, "test": 600}
  HOMEPAGE = "https://challenge.isic-archive.com/data/#2017"
  DESCRIPTION = ("ISIC 2017 challenge Part 2: dermoscopy images with superpixel maps and, per "
                 "superpixel, pigment network / negative network / milia-like cyst / streaks "
                 "labels (and the per-pixel masks they imply).")
  CITATION = isic2017.Isic2017.CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the ISIC 2017 challenge archives from https://challenge.isic-archive.com/data/#2017
(the Part 1 images, which include the superpixel maps, and the Part 2 ground truth) and unzip them
into manual_dir, so that it holds, for each split you want (Training → train,
Validation → validation, Test_v2 → test):

  ISIC-2017_Training_Data/ISIC_xxxxxxx.jpg
  ISIC-2017_Training_Data/ISIC_xxxxxxx_superpixels.png
  ISIC-2017_Training_Part2_GroundTruth/ISIC_xxxxxxx_features.json
  ISIC-2017_Validation_Data/  ISIC-2017_Validation_Part2_GroundTruth/
  ISIC-2017_Test_v2_Data/  ISIC-2017_Test_v2_Part2_GroundTruth/

A split without its Part2_GroundTruth folder is skipped. The same folder can serve the `isic2017`
builder too (it reads the Part 1 and Part 3 ground truth and ignores the superpixel maps).
"""

  load = staticmethod(load_example)

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {
        "superpixels": tfds.features.Tensor(shape=(None, None), dtype=np.int32,
                                            encoding="zlib"),
        "features": tfds.features.Tensor(shape=(None, len(FEATURES)), dtype=np.uint8),
        "feature_masks": masks_tensor(len(FEATURES)),
    }

  def _index(self, manual_dir: epath.Path) -> dict[str, common.SplitIndex]:
    paths = {split: _paths(part) for split, part in _SPLITS.items()}
    present = common.present_splits(manual_dir, self.name,
                                    {split: (truth,) for split, (_, truth) in paths.items()})
    out = {}
    for split in present:
      data_dir, truth_dir = (manual_dir / p for p in paths[split])
      common.require(data_dir, self.name, "the images and superpixel maps of this split")
      out[split] = _join(data_dir, truth_dir, self.name)
    return out
