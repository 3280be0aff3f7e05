"""TFDS builder `isic2018`: ISIC 2018 challenge, Task 1 lesion masks or Task 3 diagnoses.

The archive. "Skin Lesion Analysis Towards Melanoma Detection" (ISIC 2018). Task 1 (lesion
boundary segmentation) and Task 3 (seven-class diagnosis) use different image sets: Task 1 images
(2594 training, 100 validation, 1000 test) have masks but no diagnosis; Task 3 images (the 10015
HAM10000 images for training, 193 validation, 1512 test) have a diagnosis but no mask. Hence two
families of configs, one per task, rather than one dataset with mostly-empty keys.

Expected layout of manual_dir (the official zips unpacked in place):

  Task 1, for each of Training / Validation / Test:
    ISIC2018_Task1-2_Training_Input/ISIC_xxxxxxx.jpg
    ISIC2018_Task1_Training_GroundTruth/ISIC_xxxxxxx_segmentation.png
  Task 3, for each of Training / Validation / Test:
    ISIC2018_Task3_Training_Input/ISIC_xxxxxxx.jpg
    ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
        header image,MEL,NV,BCC,AKIEC,BKL,DF,VASC; one-hot rows of 0.0/1.0

Splits. `train`, `validation`, `test` (the official Training / Validation / Test sets, whose
ground truth ISIC released after the challenge), keyed by ISIC image id. A split none of whose
files are present is not generated (with a warning), e.g. Task 3 with only the training set.

Configs and features.
* `task1_512` (default), `task1_full`: `id`, `image` (JPEG), `mask` (PNG {0, 255}). No `label`
  / `malignant` keys: Task 1 images carry no diagnosis.
* `task3_512`, `task3_full`: `id`, `image`, `label` in ("mel", "nv", "bcc", "akiec", "bkl",
  "df", "vasc") (the CSV column order, HAM10000's codes, shared with `ham10000`) and
  `malignant` (= mel, bcc or akiec). No `mask` key. Task 3 training holds several images of
  one lesion (it is HAM10000); the official split ignores lesions, `ham10000` splits by lesion.
`512` = long side at most 512 px; `full` = native resolution, JPEGs stored as downloaded. Bad
examples fail preparation unless the builder gets `skip_bad_examples=True`; Beam generation:
see `lesion_jax.data.builders.common`.

Citation: Codella et al., "Skin lesion analysis toward melanoma detection 2018: a challenge hosted
by the ISIC", arXiv:1902.03368; Tschandl et al., "The HAM10000 dataset", Sci. Data 5, 180161
(2018).
"""
from __future__ import annotations

from etils import epath

from lesion_jax.data.builders import common

_SPLITS = {"train": "Training", "validation": "Validation", "test": "Test"}
_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # = HAM_CLASSES, upper-cased


def _task1_paths(part: str) -> tuple[str, str]:
  return f"ISIC2018_Task1-2_{part}_Input", f"ISIC2018_Task1_{part}_GroundTruth"


def _task3_paths(part: str) -> tuple[str, str]:
  return (f"ISIC2018_Task3_{part}_Input",
          f"ISIC2018_Task3_{part}_GroundTruth/ISIC2018_Task3_{part}_GroundTruth.csv")


def read_labels(path: epath.Path) -> common.LabelTable:
  """Task 3 ground truth: image,MEL,NV,BCC,AKIEC,BKL,DF,VASC with exactly one 1.0 per row."""
  table = common.LabelTable(path)
  for line, row in common.read_table(path, "isic2018", ("image",) + _COLUMNS):
    image_id = row["image"]
    try:
      values = [float(row[c]) for c in _COLUMNS]
    except ValueError:
      table.bad(line, image_id, f"non-numeric class columns {[row[c] for c in _COLUMNS]}")
      continue
    hot = [c for c, v in zip(_COLUMNS, values) if v == 1.0]
    if len(hot) != 1 or any(v not in (0.0, 1.0) for v in values):
      table.bad(line, image_id, f"class columns {dict(zip(_COLUMNS, values))}; expected "
                "exactly one 1.0 and 0.0 elsewhere")
      continue
    name = hot[0].lower()
    table.add(line, image_id, {"label": name, "malignant": int(name in common.HAM_MALIGNANT)})
  return table


