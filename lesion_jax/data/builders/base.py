"""The base of the builders of hand-downloaded dermoscopy archives: `DermoscopyBuilder`.

A subclass only indexes its archive (`_index`, see `index`); the base class declares the
features of its `LesionConfig` (`size_configs`: the `512` and `full` variants), generates the
examples (see `generate`), records the skipped ones in `info.metadata`, and refuses, when strict,
to reuse or read data prepared with skips (`PreparedWithSkipsError`). Also the constants that
several builders share (the HAM10000 classes and citation).
"""
from __future__ import annotations

import abc
import collections
from collections.abc import Callable, Sequence
import dataclasses
import json
from typing import Any

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from lesion_jax.data.builders.errors import PreparedWithSkipsError
from lesion_jax.data.builders.generate import (BadLog, BeamChecks, SkipLog, beam_examples,
                                               iter_examples)
from lesion_jax.data.builders.images import LoadSpec, load_example
from lesion_jax.data.builders.index import Record, SplitIndex, manual_dir_of

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


class DermoscopyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders of hand-downloaded dermoscopy archives (see
  `lesion_jax.data.builders.common`).

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
        f"skip_bad_examples=True\"), `input.dataset`={name}/skip_bad_examples=True), or prepare it "
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
    return iter_examples(records, spec, split, context,
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

