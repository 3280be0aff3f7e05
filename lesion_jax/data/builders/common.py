"""Shared machinery of the builders that read hand-downloaded dermoscopy archives.

Every real-data builder (`isic2016`, `isic2017`, `isic2018`, `ph2`, `ham10000`) is a
`DermoscopyBuilder`: it only indexes its archive (`_index`: which image, mask and label belong to
which id and split) and this module does the rest, the same way for all of them:

* Features. `id` (Text, the official image id, also the example key), `image` (uint8 RGB), and
  when the config has them `mask` (single-channel PNG, values {0, 255}, same height and width as
  the image), `label` (the dataset's diagnosis classes) and `malignant` (benign / malignant). A
  config has a key only if every example of it has that data: a config without masks has no
  `mask` key at all, rather than a placeholder mask that would silently train a segmenter on
  empty targets (`pipeline` then fails with a KeyError on 'mask' for segmentation).
* Configs. `512` (default; long side at most 512 px, aspect kept, never enlarged) and `full`
  (native resolution: source JPEGs are stored byte for byte). Masks are resized by area
  averaging and thresholded at 0.5, to exactly the image's size.
* Validation. A missing folder or file of the archive raises `ManualDataError` naming the
  expected path and pointing at MANUAL_DOWNLOAD_INSTRUCTIONS (every incomplete split at once). A
  bad example (corrupt or non-RGB image, a JPEG damaged mid-stream, unreadable mask, mask size
  different from the image, a bad label row, a label row without its image, an image without its
  label or mask) fails preparation with its id and reason; with `skip_bad_examples=True` it is
  skipped instead, logged with its id and reason, counted, and recorded in the prepared
  dataset's `info.metadata`: "skipped_counts" (split → number) and "skipped_examples" (split →
  id → reason; under Beam older than 2.58, only the problems found before Beam ran, the others
  being in the workers' logs).
* One strict run reports everything. Some problems show while indexing the archive (missing
  files, label rows), others only when an image is decoded (a damaged JPEG, a mask of another
  size). Strict preparation (the default) raises neither kind at once: it reads every split,
  then fails with one `BadExamplesError` (a `BadExampleError`; `problems` = split → id → reason)
  listing every bad example of every split, so fixing the archive takes one run, not one per
  problem. Nothing is prepared then. In-process, a split with no good example at all stops
  the run early (TFDS refuses an empty split), and the error says which splits were not read;
  under Beam the pipeline's last step raises it, with the driver's indexing problems.
* A strict builder never serves data prepared with skips. The skip flag is not part of the
  config, so `isic2017/512` and `isic2017/512/skip_bad_examples=True` share one data folder.
  A strict builder (skip_bad_examples=False) that finds that folder prepared with examples
  skipped refuses both to reuse it (`download_and_prepare`) and to read it (`as_dataset`, what
  the experiments call) with `PreparedWithSkipsError` (a `ManualDataError`), naming the folder
  and how many examples are missing: ask for `skip_bad_examples=True` to use the data as it is,
  or delete the folder (or pass download_mode=REUSE_CACHE_IF_EXISTS) to prepare it again
  strictly. Refusing rather than preparing again in place keeps a deliberate skip-mode dataset
  from being deleted by a run that only forgot the flag. Data prepared with skips where none
  were needed serves strict requests.
* Apache Beam, for the big archives. Without Beam options examples are generated in-process.
  When the user passes a Beam runner or Beam options, `_generate_examples` returns a
  `beam.PTransform` instead (TFDS's own Beam support), so decoding, validation and resizing run
  on the Beam workers; the archive is only indexed on the driver. apache-beam is imported only
  then; it is not a dependency of this package. `pip install apache-beam`, then e.g.

    options = beam.options.pipeline_options.PipelineOptions([
        "--runner=DirectRunner", "--direct_num_workers=4",
        "--direct_running_mode=multi_processing"])  # or Dataflow, Flink, Spark options
    tfds.builder("isic2018/task1_full", data_dir=...).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=..., beam_options=options))

  or `tfds build isic2018/task1_full --imports=lesion_jax.data.builders --manual_dir=...
  --beam_pipeline_options="runner=DirectRunner,direct_num_workers=4"` (the `tfds` command
  also needs its own extras, e.g. mlcroissant). Workers must be able to import lesion_jax.

The skip flag is a builder argument, not part of the config: it is a preparation policy and
reaches TFDS name strings, e.g. `tfds.builder("isic2017/512/skip_bad_examples=True")`.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from lesion_jax import io

JPEG_QUALITY = 95  # of re-encoded (resized) JPEG images
DEFAULT_MAX_SIZE = 512

# HAM10000 / ISIC 2018 Task 3 classes, in the column order of the official ISIC 2018 Task 3 CSVs
# (so predictions map straight onto the submission format), named by HAM10000's `dx` codes.
HAM_CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
HAM_MALIGNANT = frozenset({"mel", "bcc", "akiec"})

_MALIGNANT_NAMES = ["benign", "malignant"]

# Cited by the ham10000 builder and by isic2018 (whose Task 3 images are HAM10000's).
HAM10000_CITATION = """\
@article{tschandl2018ham10000,
  title={The HAM10000 dataset, a large collection of multi-source dermatoscopic images of common
         pigmented skin lesions},
  author={Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal={Scientific Data},
  volume={5},
  pages={180161},
  year={2018}
}"""


class ManualDataError(FileNotFoundError):
  """A folder or file of the hand-downloaded archive is missing (or unusable as a whole)."""


class PreparedWithSkipsError(ManualDataError):
  """A strict builder (skip_bad_examples=False) found its data folder already prepared with
  skip_bad_examples=True and examples skipped: it neither reuses nor reads that data silently.
  A ManualDataError, so the experiments report it as a one-line usage error."""


def _restore_error(cls, args, state):
  error = Exception.__new__(cls)
  error.args = args
  error.__dict__.update(state)
  return error


class BadExampleError(ValueError):
  """One example cannot be built; `example_id` and `reason` say which and why."""

  def __init__(self, example_id: str, reason: str, context: str = ""):
    self.example_id = example_id
    self.reason = reason
    prefix = f"{context}: " if context else ""
    super().__init__(f"{prefix}example {example_id}: {reason}")

  def __reduce__(self):
    # Beam's multi-process runners pickle a worker's exception back to the driver; the default
    # (cls(*args), args being the message) would fail on this __init__ and hide the message.
    return _restore_error, (type(self), self.args, dict(self.__dict__))


class BadExamplesError(BadExampleError):
  """A strict preparation found bad examples: `problems` (split → id → reason, in the order
  found) holds all of them; `example_id` and `reason` are the first one's, the message lists
  them all."""

  def __init__(self, example_id: str, reason: str, context: str,
               problems: Mapping[str, Mapping[str, str]]):
    super().__init__(example_id, reason, context)
    self.problems = {split: dict(ids) for split, ids in problems.items() if ids}


@dataclasses.dataclass
class LesionConfig(tfds.core.BuilderConfig):
  """A stored variant: image size (`max_size` = longest side, None = native) and which keys."""
  max_size: int | None = DEFAULT_MAX_SIZE
  masks: bool = True
  labels: bool = True


def size_configs(prefix: str = "", what: str = "", masks: bool = True,
                 labels: bool = True) -> list[LesionConfig]:
  """The `<prefix>512` (reduced, listed first) and `<prefix>full` configs of one content."""
  what = what + " " if what else ""
  return [
      LesionConfig(name=f"{prefix}{DEFAULT_MAX_SIZE}", masks=masks, labels=labels,
                   max_size=DEFAULT_MAX_SIZE,
                   description=f"{what}Long side at most {DEFAULT_MAX_SIZE} px (aspect kept)."),
      LesionConfig(name=f"{prefix}full", masks=masks, labels=labels, max_size=None,
                   description=f"{what}Native resolution."),
  ]


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


@dataclasses.dataclass(frozen=True)
class LoadSpec:
  """How examples are stored: `max_size` (None = native) and the image encoding."""
  max_size: int | None
  image_format: str  # "jpeg" or "png"


# ---------------------------------------------------------------------------------------------
# Locating the archive's files.


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
                   needs: Mapping[str, Sequence[str]]) -> list[str]:
  """Splits whose files (paths relative to `manual_dir`) are all there, in `needs` order.

  A split none of whose files exist is not generated (logged); one with only some of them is an
  error naming the missing ones (of every such split at once); no split at all is an error
  listing everything expected.
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
                          "there). " + instructions_hint(dataset))
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