class Isic2018(common.DermoscopyBuilder):
  """ISIC 2018: Task 1 lesion masks (`task1_*` configs) or Task 3 diagnoses (`task3_*`)."""

  BUILDER_CONFIGS = (
      common.size_configs("task1_", "Task 1 lesion masks (no diagnosis).", labels=False)
      + common.size_configs("task3_", "Task 3 seven-class diagnosis (no mask).", masks=False))
  LABEL_NAMES = common.HAM_CLASSES
  HOMEPAGE = "https://challenge.isic-archive.com/data/#2018"
  DESCRIPTION = ("ISIC 2018 challenge dermoscopy images: Task 1 with lesion masks, or Task 3 "
                 "with seven diagnosis classes (HAM10000).")
  CITATION = """\
@article{codella2019skin,
  title={Skin lesion analysis toward melanoma detection 2018: A challenge hosted by the
         International Skin Imaging Collaboration (ISIC)},
  author={Codella, Noel and Rotemberg, Veronica and Tschandl, Philipp and Celebi, M Emre and
          Dusza, Stephen and Gutman, David and Helba, Brian and Kalloo, Aadi and Liopyris,
          Konstantinos and Marchetti, Michael and others},
  journal={arXiv preprint arXiv:1902.03368},
  year={2019}
}
""" + common.HAM10000_CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the ISIC 2018 challenge archives from https://challenge.isic-archive.com/data/#2018
and unzip them into manual_dir. For the task1_* configs (splits Training → train,
Validation → validation, Test → test; a split whose entries are all absent is skipped):

  ISIC2018_Task1-2_Training_Input/ISIC_xxxxxxx.jpg
  ISIC2018_Task1_Training_GroundTruth/ISIC_xxxxxxx_segmentation.png
  ISIC2018_Task1-2_Validation_Input/  ISIC2018_Task1_Validation_GroundTruth/
  ISIC2018_Task1-2_Test_Input/  ISIC2018_Task1_Test_GroundTruth/

For the task3_* configs:

  ISIC2018_Task3_Training_Input/ISIC_xxxxxxx.jpg
  ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
  ISIC2018_Task3_Validation_Input/
  ISIC2018_Task3_Validation_GroundTruth/ISIC2018_Task3_Validation_GroundTruth.csv
  ISIC2018_Task3_Test_Input/
  ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv

Other files in these folders (LICENSE.txt, ATTRIBUTION.txt) are ignored.
"""

  @property
  def OFFICIAL_SIZES(self) -> dict[str, int]:  # pylint: disable=invalid-name
    if self.builder_config.masks:
      return {"train": 2594, "validation": 100, "test": 1000}
    return {"train": 10015, "validation": 193, "test": 1512}

  def _index(self, manual_dir: epath.Path) -> dict[str, common.SplitIndex]:
    task1 = self.builder_config.masks
    needs = {split: (_task1_paths if task1 else _task3_paths)(part)
             for split, part in _SPLITS.items()}
    out = {}
    for split in common.present_splits(manual_dir, self.name, needs):
      image_dir, truth = (manual_dir / p for p in needs[split])
      images = common.index_files(image_dir, r"(ISIC_\d+)\.jpg", self.name)
      if task1:
        masks = common.index_files(truth, r"(ISIC_\d+)_segmentation\.png", self.name)
        out[split] = common.match(images, masks, image_dir=image_dir, mask_dir=truth)
      else:
        out[split] = common.match(images, labels=read_labels(truth), image_dir=image_dir)
    return out
