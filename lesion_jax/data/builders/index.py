"""Finding the files of a hand-downloaded archive: folders, file-name patterns and label CSVs.

A builder's `_index` turns its archive into one `SplitIndex` per split: the `Record`s of the
examples (which image, mask and label values make each one) and the `Problem`s found on the way
(a label row without its image, an image without its mask...). A folder or file that is missing
altogether raises `ManualDataError`, naming the expected path and pointing at the builder's
MANUAL_DOWNLOAD_INSTRUCTIONS. Nothing here decodes an image (see `images`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import hashlib
import os
import re
from typing import Any

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from lesion_jax.data.builders.errors import ManualDataError


@dataclasses.dataclass(frozen=True)
class Record:
  """What one example is made of: the image, the mask (or None) and the non-image features."""
  id: str
  image: str
  mask: str | None = None
  values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Problem:
  """An example found unusable while indexing the archive (before any image is decoded)."""
  id: str
  reason: str


@dataclasses.dataclass
class SplitIndex:
  """The examples of one split, and the problems found while indexing it."""
  records: list[Record] = dataclasses.field(default_factory=list)
  problems: list[Problem] = dataclasses.field(default_factory=list)


def instructions_hint(dataset: str) -> str:
  return (f"Download and unpack the archives as described in the {dataset} builder's "
          f"MANUAL_DOWNLOAD_INSTRUCTIONS (lesion_jax.data.builders.{dataset}), and pass that "
          "folder as manual_dir.")


def require(path: epath.Path, dataset: str, what: str = "") -> epath.Path:
  """`path` if it exists, else a ManualDataError naming it."""
  if not path.exists():
    what = f" ({what})" if what else ""
    raise ManualDataError(f"{dataset}: expected {path}{what}, which does not exist. "
                          + instructions_hint(dataset))
  return path


def manual_dir_of(dl_manager: tfds.download.DownloadManager, dataset: str) -> epath.Path:
  """The manual_dir, or a ManualDataError when it is not given, missing or empty."""
  try:
    return dl_manager.manual_dir
  except AssertionError as e:  # TFDS signals a missing/empty manual_dir this way
    raise ManualDataError(f"{dataset}: {e}") from e


def present_splits(manual_dir: epath.Path, dataset: str,
                   needs: Mapping[str, Sequence[str]], incomplete_hint: str = "") -> list[str]:
  """Splits whose files (paths relative to `manual_dir`) are all there, in `needs` order.

  A split none of whose files exist is not generated (logged); one with only some of them is an
  error naming the missing ones (of every such split at once, followed by `incomplete_hint`); no
  split at all is an error listing everything expected.
  """
  present, absent, incomplete = [], [], []
  for split, paths in needs.items():
    exists = [(manual_dir / p).exists() for p in paths]
    if all(exists):
      present.append(split)
    elif any(exists):
      missing = [str(manual_dir / p) for p, e in zip(paths, exists) if not e]
      incomplete.append(f"split {split!r} is incomplete: {', '.join(missing)} missing")
    else:
      absent.append(split)
  if incomplete:
    those = "that split" if len(incomplete) == 1 else "those splits"
    raise ManualDataError(f"{dataset}: {'; '.join(incomplete)} (the other files of {those} are "
                          "there). " + (incomplete_hint + " " if incomplete_hint else "")
                          + instructions_hint(dataset))
  if not present:
    expected = "; ".join(f"{s}: {', '.join(p)}" for s, p in needs.items())
    raise ManualDataError(f"{dataset}: no split found in {manual_dir}. Expected ({expected}). "
                          + instructions_hint(dataset))
  for split in absent:
    logging.warning("%s: split %r is NOT generated: none of %s exist in %s.", dataset, split,
                    ", ".join(needs[split]), manual_dir)
  return present


def index_files(folder: epath.Path, pattern: str, dataset: str) -> dict[str, epath.Path]:
  """id → file for the files of `folder` whose names fully match `pattern` (group 1 = id).

  Other files (licences, ISIC 2017 superpixel maps, macOS `._*` files) are ignored; a folder with
  no matching file at all is reported as a ManualDataError.
  """
  require(folder, dataset)
  regex = re.compile(pattern)
  found = {}
  for path in folder.iterdir():
    m = regex.fullmatch(path.name)
    if m:
      found[m.group(1)] = path
  if not found:
    raise ManualDataError(f"{dataset}: {folder} holds no file named like {pattern!r}. "
                          + instructions_hint(dataset))
  return found


def read_table(path: epath.Path, dataset: str,
               columns: Sequence[str] | None = None) -> list[tuple[int, Any]]:
  """(line number, row) of a CSV file's non-empty rows: dicts when the file has a header with
  (at least) `columns`, lists when `columns` is None (no header)."""
  import csv  # pylint: disable=g-import-not-at-top

  require(path, dataset)
  with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
    if columns is None:
      return [(n, row) for n, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]
    reader = csv.DictReader(f)
    header = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in columns if c not in header]
    if missing:
      raise ManualDataError(f"{dataset}: {path} has columns {header}, expected {list(columns)} "
                            f"(missing {missing}). " + instructions_hint(dataset))
    rows = []
    for n, row in enumerate(reader, 2):
      row = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v
             for k, v in row.items()}
      if any(isinstance(v, str) and v for v in row.values()):
        rows.append((n, row))
    return rows


class LabelTable:
  """Per-id values parsed from a label file, and the rows that could not be used."""

  def __init__(self, source: str | os.PathLike):
    self.source = os.fspath(source)
    self.values: dict[str, dict[str, Any]] = {}
    self.problems: list[Problem] = []

  def add(self, line: int, example_id: str, values: dict[str, Any]) -> None:
    if example_id in self.values:
      self.bad(line, example_id, "duplicate row for this id")
      del self.values[example_id]  # ambiguous: neither row is used
    elif not any(p.id == example_id for p in self.problems):
      self.values[example_id] = values

  def bad(self, line: int, example_id: str, reason: str) -> None:
    self.problems.append(Problem(example_id, f"{self.source} line {line}: {reason}"))


def match(images: Mapping[str, epath.Path], masks: Mapping[str, epath.Path] | None = None,
          labels: LabelTable | None = None, *, image_dir: str | os.PathLike = "",
          mask_dir: str | os.PathLike = "", problems: Sequence[Problem] = (),
          expected_image: Callable[[str], str] | None = None) -> SplitIndex:
  """Joins images, masks and label rows by id. An id that lacks any of the three (where masks /
  labels are given) becomes a Problem saying what is missing and where it was expected; ids of
  unusable label rows, and of the given `problems`, are reported once, as they are."""
  index = SplitIndex(problems=(list(labels.problems) if labels is not None else [])
                     + list(problems))
  values = labels.values if labels is not None else None
  label_source = labels.source if labels is not None else ""
  reported = {p.id for p in index.problems}
  ids = set(images) | set(masks or ()) | set(values or ())
  for i in sorted(ids - reported):
    if i not in images:
      source = f"label row in {label_source}" if values is not None and i in values else (
          f"mask {masks[i]}" if masks is not None and i in masks else "entry")
      expected = expected_image(i) if expected_image else f"{image_dir}/{i}.*"
      index.problems.append(Problem(i, f"{source} has no image (expected {expected})"))
    elif masks is not None and i not in masks:
      index.problems.append(Problem(i, f"image {images[i]} has no mask in {mask_dir}"))
    elif values is not None and i not in values:
      index.problems.append(Problem(i, f"image {images[i]} has no label row in {label_source}"))
    else:
      index.records.append(Record(id=i, image=os.fspath(images[i]),
                                  mask=os.fspath(masks[i]) if masks is not None else None,
                                  values=dict(values[i]) if values is not None else {}))
  return index


def stable_fraction(key: str) -> float:
  """A number in [0, 1) fixed by `key` alone: for split assignments that must never change."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return (int.from_bytes(digest[:8], "big") >> 11) / 2.0**53  # 53 bits: exact in a float


def index_isic_part1(manual_dir: epath.Path, dataset: str,
                     needs: Mapping[str, tuple[str, str, str]], mask_pattern: str,
                     read_labels: Callable[[epath.Path], Any], masks: bool = True,
                     incomplete_hint: str = "") -> dict[str, SplitIndex]:
  """The ISIC 2016/2017 layout: per split an image folder (ISIC_xxxxxxx.jpg), a Part 1 mask
  folder (`mask_pattern`) and a Part 3 label CSV, given as `needs[split] = (images, masks, csv)`.
  With `masks=False` (a Part 3-only download) the mask folders are neither needed nor read."""
  if not masks:
    needs = {split: (images, csv) for split, (images, _, csv) in needs.items()}
  out = {}
  for split in present_splits(manual_dir, dataset, needs, incomplete_hint):
    paths = [manual_dir / p for p in needs[split]]
    image_dir, csv = paths[0], paths[-1]
    mask_dir = paths[1] if masks else None
    out[split] = match(index_files(image_dir, r"(ISIC_\d+)\.jpg", dataset),
                       index_files(mask_dir, mask_pattern, dataset) if masks else None,
                       read_labels(csv), image_dir=image_dir, mask_dir=mask_dir or "")
  return out