# ---------------------------------------------------------------------------------------------
# Reading, checking and resizing one example.


def decode_image_file(path: str, what: str) -> np.ndarray:
  """The file's pixels as stored (cv2.IMREAD_UNCHANGED: any depth and channel count), or
  io.ImageError naming the file and `what` it should have been when it cannot be read or decoded."""
  import cv2  # pylint: disable=g-import-not-at-top

  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise io.ImageError(f"{path}: cannot read {what} ({e.strerror or e})") from e
  pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
  if pixels is None:
    raise io.ImageError(f"{path}: not a decodable {what} (corrupt, empty or unsupported)")
  return pixels


def read_mask(path: str | os.PathLike) -> np.ndarray:
  """A lesion mask file as bool (H, W), or io.ImageError naming the file and the problem.

  Accepts single-channel or grey (equal-channel) images, 8 or 16 bit; values {0, 1} are taken as
  they are, anything else is thresholded at half the range (so JPEG noise falls on its side).
  """
  path = os.fspath(path)
  mask = decode_image_file(path, "mask image")
  if mask.dtype not in (np.uint8, np.uint16):
    raise io.ImageError(f"{path}: unsupported mask pixel type {mask.dtype}")
  if mask.ndim == 3:
    colour = mask[..., :3]
    if np.any(colour != colour[..., :1]):
      raise io.ImageError(f"{path}: mask has colour (its channels differ); expected a "
                          "single-channel binary mask")
    mask = colour[..., 0]
  if mask.max() <= 1:
    return mask == 1
  return mask > np.iinfo(mask.dtype).max // 2


