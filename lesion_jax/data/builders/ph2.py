"""TFDS builder `ph2`: the PH2 dermoscopy database (Hospital Pedro Hispano, Matosinhos).

The archive. 200 dermoscopy images (about 768x560 px, 8-bit RGB BMP) of melanocytic lesions: 80
common nevi, 80 atypical nevi and 40 melanomas, each with a manual lesion segmentation and a
clinical diagnosis (plus dermoscopic criteria, not used here).

Expected layout of manual_dir (the release archive unpacked in place):

  PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp
  PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp
  PH2Dataset/PH2_dataset.txt     a '||'-separated table; its "Clinical Diagnosis" column is
                                 0 common nevus, 1 atypical nevus, 2 melanoma

Splits. PH2 has no official split. With 200 images a single held-out split would be too small to
compare methods, so the builder exposes a fixed stratified 5-fold partition: splits `fold0` ...
`fold4` of 40 images each (16 common nevi, 16 atypical nevi, 8 melanomas). Within each diagnosis
the ids are ordered by a SHA-256 hash of the id and dealt round-robin to the folds: the
assignment depends on nothing but the table, never changes between versions of numpy or TFDS,
and is unaffected by skipped bad examples. Cross-validate with e.g.
`train_split="fold1+fold2+fold3+fold4"`, `test_split="fold0"`; use `split="all"` (all 200) to
test a model trained elsewhere.

Features. `id` (e.g. "IMD003"), `image` (PNG: the sources are lossless), `mask` (PNG {0, 255}),
`label` in ("common_nevus", "atypical_nevus", "melanoma") and `malignant` (= melanoma).

Configs. `512` (default): long side at most 512 px (about 512x373); `full`: native size. Bad
examples fail preparation unless the builder gets `skip_bad_examples=True`; Beam generation: see
`lesion_jax.data.builders.common`.

Citation: Mendonca et al., "PH2 - A dermoscopic image database for research and benchmarking",
EMBC 2013, pp. 5437-5440.
"""
from __future__ import annotations

import re

from absl import logging
from etils import epath

from lesion_jax.data.builders import common

NUM_FOLDS = 5
LABEL_NAMES = ("common_nevus", "atypical_nevus", "melanoma")
_ROOT = "PH2Dataset"
_IMAGES = f"{_ROOT}/PH2 Dataset images"
_TABLE = f"{_ROOT}/PH2_dataset.txt"
_ID = re.compile(r"IMD\d+")


# The official table separates columns by '||'; copies re-saved by a spreadsheet use tabs or commas.
_SEPARATORS = (("||", "the official '||'-separated table"), ("\t", "a tab-separated re-save"),
               (",", "a comma-separated re-save"))


def read_table(path: epath.Path) -> common.LabelTable:
  """Diagnoses from PH2_dataset.txt: the header row names the columns; data rows are the ones
  whose Name cell is an IMDxxx id (the legend below the table is skipped). Reads the official
  '||' table and tab- or comma-separated re-saves of it (any line endings); says which it read."""
  common.require(path, "ph2")
  table = common.LabelTable(path)
  name_col = diagnosis_col = separator = None
  for line, text in enumerate(path.read_bytes().decode("utf-8-sig", "replace").splitlines(), 1):
    if separator is None:  # the header decides the format
      for sep, what in _SEPARATORS:
        cells = [c.strip().strip('"') for c in text.split(sep)]
        if sep in text and "Name" in cells and "Clinical Diagnosis" in cells:
          name_col, diagnosis_col, separator = cells.index("Name"), cells.index("Clinical Diagnosis"), sep
          logging.info("ph2: %s is %s.", path, what)
          break
      continue
    if separator not in text:
      continue
    cells = [c.strip().strip('"') for c in text.split(separator)]
    if len(cells) <= max(name_col, diagnosis_col) or not _ID.fullmatch(cells[name_col]):
      continue
    image_id, code = cells[name_col], cells[diagnosis_col]
    if code not in ("0", "1", "2"):
      table.bad(line, image_id, f"Clinical Diagnosis {code!r}; expected 0, 1 or 2")
      continue
    table.add(line, image_id, {"label": int(code), "malignant": int(code == "2")})
  if name_col is None:
    xlsx = " (PH2_dataset.xlsx is not read: save it as text)" if path.with_suffix(".xlsx").exists() else ""
    raise common.ManualDataError(
        f"ph2: {path} has no header row with 'Name' and 'Clinical Diagnosis' columns, "
        f"separated by '||', tabs or commas{xlsx}. " + common.instructions_hint("ph2"))
  return table


