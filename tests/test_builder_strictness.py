"""Strict preparation (the default, skip_bad_examples=False) on every path: one run reports every
bad example it can find, and a strict request never silently reads data prepared with skips.

Fake ISIC 2017 archives are written here with test_builders' helpers, each a few tiny images.
"""
import os
import pickle
import re
import shutil

import pytest
import tensorflow_datasets as tfds

from lesion_jax.data import pipeline
from lesion_jax.data.builders import common
from lesion_jax.data.builders import isic2017
from tests import test_builders as fake


def _archive(root):
  return fake.make_isic2017(root)


def _break_everything(manual, damaged_jpeg):
  """Six bad examples of every kind the validation knows, spread over both splits:

  train: ISIC_0000001 without its mask (found while indexing), ISIC_0000002 a JPEG damaged
  mid-stream (found only by decoding), ISIC_0000003 with a mask of another size (found after
  decoding both); validation: ISIC_0000010 with a bad label row (CSV), ISIC_0009999 a label row
  without image (CSV), ISIC_0000011 an empty image file (found only by reading).
  """
  train, valid = "ISIC-2017_Training", "ISIC-2017_Validation"
  os.remove(manual / f"{train}_Part1_GroundTruth" / "ISIC_0000001_segmentation.png")
  (manual / f"{train}_Data" / "ISIC_0000002.jpg").write_bytes(damaged_jpeg)
  fake._mask(manual / f"{train}_Part1_GroundTruth" / "ISIC_0000003_segmentation.png", 20, 21)
  csv = manual / f"{valid}_Part3_GroundTruth.csv"
  csv.write_text(csv.read_text().replace("ISIC_0000010,1.0,0.0", "ISIC_0000010,maybe,0.0")
                 + "ISIC_0009999,1.0,0.0\n")
  (manual / f"{valid}_Data" / "ISIC_0000011.jpg").write_bytes(b"")
  return {"train": {"ISIC_0000001": "has no mask", "ISIC_0000002": "corrupt JPEG data",
                    "ISIC_0000003": "is 21x20 px but its image"},
          "validation": {"ISIC_0000010": "melanoma='maybe'", "ISIC_0009999": "has no image",
                         "ISIC_0000011": "file is empty"}}


def _check_reports_all(error, expected):
  message = str(error)
  for split, problems in expected.items():
    for example_id, reason in problems.items():
      assert f"{split} {example_id}: " in message and reason in message, (example_id, message)
  assert "skip_bad_examples=True" in message
  assert {s: set(p) for s, p in error.problems.items()} == {s: set(p) for s, p in expected.items()}
  for split, problems in expected.items():
    for example_id, reason in problems.items():
      assert reason in error.problems[split][example_id]


def test_strict_preparation_reports_every_bad_example_of_every_split_in_one_run(
    tmp_path, damaged_jpeg):
  manual = _archive(tmp_path / "manual")
  expected = _break_everything(manual, damaged_jpeg)
  data_dir = tmp_path / "data"
  with pytest.raises(common.BadExampleError, match=r"6 bad examples \(train: 3, validation: 3\)"
                     ) as error:
    fake.prepare(isic2017.Isic2017, manual, data_dir)
  _check_reports_all(error.value, expected)
  # Nothing was prepared: a strict builder of the same folder prepares again from scratch.
  assert not isic2017.Isic2017(data_dir=str(data_dir)).data_path.exists()


def test_strict_preparation_stopped_by_a_split_without_good_examples_reports_all_it_found(
    tmp_path, damaged_jpeg):
  """A split that yields nothing would make TFDS stop ("No examples were yielded") before the
  next split is read; the error is still ours, with that split's bad examples, the indexing
  problems of every split, and which splits were not read."""
  manual = _archive(tmp_path / "manual")
  for k, image_id in enumerate(fake._2017_TRAIN):
    (manual / "ISIC-2017_Training_Data" / f"{image_id}.jpg").write_bytes(b"" if k % 2 else
                                                                        damaged_jpeg)
  csv = manual / "ISIC-2017_Validation_Part3_GroundTruth.csv"
  csv.write_text(csv.read_text() + "ISIC_0009999,1.0,0.0\n")
  with pytest.raises(common.BadExampleError, match=r"5 bad examples \(train: 4, validation: 1\)"
                     ) as error:
    fake.prepare(isic2017.Isic2017, manual, tmp_path / "data")
  assert set(error.value.problems["train"]) == set(fake._2017_TRAIN)
  assert "ISIC_0009999" in error.value.problems["validation"]
  assert "Not read to the end, so they may hold more (their file lists were checked): " \
      "validation." in str(error.value)


def test_strict_beam_preparation_reports_index_and_decode_problems_together(tmp_path,
                                                                            damaged_jpeg):
  beam = pytest.importorskip("apache_beam")  # not a dependency: runs where it is installed
  manual = _archive(tmp_path / "manual")
  expected = _break_everything(manual, damaged_jpeg)
  builder = isic2017.Isic2017(data_dir=str(tmp_path / "data"))
  options = beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])
  with pytest.raises(Exception) as error:  # Beam may wrap the error
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), beam_options=options))
  # The driver's indexing problems and the workers' decoding problems, of both splits, in the
  # one error of the pipeline's last step.
  message = str(error.value)
  assert "6 bad examples (train: 3, validation: 3)" in message, message
  for split, problems in expected.items():
    for example_id, reason in problems.items():
      assert f"{split} {example_id}: " in message and reason in message, (example_id, message)