def target_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
  """(height, width) with the long side at most `max_size`, aspect kept, never enlarged."""
  if max_size is None or max(height, width) <= max_size:
    return height, width
  scale = max_size / max(height, width)
  return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 RGB resized to (height, width) by area averaging (no aliasing when shrinking)."""
  import cv2  # pylint: disable=g-import-not-at-top

  if image.shape[:2] == tuple(size):
    return image
  return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """bool mask resized to (height, width): area average of {0, 1}, thresholded at 0.5."""
  import cv2  # pylint: disable=g-import-not-at-top

  if mask.shape[:2] == tuple(size):
    return mask
  area = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
  return area >= 0.5


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """JPEG bytes of a uint8 RGB image."""
  import cv2  # pylint: disable=g-import-not-at-top

  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise ValueError(f"could not encode an image of shape {image.shape} as JPEG")
  return buf.tobytes()


def is_plain_rgb_jpeg(data: bytes) -> bool:
  """True for an 8-bit, 3-component, Huffman-coded JPEG: bytes TensorFlow's decoder reads as
  RGB. CMYK, 12-bit or arithmetic-coded files (which OpenCV reads but TF does not) are False."""
  if data[:2] != b"\xff\xd8":
    return False
  i = 2
  while i + 4 <= len(data):
    if data[i] != 0xFF:
      return False
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
      i += 2
      continue
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
      if i + 10 > len(data):
        return False
      return marker in (0xC0, 0xC1, 0xC2) and data[i + 4] == 8 and data[i + 9] == 3
    if marker == 0xDA:  # scan data before any frame header
      return False
    i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
  return False


def load_example(record: Record, spec: LoadSpec) -> dict[str, Any]:
  """The stored example of `record`: checked, resized and encoded, or a BadExampleError."""
  try:
    image = io.read_rgb_image(record.image)
  except io.ImageError as e:
    raise BadExampleError(record.id, f"bad image: {e}") from e
  height, width = image.shape[:2]
  size = target_size(height, width, spec.max_size)
  example = {"id": record.id, **record.values}
  if record.mask is not None:
    try:
      mask = read_mask(record.mask)
    except io.ImageError as e:
      raise BadExampleError(record.id, f"bad mask: {e}") from e
    if mask.shape != (height, width):
      raise BadExampleError(
          record.id, f"mask {record.mask} is {mask.shape[1]}x{mask.shape[0]} px but its image "
          f"{record.image} is {width}x{height} px")
    example["mask"] = io.encode_png(resize_mask(mask, size).astype(np.uint8) * 255)
  if spec.image_format == "jpeg":
    with open(record.image, "rb") as f:
      raw = f.read()
    # Unresized JPEGs are stored as they are: no second lossy encoding at native size.
    example["image"] = raw if size == (height, width) and is_plain_rgb_jpeg(raw) else (
        encode_jpeg(resize_image(image, size)))
  else:
    example["image"] = io.encode_png(resize_image(image, size))
  return example


# ---------------------------------------------------------------------------------------------
# Skip-and-count bookkeeping, and the strict run's list of everything bad.


class SkipLog:
  """The examples skipped so far (split → id → reason), each logged as it is skipped."""

  def __init__(self, dataset: str):
    self.dataset = dataset
    self.skipped: dict[str, dict[str, str]] = collections.defaultdict(dict)

  def add(self, split: str, example_id: str, reason: str) -> None:
    logging.warning("%s %s: skipping bad example %s: %s", self.dataset, split, example_id, reason)
    self.skipped[split][example_id] = reason

  def count(self, split: str | None = None) -> int:
    if split is not None:
      return len(self.skipped.get(split, {}))
    return sum(len(v) for v in self.skipped.values())

  def summary(self) -> str:
    if not self.count():
      return f"{self.dataset}: no bad examples skipped."
    parts = [f"{split}: {len(ids)} ({', '.join(sorted(ids))})"
             for split, ids in sorted(self.skipped.items()) if ids]
    return f"{self.dataset}: skipped {self.count()} bad examples; " + "; ".join(parts)


def _skip_hint(many: bool = False) -> str:
  what = "files" if many else "file"
  return (f"Fix or remove the {what}, or prepare with skip_bad_examples=True to skip bad examples "
          "(they are logged, counted and listed in info.metadata['skipped_examples']).")


_MAX_LISTED = 200  # bad examples listed in one error; every one is also logged as it is found


def bad_examples_error(context: str, problems: Mapping[str, Mapping[str, str]],
                       unchecked: Sequence[str] = ()) -> BadExamplesError:
  """The one error of a strict preparation: the first bad example and the hint on its first line
  (what a reader sees first), then one line per bad example, split by split. `unchecked`: splits
  whose images were not all read (a split without a good example stops TFDS; a run capped by
  max_examples_per_split stops early): their indexing problems are listed all the same."""
  problems = {split: dict(ids) for split, ids in problems.items() if ids}
  total = sum(len(ids) for ids in problems.values())
  split, ids = next(iter(problems.items()))
  first_id, first_reason = next(iter(ids.items()))
  note = (f" Not read to the end, so they may hold more (their file lists were checked): "
          f"{', '.join(unchecked)}." if unchecked else "")
  if total == 1:
    return BadExamplesError(first_id, f"{first_reason}. {_skip_hint()}{note}",
                            f"{context} {split}", problems)
  per_split = ", ".join(f"{s}: {len(i)}" for s, i in problems.items())
  lines = [f"  {s} {i}: {r}" for s, found in problems.items() for i, r in found.items()]
  if len(lines) > _MAX_LISTED:
    lines = lines[:_MAX_LISTED] + [f"  ... and {len(lines) - _MAX_LISTED} more (each was logged "
                                   "as it was found)"]
  reason = (f"{first_reason}; {total} bad examples ({per_split}), listed below. "
            f"{_skip_hint(many=True)}{note}\n" + "\n".join(lines))
  return BadExamplesError(first_id, reason, f"{context} {split}", problems)


class BadLog:
  """What a strict in-process preparation found bad so far (split → id → reason, splits in the
  order they are generated), so that one run reports all of it: nothing raises before every
  split has been checked (see `_iter_examples`)."""

  def __init__(self, context: str, splits: Sequence[str] = ()):
    self.context = context
    self.bad: dict[str, dict[str, str]] = {split: {} for split in splits}
    self.pending = list(splits)  # splits whose images have not all been read yet

  def add(self, split: str, example_id: str, reason: str) -> None:
    logging.error("%s %s: bad example %s: %s", self.context, split, example_id, reason)
    self.bad.setdefault(split, {})[example_id] = reason

  def count(self) -> int:
    return sum(len(ids) for ids in self.bad.values())

  def done(self, split: str) -> None:
    if split in self.pending:
      self.pending.remove(split)

  def error(self) -> BadExamplesError:
    return bad_examples_error(self.context, self.bad, unchecked=self.pending)


def _iter_examples(records: Iterable[Record], spec: LoadSpec, split: str, context: str,
                   skips: SkipLog | None, bad: BadLog | None = None,
                   load: Callable[[Record, LoadSpec], dict[str, Any]] | None = None
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
  """In-process generation of one split with `load` (default `load_example`). With `skips`, bad
  examples are skipped; otherwise they go to `bad`, and the run fails once every split has been
  checked, with every bad example of every split in one error.

  Once anything is known bad the preparation will fail, so writing more examples is wasted work;
  but each split still yields its first good example: TFDS stops the whole run at a split that
  yields none ("No examples were yielded"), before the next split could be checked. A split with
  no good example at all therefore raises at its end, with what was found so far.
  """
  load = load or load_example
  if bad is None and skips is None:
    bad = BadLog(context, [split])
  yielded = 0
  for record in records:
    try:
      example = load(record, spec)
    except BadExampleError as e:
      if skips is not None:
        skips.add(split, e.example_id, e.reason)
      else:
        bad.add(split, e.example_id, e.reason)
      continue
    if bad is None or not bad.count() or not yielded:
      yielded += 1
      yield record.id, example
  if bad is not None:
    bad.done(split)
    if bad.count() and (not bad.pending or not yielded):
      raise bad.error()
  if skips is not None and skips.count(split):
    logging.warning("%s: %d bad examples skipped in total in this split: %s", context,
                    skips.count(split), ", ".join(sorted(skips.skipped[split])))


def _beam_load(record: Record, spec: LoadSpec, split: str, context: str, namespace: str,
               skip: bool, load: Callable[[Record, LoadSpec], dict[str, Any]] | None = None
               ) -> Iterator[Any]:
  """Beam worker: one record → its example; a bad one is skipped (counted in Beam counters) or,
  when strict, sent to the "bad" output as (split, id, reason) for `_raise_bad_examples`."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  try:
    yield record.id, (load or load_example)(record, spec)
  except BadExampleError as e:
    if not skip:
      logging.error("%s: bad example %s: %s", context, e.example_id, e.reason)
      yield beam.pvalue.TaggedOutput("bad", (split, e.example_id, e.reason))
      return
    logging.warning("%s: skipping bad example %s: %s", context, e.example_id, e.reason)
    beam.metrics.Metrics.counter(namespace, f"skipped_{split}").inc()
    if hasattr(beam.metrics.Metrics, "string_set"):  # Beam >= 2.58: the ids reach the driver
      beam.metrics.Metrics.string_set(namespace, f"skipped_ids_{split}").add(
          f"{e.example_id}\t{e.reason}")