def fold_of(ids_by_label: dict[int, list[str]], num_folds: int = NUM_FOLDS) -> dict[str, int]:
  """id → fold: within each label, ids ordered by a hash of the id and dealt round-robin."""
  folds = {}
  for label in sorted(ids_by_label):
    ordered = sorted(ids_by_label[label], key=lambda i: (common.stable_fraction(f"ph2:{i}"), i))
    for rank, image_id in enumerate(ordered):
      folds[image_id] = rank % num_folds
  return folds


class Ph2(common.DermoscopyBuilder):
  """PH2: lesion masks and common nevus / atypical nevus / melanoma labels, in 5 folds."""

  BUILDER_CONFIGS = common.size_configs()
  IMAGE_FORMAT = "png"
  LABEL_NAMES = LABEL_NAMES
  HOMEPAGE = "https://www.fc.up.pt/addi/ph2%20database.html"
  DESCRIPTION = ("PH2 dermoscopy database: 200 images with lesion masks and clinical diagnoses "
                 "(common nevus, atypical nevus, melanoma), in 5 fixed stratified folds.")
  CITATION = """\
@inproceedings{mendonca2013ph2,
  title={PH2 - A dermoscopic image database for research and benchmarking},
  author={Mendon{\\c{c}}a, Teresa and Ferreira, Pedro M and Marques, Jorge S and Marcal, Andre RS
          and Rozeira, Jorge},
  booktitle={35th Annual International Conference of the IEEE Engineering in Medicine and
             Biology Society (EMBC)},
  pages={5437--5440},
  year={2013}
}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request and download the PH2 database (https://www.fc.up.pt/addi/ph2%20database.html) and unpack
it into manual_dir, so that it holds:

  PH2Dataset/PH2_dataset.txt
  PH2Dataset/PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
  PH2Dataset/PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp
  ... one IMDxxx folder per image (the *_roi folders are not used).
"""

  def _index(self, manual_dir: epath.Path) -> dict[str, common.SplitIndex]:
    images_root = common.require(manual_dir / _IMAGES, self.name, "the PH2 image folders")
    table = read_table(manual_dir / _TABLE)
    images, masks, missing = {}, {}, []
    for case in images_root.iterdir():
      if case.is_dir() and _ID.fullmatch(case.name):
        i = case.name
        image = case / f"{i}_Dermoscopic_Image" / f"{i}.bmp"
        mask = case / f"{i}_lesion" / f"{i}_lesion.bmp"
        absent = [str(p) for p in (image, mask) if not p.exists()]
        if absent:
          missing.append(common.Problem(i, f"missing {' and '.join(absent)}"))
        else:
          images[i], masks[i] = image, mask
    if not images and not missing:
      raise common.ManualDataError(f"ph2: {images_root} holds no IMDxxx folder. "
                                   + common.instructions_hint(self.name))
    joined = common.match(
        images, masks, table, problems=missing,
        expected_image=lambda i: f"{images_root}/{i}/{i}_Dermoscopic_Image/{i}.bmp")
    by_label: dict[int, list[str]] = {}
    for i, values in table.values.items():
      by_label.setdefault(values["label"], []).append(i)
    folds = fold_of(by_label)
    out = {f"fold{k}": common.SplitIndex() for k in range(NUM_FOLDS)}
    for record in joined.records:
      out[f"fold{folds[record.id]}"].records.append(record)
    for problem in joined.problems:  # ids without a usable table row go with fold0's problems
      out[f"fold{folds.get(problem.id, 0)}"].problems.append(problem)
    return out