def test_bad_example_errors_survive_pickling():
  """Beam's multi-process runners send a worker's exception back pickled."""
  error = common.bad_examples_error("isic2017/512", {"train": {"ISIC_1": "empty", "ISIC_2": "x"}})
  restored = pickle.loads(pickle.dumps(error))
  assert type(restored) is common.BadExamplesError and str(restored) == str(error)
  assert restored.problems == {"train": {"ISIC_1": "empty", "ISIC_2": "x"}}
  assert restored.example_id == "ISIC_1" and restored.reason == error.reason


def _prepare_with_skips(manual, data_dir, damaged_jpeg):
  """The broken archive prepared with skip_bad_examples=True: 6 examples short."""
  _break_everything(manual, damaged_jpeg)
  builder = tfds.builder("isic2017/512/skip_bad_examples=True", data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert builder.info.metadata["skipped_counts"] == {"train": 3, "validation": 3}
  return builder


def test_strict_request_refuses_data_prepared_with_skips(tmp_path, damaged_jpeg):
  manual, data_dir = _archive(tmp_path / "manual"), tmp_path / "data"
  skipping = _prepare_with_skips(manual, data_dir, damaged_jpeg)
  assert len(fake.read(skipping, "train")) == len(fake._2017_TRAIN) - 3  # what was asked for
  # The flag is a builder argument, not part of the config: both share one data folder.
  strict = isic2017.Isic2017(data_dir=str(data_dir))
  assert strict.data_path == skipping.data_path
  folder = re.escape(str(strict.data_path))
  refusal = (rf"isic2017/512: {folder} was prepared with skip_bad_examples=True, 6 examples "
             r"short \(train: 3, validation: 3;.*skip_bad_examples=True.*delete ")
  with pytest.raises(common.PreparedWithSkipsError, match=refusal):
    strict.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  with pytest.raises(common.PreparedWithSkipsError, match=refusal):
    strict.as_dataset(split="train")
  # What experiments do (--dataset=isic2017): refused too, as a ManualDataError (a usage error).
  with pytest.raises(common.ManualDataError, match=refusal):
    builder = pipeline.get_builder("isic2017", str(data_dir), str(manual))
    pipeline.read_split(builder, "train", per_process=False)
  # The skipped examples stay listed, for whoever reads the metadata without reading examples.
  assert set(strict.info.metadata["skipped_examples"]["train"]) == {
      "ISIC_0000001", "ISIC_0000002", "ISIC_0000003"}


def test_strict_request_may_reprepare_over_data_prepared_with_skips(tmp_path, damaged_jpeg):
  manual, data_dir = _archive(tmp_path / "manual"), tmp_path / "data"
  _prepare_with_skips(manual, data_dir, damaged_jpeg)
  fixed = _archive(tmp_path / "fixed")  # the archive once the bad files are replaced
  builder = isic2017.Isic2017(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(fixed),
      download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
  assert fake.sizes(builder) == {"train": len(fake._2017_TRAIN),
                                 "validation": len(fake._2017_VALID)}
  assert builder.info.metadata["skipped_counts"] == {}
  reread = isic2017.Isic2017(data_dir=str(data_dir))
  assert len(fake.read(reread, "validation")) == len(fake._2017_VALID)


def test_data_prepared_with_skips_but_none_skipped_serves_strict_requests(tmp_path):
  manual, data_dir = _archive(tmp_path / "manual"), tmp_path / "data"
  fake.prepare(isic2017.Isic2017, manual, data_dir, skip_bad_examples=True)
  strict = fake.prepare(isic2017.Isic2017, manual, data_dir)
  assert len(fake.read(strict, "train")) == len(fake._2017_TRAIN)


def test_every_incomplete_split_is_named_in_one_error(tmp_path):
  manual = _archive(tmp_path / "manual")
  os.remove(manual / "ISIC-2017_Training_Part3_GroundTruth.csv")
  shutil.rmtree(manual / "ISIC-2017_Validation_Part1_GroundTruth")
  with pytest.raises(common.ManualDataError,
                     match=r"split 'train' is incomplete: .*Training_Part3_GroundTruth\.csv "
                     r"missing; split 'validation' is incomplete: "
                     r".*Validation_Part1_GroundTruth missing"):
    fake.prepare(isic2017.Isic2017, manual, tmp_path / "data")


def test_strict_preparation_capped_by_max_examples_per_split_still_fails_on_indexing_problems(
    tmp_path):
  """TFDS stops reading a split at the cap, so no split reaches its end: the problems found while
  indexing still fail the run, after the splits."""
  manual = _archive(tmp_path / "manual")
  csv = manual / "ISIC-2017_Validation_Part3_GroundTruth.csv"
  csv.write_text(csv.read_text() + "ISIC_0009999,1.0,0.0\n")
  builder = isic2017.Isic2017(data_dir=str(tmp_path / "data"))
  with pytest.raises(common.BadExamplesError, match=r"ISIC_0009999: label row .* has no image.*"
                     r"Not read to the end.*: train, validation\."):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), max_examples_per_split=1))