def _raise_bad_examples(found: Sequence[tuple[str, str, str]], context: str,
                        index_problems: Mapping[str, Mapping[str, str]]) -> None:
  """The last step of a strict Beam preparation: fails it with every bad example of every split
  (those found while indexing, then the workers', sorted by id), or does nothing."""
  problems = {split: dict(ids) for split, ids in index_problems.items()}
  for split, example_id, reason in sorted(found):
    problems.setdefault(split, {})[example_id] = reason
  if any(problems.values()):
    raise bad_examples_error(context, problems)


class BeamChecks:
  """The strict Beam run's bad examples, gathered over all splits of the one pipeline: each
  split's transform hands over its "bad" output, and the last split's adds the step that fails
  the pipeline with all of them, the driver's indexing problems included (checked on the
  workers, not before: one run reports everything)."""

  def __init__(self, context: str, index_problems: Mapping[str, Sequence[Problem]]):
    self.context = context
    self.index_problems = {split: {p.id: p.reason for p in problems}
                           for split, problems in index_problems.items()}
    self.outputs: list[Any] = []

  def add(self, bad) -> None:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top

    self.outputs.append(bad)
    if len(self.outputs) == len(self.index_problems):
      _ = (tuple(self.outputs) | "FlattenBadExamples" >> beam.Flatten()
           | "ListBadExamples" >> beam.combiners.ToList()
           | "FailOnBadExamples" >> beam.Map(_raise_bad_examples, context=self.context,
                                             index_problems=self.index_problems))


