"""TFDS builder `isic2017`: ISIC 2017 challenge, Part 1 lesion masks + Part 3 diagnoses.

The archive. "Skin Lesion Analysis Towards Melanoma Detection" (ISBI 2017): dermoscopy images
of the ISIC Archive, each with an expert lesion segmentation (Part 1) and a diagnosis (Part 3):
melanoma, seborrheic keratosis, or neither (benign nevus). The official splits are 2000 training,
150 validation and 600 test images; images range up to 6688 px on the long side.

Expected layout of manual_dir (the official zips unpacked in place; see
MANUAL_DOWNLOAD_INSTRUCTIONS):

  ISIC-2017_Training_Data/ISIC_xxxxxxx.jpg                (+ *_superpixels.png, ignored)
  ISIC-2017_Training_Part1_GroundTruth/ISIC_xxxxxxx_segmentation.png
  ISIC-2017_Training_Part3_GroundTruth.csv                (image_id,melanoma,seborrheic_keratosis)
  ... the same with Validation and Test_v2 instead of Training.

Splits. `train` (Training), `validation` (Validation), `test` (Test_v2), keyed by ISIC image id.
A split none of whose files are present is not generated (a warning says so), so a partial
download, e.g. the repository's Training + Validation sample, prepares `train` and `validation`;
a split with only some of its files, or no split at all, is an error.

Features. `id`, `image` (JPEG), `mask` (PNG {0, 255}), `label` in ("nevus", "melanoma",
"seborrheic_keratosis") (the order of `synthetic_lesions`; nevus = neither column set) and
`malignant` (= melanoma). The superpixel maps of the Data folders are not used.

Configs. `512` (default): long side at most 512 px; `full`: native resolution, JPEGs stored as
downloaded. `part3_512` and `part3_full`: the same for a Part 3-only download (images and the
Part 3 CSV, no Part 1 masks, e.g. `isic2017_256`): the examples carry no `mask` key at all, so
classification reads them, K-means pseudo-masks annotate them (self-learned segmentation), and a
segmenter that would train or be scored on their masks is refused by name. Mask presence is per
config, never per example:
- `part3_*` ignores any Part 1 folder that is there (the same manual_dir serves both configs);
- `512` / `full` on a split with images and CSV but no Part 1 folder is an error that names the
  missing folder and points at `part3_512`; a Part 1 folder missing some masks makes those images
  bad examples ("has no mask"), which fail preparation, or are skipped and counted with
  `skip_bad_examples=True`. Bad examples fail preparation unless the builder gets `skip_bad_examples=True`; Beam
generation: see `lesion_jax.data.builders.common`.

Citation: Codella et al., "Skin lesion analysis toward melanoma detection: a challenge at the
2017 ISBI, hosted by the ISIC", ISBI 2018 (arXiv:1710.05006).
"""
from __future__ import annotations

from etils import epath

from lesion_jax.data import synthetic
from lesion_jax.data.builders import common

_SPLITS = {"train": "Training", "validation": "Validation", "test": "Test_v2"}
_LABEL_COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")


def _paths(part: str) -> tuple[str, str, str]:
  """(image folder, mask folder, label CSV) of one official split, relative to manual_dir."""
  return (f"ISIC-2017_{part}_Data", f"ISIC-2017_{part}_Part1_GroundTruth",
          f"ISIC-2017_{part}_Part3_GroundTruth.csv")


def _flag(text: str) -> float | None:
  try:
    value = float(text)
  except ValueError:
    return None
  return value if value in (0.0, 1.0) else None


def read_labels(path: epath.Path) -> common.LabelTable:
  """Part 3 ground truth: image_id,melanoma,seborrheic_keratosis with 0/1 (as floats)."""
  table = common.LabelTable(path)
  for line, row in common.read_table(path, "isic2017", _LABEL_COLUMNS):
    image_id = row["image_id"]
    mel, sk = _flag(row["melanoma"]), _flag(row["seborrheic_keratosis"])
    if mel is None or sk is None:
      table.bad(line, image_id, f"melanoma={row['melanoma']!r}, seborrheic_keratosis="
                f"{row['seborrheic_keratosis']!r}; expected 0 or 1")
    elif mel and sk:
      table.bad(line, image_id, "both melanoma and seborrheic_keratosis are 1")
    else:
      label = "melanoma" if mel else "seborrheic_keratosis" if sk else "nevus"
      table.add(line, image_id, {"label": label, "malignant": int(bool(mel))})
  return table


class Isic2017(common.DermoscopyBuilder):
  """ISIC 2017: lesion masks and melanoma / seborrheic keratosis / nevus labels."""

  BUILDER_CONFIGS = (common.size_configs()
                     + common.size_configs("part3_", "Part 3 only: images and diagnoses, no lesion masks.",
                                           masks=False))
  LABEL_NAMES = synthetic.DIAGNOSES
  OFFICIAL_SIZES = {"train": 2000, "validation": 150, "test": 600}
  HOMEPAGE = "https://challenge.isic-archive.com/data/#2017"
  DESCRIPTION = ("ISIC 2017 challenge dermoscopy images with Part 1 lesion masks and Part 3 "
                 "diagnoses (melanoma, seborrheic keratosis, nevus).")
  CITATION = """\
@inproceedings{codella2018skin,
  title={Skin lesion analysis toward melanoma detection: A challenge at the 2017 International
         Symposium on Biomedical Imaging (ISBI), hosted by the International Skin Imaging
         Collaboration (ISIC)},
  author={Codella, Noel CF and Gutman, David and Celebi, M Emre and Helba, Brian and Marchetti,
          Michael A and Dusza, Stephen W and Kalloo, Aadi and Liopyris, Konstantinos and
          Mishra, Nabin and Kittler, Harald and others},
  booktitle={ISBI},
  pages={168--172},
  year={2018}
}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the ISIC 2017 challenge archives from https://challenge.isic-archive.com/data/#2017
(Part 1 images and ground truth, Part 3 ground truth) and unzip them all into manual_dir, so that
it holds, for each split you want (Training → train, Validation → validation, Test_v2 → test):

  ISIC-2017_Training_Data/ISIC_xxxxxxx.jpg
  ISIC-2017_Training_Part1_GroundTruth/ISIC_xxxxxxx_segmentation.png
  ISIC-2017_Training_Part3_GroundTruth.csv
  ISIC-2017_Validation_Data/  ISIC-2017_Validation_Part1_GroundTruth/
  ISIC-2017_Validation_Part3_GroundTruth.csv
  ISIC-2017_Test_v2_Data/  ISIC-2017_Test_v2_Part1_GroundTruth/
  ISIC-2017_Test_v2_Part3_GroundTruth.csv

A split whose three entries are all absent is skipped; the *_superpixels.png files of the Data
folders may stay (they are ignored). With Part 3 only (images and CSVs, no Part1_GroundTruth
folders), ask for the `isic2017/part3_512` (or `part3_full`) config.
"""

  def _index(self, manual_dir: epath.Path) -> dict[str, common.SplitIndex]:
    needs = {split: _paths(part) for split, part in _SPLITS.items()}
    hint = ("Downloaded Part 3 only (images and diagnoses, no lesion masks)? Use the isic2017/part3_512 "
            "config (or part3_full): classification and self-learned segmentation need no masks.")
    return common.index_isic_part1(manual_dir, self.name, needs, r"(ISIC_\d+)_segmentation\.png", read_labels,
                                   masks=self.builder_config.masks, incomplete_hint=hint)
