"""TFDS builder `isic2016`: ISIC 2016 challenge, Part 1 lesion masks + Part 3 benign/malignant.

The archive. "Skin Lesion Analysis Towards Melanoma Detection" (ISBI 2016), the first ISIC
challenge: dermoscopy images with an expert lesion segmentation (Part 1) and a benign/malignant
(melanoma) diagnosis (Part 3) for the same images; officially 900 training and 379 test images.

Expected layout of manual_dir (the official zips unpacked in place):

  ISBI2016_ISIC_Part1_Training_Data/ISIC_xxxxxxx.jpg
  ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_xxxxxxx_Segmentation.png
  ISBI2016_ISIC_Part3_Training_GroundTruth.csv     no header; rows ISIC_xxxxxxx,benign|malignant
  ISBI2016_ISIC_Part1_Test_Data/ISIC_xxxxxxx.jpg
  ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_xxxxxxx_Segmentation.png
  ISBI2016_ISIC_Part3_Test_GroundTruth.csv         no header; rows ISIC_xxxxxxx,0.0|1.0

Images come from the Part 1 folders, labels from the Part 3 CSVs, joined by image id.

Splits. `train` (900) and `test` (379), the official ones, keyed by ISIC image id. ISIC 2016 has
no validation set and this builder does not invent one: hold out a slice of train, e.g.
`val_split="train[:10%]"` with `train_split="train[10%:]"` (TFDS stores examples in a fixed
pseudo-random order, so the slice is a deterministic random 10%). A split none of whose files
are present is not generated (with a warning).

Features. `id`, `image` (JPEG), `mask` (PNG {0, 255}), `label` in ("benign", "malignant") and
`malignant` (the same).

Configs. `512` (default): long side at most 512 px; `full`: native resolution, JPEGs stored as
downloaded. Bad examples fail preparation unless the builder gets `skip_bad_examples=True`; Beam
generation: see `lesion_jax.data.builders.common`.

Citation: Gutman et al., "Skin lesion analysis toward melanoma detection: a challenge at ISBI
2016, hosted by the ISIC", arXiv:1605.01397.
"""
from __future__ import annotations

import re

from etils import epath

from lesion_jax.data.builders import common

_SPLITS = {"train": "Training", "test": "Test"}
_VALUES = {"benign": 0, "malignant": 1, "0": 0, "1": 1, "0.0": 0, "1.0": 1}
_ID = re.compile(r"ISIC_\d+")


def _paths(part: str) -> tuple[str, str, str]:
  """(image folder, mask folder, label CSV) of one official split, relative to manual_dir."""
  return (f"ISBI2016_ISIC_Part1_{part}_Data", f"ISBI2016_ISIC_Part1_{part}_GroundTruth",
          f"ISBI2016_ISIC_Part3_{part}_GroundTruth.csv")


def read_labels(path: epath.Path) -> common.LabelTable:
  """Part 3 ground truth: header-less rows `id,benign|malignant` (training) or `id,0.0|1.0`."""
  table = common.LabelTable(path)
  for line, row in common.read_table(path, "isic2016"):
    image_id = row[0].strip()
    if line == 1 and not _ID.fullmatch(image_id):
      continue  # a header row, which the official files do not have but edited copies may
    value = row[1].strip().lower() if len(row) > 1 else ""
    if value not in _VALUES:
      table.bad(line, image_id, f"label {value!r}; expected benign/malignant or 0/1")
    else:
      table.add(line, image_id, {"label": _VALUES[value], "malignant": _VALUES[value]})
  return table


class Isic2016(common.DermoscopyBuilder):
  """ISIC 2016: lesion masks and benign/malignant labels."""

  BUILDER_CONFIGS = common.size_configs()
  LABEL_NAMES = ("benign", "malignant")
  OFFICIAL_SIZES = {"train": 900, "test": 379}
  HOMEPAGE = "https://challenge.isic-archive.com/data/#2016"
  DESCRIPTION = ("ISIC 2016 challenge dermoscopy images with Part 1 lesion masks and Part 3 "
                 "benign/malignant labels.")
  CITATION = """\
@article{gutman2016skin,
  title={Skin lesion analysis toward melanoma detection: A challenge at the International
         Symposium on Biomedical Imaging (ISBI) 2016, hosted by the International Skin Imaging
         Collaboration (ISIC)},
  author={Gutman, David and Codella, Noel CF and Celebi, Emre and Helba, Brian and Marchetti,
          Michael and Mishra, Nabin and Halpern, Allan},
  journal={arXiv preprint arXiv:1605.01397},
  year={2016}
}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the ISIC 2016 challenge archives from https://challenge.isic-archive.com/data/#2016
(Part 1 training/test data and ground truth, Part 3 training/test ground truth) and unzip them
into manual_dir, so that it holds:

  ISBI2016_ISIC_Part1_Training_Data/ISIC_xxxxxxx.jpg
  ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_xxxxxxx_Segmentation.png
  ISBI2016_ISIC_Part3_Training_GroundTruth.csv
  ISBI2016_ISIC_Part1_Test_Data/ISIC_xxxxxxx.jpg
  ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_xxxxxxx_Segmentation.png
  ISBI2016_ISIC_Part3_Test_GroundTruth.csv

The Part 3 image folders are not needed (they hold the same images as Part 1).
"""

  def _index(self, manual_dir: epath.Path) -> dict[str, common.SplitIndex]:
    needs = {split: _paths(part) for split, part in _SPLITS.items()}
    return common.index_isic_part1(manual_dir, self.name, needs, r"(ISIC_\d+)_Segmentation\.png", read_labels)