def beam_examples(records: Sequence[Record], spec: LoadSpec, split: str, context: str,
                  namespace: str, skip: bool,
                  load: Callable[[Record, LoadSpec], dict[str, Any]] | None = None,
                  checks: BeamChecks | None = None):
  """A `beam.PTransform` producing the (key, example) pairs of `records` on the Beam workers
  (`load`, default `load_example`, must be a module-level function, so that it pickles). Strict
  (not `skip`), bad examples go to `checks` (one of its own for this split if None)."""
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{context}: Beam generation was requested (a Beam runner or Beam "
                      "options were given) but apache-beam is not installed: "
                      "pip install apache-beam") from e
  fn = functools.partial(_beam_load, spec=spec, split=split, context=context,
                         namespace=namespace, skip=skip, load=load)
  if skip:
    return beam.Create(list(records)) | beam.FlatMap(fn)
  checks = checks or BeamChecks(context, {split: ()})

  @beam.ptransform_fn
  def strict(root):
    results = (root | "Create" >> beam.Create(list(records))
               | "Load" >> beam.FlatMap(fn).with_outputs("bad", main="examples"))
    checks.add(results.bad)
    return results.examples

  return strict()  # pylint: disable=no-value-for-parameter


# ---------------------------------------------------------------------------------------------
# The builder.


class DermoscopyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders of hand-downloaded dermoscopy archives (see the module docstring).

  Subclasses set the class attributes below, BUILDER_CONFIGS (LesionConfigs) and
  MANUAL_DOWNLOAD_INSTRUCTIONS, and implement `_index`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIG_CLASS = LesionConfig
  DESCRIPTION: str = ""
  CITATION: str = ""
  HOMEPAGE: str = ""
  IMAGE_FORMAT: str = "jpeg"  # encoding of stored images
  LABEL_NAMES: tuple[str, ...] = ()
  OFFICIAL_SIZES: dict[str, int] = {}  # split → images in the full official release

  def __init__(self, *, skip_bad_examples: bool = False, **kwargs: Any):
    """`skip_bad_examples`: skip (log, count, record) bad examples instead of failing."""
    super().__init__(**kwargs)
    self.skip_bad_examples = skip_bad_examples
    self._use_beam = False
    self._skips = SkipLog(self.name)
    self._bad = BadLog(self._context())
    self._beam_checks: BeamChecks | None = None

  def _context(self, split: str = "") -> str:
    return f"{self.name}/{self.builder_config.name}" + (f" {split}" if split else "")

  def _extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
    """Dataset-specific features beyond the shared keys (none by default)."""
    return {}

  def _load_fn(self) -> Callable[[Record, LoadSpec], dict[str, Any]]:
    """How one example is made (a module-level function, for Beam's pickling)."""
    return load_example

  @abc.abstractmethod
  def _index(self, manual_dir: epath.Path) -> dict[str, SplitIndex]:
    """Split name → its records and indexing problems, in the order splits are generated."""

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    features: dict[str, Any] = {
        "id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format=self.IMAGE_FORMAT),
    }
    if c.masks:
      features["mask"] = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    if c.labels:
      features["label"] = tfds.features.ClassLabel(names=list(self.LABEL_NAMES))
      features["malignant"] = tfds.features.ClassLabel(names=_MALIGNANT_NAMES)
    features.update(self._extra_features())
    # Built directly (not dataset_info_from_configs) so no package README/CITATIONS is picked up.
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label") if c.labels else None,
        homepage=self.HOMEPAGE or None,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(),
    )

  # --- A strict builder never serves data prepared with skips. -------------------------------

  def _prepared_skipped_counts(self) -> dict[str, int]:
    """split → examples skipped when this builder's data folder was prepared; {} when nothing was
    skipped or nothing is prepared. Read from the folder itself, not from `self.info`, which may
    predate a preparation by another builder object."""
    try:
      metadata = json.loads((self.data_path / "metadata.json").read_text())
    except (OSError, ValueError):  # not prepared (or no metadata): nothing skipped there
      return {}
    counts = metadata.get("skipped_counts") or {
        split: len(ids) for split, ids in (metadata.get("skipped_examples") or {}).items()}
    return {split: int(n) for split, n in counts.items() if n}

  def _refuse_data_prepared_with_skips(self, action: str) -> None:
    """A PreparedWithSkipsError if this builder is strict and its folder lacks skipped examples."""
    if self.skip_bad_examples:
      return
    counts = self._prepared_skipped_counts()
    if not counts:
      return
    name = self._context()
    per_split = ", ".join(f"{split}: {n}" for split, n in counts.items())
    raise PreparedWithSkipsError(
        f"{name}: {self.data_path} was prepared with skip_bad_examples=True, "
        f"{sum(counts.values())} examples short ({per_split}; which and why: "
        f"info.metadata['skipped_examples']), and this builder is strict "
        f"(skip_bad_examples=False, the default), so it does not {action} that data. Either use "
        f"it as it is by asking for skip_bad_examples=True (tfds.builder(\"{name}/"
        f"skip_bad_examples=True\"), --dataset={name}/skip_bad_examples=True), or prepare it "
        f"again strictly (which fails naming every bad example until they are fixed): delete "
        f"{self.data_path}, or pass download_mode=tfds.download.GenerateMode."
        f"REUSE_CACHE_IF_EXISTS to download_and_prepare.")

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
    """TFDS's, except that a strict builder refuses to reuse data prepared with skips (unless the
    download mode overwrites it, which prepares it again strictly)."""
    mode = tfds.download.GenerateMode(
        (download_config or tfds.download.DownloadConfig()).download_mode)
    if not mode.overwrite_dataset and mode != tfds.download.GenerateMode.UPDATE_DATASET_INFO:
      self._refuse_data_prepared_with_skips("reuse")
    super().download_and_prepare(download_dir=download_dir, download_config=download_config,
                                 **kwargs)

  def as_dataset(self, *args, **kwargs):
    """TFDS's, except that a strict builder refuses to read data prepared with skips: a run that
    asked for every example must not train or evaluate on fewer without saying so."""
    self._refuse_data_prepared_with_skips("read")
    return super().as_dataset(*args, **kwargs)

  # --- Preparation. ----------------------------------------------------------------------------

  def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                            download_config: tfds.download.DownloadConfig) -> None:
    # TFDS itself switches to Beam only when `_generate_examples` returns a PTransform; we return
    # one exactly when the user asked for Beam by giving a runner or options.
    self._use_beam = (download_config.beam_runner is not None
                      or download_config.beam_options is not None)
    self._skips = SkipLog(self.name)
    self._bad = BadLog(self._context())
    self._beam_checks = None
    super()._download_and_prepare(dl_manager, download_config)
    if not self.skip_bad_examples and self._bad.count():
      # Normally raised at the end of the last split; here when TFDS stopped reading the splits
      # early (max_examples_per_split), so the problems found while indexing still fail the run.
      raise self._bad.error()
    if not self._use_beam:  # under Beam, _process_pipeline_result records the skips
      logging.log(logging.WARNING if self._skips.count() else logging.INFO, "%s",
                  self._skips.summary())
      self.info.metadata["skipped_counts"] = {s: len(ids) for s, ids in
                                              sorted(self._skips.skipped.items()) if ids}
      self.info.metadata["skipped_examples"] = {s: dict(sorted(ids.items()))
                                                for s, ids in self._skips.skipped.items() if ids}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = manual_dir_of(dl_manager, self.name)
    index = self._index(manual_dir)
    # Strict, the indexing problems are not raised here: they are reported with the bad examples
    # that only reading the images finds, all in one error (see BadLog and BeamChecks).
    self._bad = BadLog(self._context(), list(index))
    if self._use_beam and not self.skip_bad_examples:
      self._beam_checks = BeamChecks(self._context(),
                                     {split: i.problems for split, i in index.items()})
    generators = {}
    for split, split_index in index.items():
      context = self._context(split)
      for p in split_index.problems:
        if self.skip_bad_examples:
          self._skips.add(split, p.id, p.reason)
        elif not self._use_beam:
          self._bad.add(split, p.id, p.reason)
      official, n = self.OFFICIAL_SIZES.get(split), len(split_index.records)
      if official and n != official:
        logging.warning("%s: %d examples; the full official release has %d (a subset?).",
                        context, n, official)
      else:
        logging.info("%s: %d examples.", context, n)
      generators[split] = self._generate_examples(split=split, records=split_index.records)
    return generators

  def _generate_examples(self, split: str, records: Sequence[Record]):
    """A generator of (id, example), or under Beam a PTransform producing the same pairs."""
    spec = LoadSpec(max_size=self.builder_config.max_size, image_format=self.IMAGE_FORMAT)
    context = self._context(split)
    if self._use_beam:
      return beam_examples(records, spec, split, context, namespace=self.name,
                           skip=self.skip_bad_examples, load=self._load_fn(),
                           checks=self._beam_checks)
    return _iter_examples(records, spec, split, context,
                          self._skips if self.skip_bad_examples else None,
                          bad=None if self.skip_bad_examples else self._bad, load=self._load_fn())

  def _process_pipeline_result(self, pipeline_result) -> None:
    """After a Beam run: log and record how many examples the workers skipped, per split."""
    from apache_beam.metrics.metric import MetricsFilter  # pylint: disable=g-import-not-at-top

    metrics = pipeline_result.metrics().query(MetricsFilter().with_namespace(self.name))
    counts = collections.Counter({s: len(ids) for s, ids in self._skips.skipped.items()})
    examples = {s: dict(ids) for s, ids in self._skips.skipped.items()}  # found while indexing
    for result in metrics["counters"]:
      name = result.key.metric.name
      if name.startswith("skipped_"):
        counts[name[len("skipped_"):]] += result.committed or result.attempted or 0
    for result in metrics.get("string_sets", []):  # absent before Beam 2.58
      name = result.key.metric.name
      if name.startswith("skipped_ids_"):
        for entry in result.committed or result.attempted or ():
          example_id, _, reason = entry.partition("\t")
          examples.setdefault(name[len("skipped_ids_"):], {})[example_id] = reason
    counts = {s: n for s, n in sorted(counts.items()) if n}
    if counts:
      logging.warning("%s: skipped bad examples per split: %s; %s", self.name, counts,
                      {s: sorted(ids) for s, ids in sorted(examples.items())})
    else:
      logging.info("%s: no bad examples skipped.", self.name)
    self.info.metadata["skipped_counts"] = counts
    self.info.metadata["skipped_examples"] = {s: dict(sorted(ids.items()))
                                              for s, ids in sorted(examples.items()) if ids}


def index_isic_part1(manual_dir: epath.Path, dataset: str,
                     needs: Mapping[str, tuple[str, str, str]], mask_pattern: str,
                     read_labels: Callable[[epath.Path], Any]) -> dict[str, SplitIndex]:
  """The ISIC 2016/2017 layout: per split an image folder (ISIC_xxxxxxx.jpg), a Part 1 mask
  folder (`mask_pattern`) and a Part 3 label CSV, given as `needs[split] = (images, masks, csv)`."""
  out = {}
  for split in present_splits(manual_dir, dataset, needs):
    image_dir, mask_dir, csv = (manual_dir / p for p in needs[split])
    out[split] = match(index_files(image_dir, r"(ISIC_\d+)\.jpg", dataset),
                       index_files(mask_dir, mask_pattern, dataset),
                       read_labels(csv), image_dir=image_dir, mask_dir=mask_dir)
  return out
