"""TFDS builder `ham10000`: HAM10000, 10015 dermoscopy images of 7470 lesions, 7 diagnoses.

The archive. "Human Against Machine with 10000 training images" (ViDIR Group, Medical University
of Vienna, and Cliff Rosendahl's practice): dermoscopy images of pigmented lesions with a
diagnosis (`dx`) confirmed by histopathology, follow-up, expert consensus or in-vivo confocal
microscopy; several images may show the same lesion (`lesion_id`). Lesion masks
(Tschandl et al. 2020) were published later as a separate archive.

Expected layout of manual_dir (the Harvard Dataverse files unpacked in place):

  HAM10000_metadata.csv            lesion_id,image_id,dx,dx_type,age,sex,localization
  HAM10000_images_part_1/ISIC_xxxxxxx.jpg
  HAM10000_images_part_2/ISIC_xxxxxxx.jpg
  HAM10000_segmentations_lesion_tschandl/ISIC_xxxxxxx_segmentation.png   (seg_* configs only)

Splits. HAM10000 has no official split. `train` / `validation` / `test` are drawn by lesion, so
the images of one lesion are never in two splits: a SHA-256 hash of "ham10000:<lesion_id>" puts
about 80% / 10% / 10% of the lesions into train / validation / test. The assignment depends on
the lesion id alone (not on the other rows, numpy or TFDS versions), so it never changes. Image
counts per split vary a little around 80/10/10, as lesions have one or several images.

Features. `id` (image_id), `image` (JPEG, 600x450 px originals), `lesion_id` (Text, for grouped
cross-validation within train), `label` in ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
(the order of the ISIC 2018 Task 3 columns, shared with `isic2018/task3_*`) and `malignant`
(= mel, bcc or akiec); plus `mask` (PNG {0, 255}) in the seg_* configs.

Configs. Whether masks are stored is a config, because not every download has them:
* `512` (default), `full`: no masks and no `mask` key; work with any HAM10000 download.
* `seg_512`, `seg_full`: with `mask`; need HAM10000_segmentations_lesion_tschandl.
`512` = long side at most 512 px; `full` = native resolution, JPEGs stored as downloaded. Bad
examples fail preparation unless the builder gets `skip_bad_examples=True`; Beam generation: see
`lesion_jax.data.builders.common`.

Citation: Tschandl, Rosendahl and Kittler, "The HAM10000 dataset, a large collection of
multi-source dermatoscopic images of common pigmented skin lesions", Sci. Data 5, 180161 (2018).
"""
from __future__ import annotations

from etils import epath
import tensorflow_datasets as tfds

from lesion_jax.data.builders import common

SPLIT_FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
_METADATA = "HAM10000_metadata.csv"
_MASKS = "HAM10000_segmentations_lesion_tschandl"


def split_of(lesion_id: str) -> str:
  """The split of every image of `lesion_id`, from a hash of the lesion id alone."""
  u, edge = common.stable_fraction(f"ham10000:{lesion_id}"), 0.0
  for split, fraction in SPLIT_FRACTIONS:
    edge += fraction
    if u < edge:
      return split
  return SPLIT_FRACTIONS[-1][0]


def read_metadata(path: epath.Path) -> common.LabelTable:
  """HAM10000_metadata.csv → image_id: label, malignant and lesion_id."""
  table = common.LabelTable(path)
  for line, row in common.read_table(path, "ham10000", ("lesion_id", "image_id", "dx")):
    image_id, lesion_id, dx = row["image_id"], row["lesion_id"], row["dx"].lower()
    if dx not in common.HAM_CLASSES:
      table.bad(line, image_id, f"dx {row['dx']!r}; expected one of {common.HAM_CLASSES}")
    elif not lesion_id:
      table.bad(line, image_id, "empty lesion_id")
    else:
      table.add(line, image_id, {"label": dx, "malignant": int(dx in common.HAM_MALIGNANT),
                                 "lesion_id": lesion_id})
  return table


class Ham10000(common.DermoscopyBuilder):
  """HAM10000: seven diagnoses, lesion-level splits, masks in the seg_* configs."""

  BUILDER_CONFIGS = (common.size_configs("", "Without masks.", masks=False)
                     + common.size_configs("seg_", "With the Tschandl lesion masks."))
  LABEL_NAMES = common.HAM_CLASSES
  HOMEPAGE = "https://doi.org/10.7910/DVN/DBW86T"
  DESCRIPTION = ("HAM10000 dermoscopy images with seven diagnoses, split 80/10/10 by lesion; "
                 "seg_* configs add the lesion masks of Tschandl et al.")
  CITATION = common.HAM10000_CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download HAM10000 from the Harvard Dataverse (https://doi.org/10.7910/DVN/DBW86T) and unpack it
into manual_dir, so that it holds:

  HAM10000_metadata.csv      (the comma-separated original, with columns
                              lesion_id,image_id,dx,dx_type,age,sex,localization)
  HAM10000_images_part_1/ISIC_xxxxxxx.jpg
  HAM10000_images_part_2/ISIC_xxxxxxx.jpg

and, for the seg_512 / seg_full configs only, the lesion masks:

  HAM10000_segmentations_lesion_tschandl/ISIC_xxxxxxx_segmentation.png

If a zip unpacks its images without a folder, create the folder named after the zip.
"""

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {"lesion_id": tfds.features.Text()}

  def _index(self, manual_dir: epath.Path) -> dict[str, common.SplitIndex]:
    table = read_metadata(manual_dir / _METADATA)
    images, problems = {}, []
    for part in _PARTS:
      for i, path in common.index_files(manual_dir / part, r"(ISIC_\d+)\.jpg", self.name).items():
        if i in images:
          problems.append(common.Problem(i, f"image in both {images[i]} and {path}"))
        images[i] = path
    duplicated = {q.id for q in problems}
    images = {i: p for i, p in images.items() if i not in duplicated}
    masks = None
    if self.builder_config.masks:
      masks = common.index_files(manual_dir / _MASKS, r"(ISIC_\d+)_segmentation\.png", self.name)
    joined = common.match(images, masks, table, problems=problems,
                          image_dir=f"{manual_dir}/HAM10000_images_part_[12]",
                          mask_dir=manual_dir / _MASKS)
    out = {split: common.SplitIndex() for split, _ in SPLIT_FRACTIONS}
    for record in joined.records:
      out[split_of(record.values["lesion_id"])].records.append(record)
    for problem in joined.problems:  # ids without a usable lesion go with train's problems
      values = table.values.get(problem.id)
      out[split_of(values["lesion_id"]) if values else "train"].problems.append(problem)
    return out
