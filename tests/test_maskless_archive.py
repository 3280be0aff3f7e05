"""A Part 3-only ISIC 2017 download (images and diagnoses, no lesion masks), as
../shared/data/isic2017_256 is: the `isic2017/part3_*` configs, what the default config says about
such a download, mixed mask presence, and self-learned segmentation on it (K-means pseudo-masks,
a U-Net, scored on another archive's masks), on tiny fake archives.
"""
import dataclasses
import os
import shutil

import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.data.builders import common
from lesion_jax.data.builders import isic2017
from lesion_jax.pipelines.self_learning import self_learning
from lesion_jax.tasks import runner, segmentation
from lesion_jax.train import sharding
from tests import test_builders as fake


def _part3_only(root):
  """The fake archive without its Part 1 folders."""
  manual = fake.make_isic2017(root)
  for part in ("Training", "Validation"):
    shutil.rmtree(manual / f"ISIC-2017_{part}_Part1_GroundTruth")
  return manual


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
  """(Part 3-only manual_dir, full manual_dir, one TFDS data_dir where both are prepared)."""
  part3 = _part3_only(tmp_path_factory.mktemp("part3_manual"))
  full = fake.make_isic2017(tmp_path_factory.mktemp("full_manual"))
  data_dir = tmp_path_factory.mktemp("maskless_tfds")
  fake.prepare(isic2017.Isic2017, part3, data_dir, config="part3_512")
  fake.prepare(isic2017.Isic2017, full, data_dir)
  return part3, full, data_dir


def test_part3_config_reads_images_and_diagnoses_without_masks(archives):
  part3, _, data_dir = archives
  builder = isic2017.Isic2017(data_dir=str(data_dir), config="part3_512")
  assert "mask" not in builder.info.features  # marked by the config: no placeholder masks
  names = builder.info.features["label"].names
  for split, rows in (("train", fake._2017_TRAIN), ("validation", fake._2017_VALID)):  # pylint: disable=protected-access
    examples = fake.read(builder, split)
    assert set(examples) == set(rows)
    for i, (diagnosis, _) in rows.items():
      assert names[examples[i]["label"]] == diagnosis


def test_default_config_on_a_part3_download_names_the_folder_and_the_part3_config(tmp_path):
  manual = _part3_only(tmp_path / "m")
  with pytest.raises(common.ManualDataError,
                     match=r"ISIC-2017_Training_Part1_GroundTruth missing.*isic2017/part3_512"):
    fake.prepare(isic2017.Isic2017, manual, tmp_path / "d")


def test_part3_config_ignores_part1_folders(archives):
  _, full, _ = archives
  builder = fake.prepare(isic2017.Isic2017, full, full.parent / "ignored_tfds", config="part3_512")
  assert "mask" not in builder.info.features
  assert set(fake.read(builder, "train")) == set(fake._2017_TRAIN)  # pylint: disable=protected-access


def test_mixed_presence_is_a_bad_example_named_by_id(tmp_path):
  manual = fake.make_isic2017(tmp_path / "m", splits=(("Training", fake._2017_TRAIN),))  # pylint: disable=protected-access
  os.remove(manual / "ISIC-2017_Training_Part1_GroundTruth" / "ISIC_0000003_segmentation.png")
  with pytest.raises(common.BadExampleError, match=r"ISIC_0000003.*has no mask"):
    fake.prepare(isic2017.Isic2017, manual, tmp_path / "strict")
  skipping = fake.prepare(isic2017.Isic2017, manual, tmp_path / "skip", skip_bad_examples=True)
  assert skipping.info.metadata["skipped_counts"] == {"train": 1}
  assert "ISIC_0000003" not in fake.read(skipping, "train")


def _segmenter(data_dir, manual, **changes) -> segmentation.SegmenterConfig:
  base = segmentation.SegmenterConfig()
  data = dataclasses.replace(base.input, dataset="isic2017/part3_512", data_dir=str(data_dir), manual_dir=str(manual),
                             image_size=32, batch_size=4)
  model = dataclasses.replace(base.model, features=4, levels=2)
  run = dataclasses.replace(base.run, num_steps=2, eval_every=2, val_split="validation", test_split="")
  # The fake images are noise: K-means flags its masks uncertain, kept here so the tiny run has targets.
  return dataclasses.replace(base, input=data, model=model, run=run, summary_images=0, drop_uncertain=False, **changes)


def test_a_segmenter_refuses_masks_the_archive_does_not_have(archives):
  part3, _, data_dir = archives
  mesh = sharding.make_mesh()
  with pytest.raises(config_lib.ConfigError, match=r"`input.dataset`='isic2017/part3_512' has no lesion masks.*`labels`='kmeans'"):
    segmentation.SegmentationTask(_segmenter(data_dir, part3)).check(mesh)
  with pytest.raises(config_lib.ConfigError, match=r"`run.test_split`='validation'.*set `run.test_split`=''"):
    segmentation.SegmentationTask(_segmenter(data_dir, part3, labels="kmeans")).check(mesh, [("run.test_split", "validation")])
  segmentation.SegmentationTask(_segmenter(data_dir, part3, labels="kmeans")).check(mesh)  # nothing scored: fine


@pytest.fixture(scope="module")
def self_learned(archives, tmp_path_factory):
  """One self-learning round on the Part 3-only archive, scored on the full archive's masks."""
  part3, full, data_dir = archives
  scored_on = self_learning.ScoredOn(dataset="isic2017", manual_dir=str(full), splits=("train", "validation"))
  # The segmenter asks for labels=kmeans itself (as segmentation/unet_selflearned_isic2017.py does); round 1
  # trains on round 0's masks.
  config = self_learning.SelfLearningConfig(segmenter=_segmenter(data_dir, part3, labels="kmeans"), rounds=1,
                                            scored_on=scored_on,
                                            artifact_dir=str(tmp_path_factory.mktemp("artifacts")))
  workdir = str(tmp_path_factory.mktemp("self_learned"))
  return workdir, self_learning.run(config, workdir)


def test_self_learned_round_trains_on_pseudo_masks_and_is_scored_on_another_archive(self_learned):
  workdir, metrics = self_learned
  row, relabelled = metrics["rounds"]
  assert row["trained_on"] == "K-means" and relabelled["trained_on"] == "round 0 U-Net"
  assert 0.0 <= relabelled["validation/jaccard"] <= 1.0
  for split in ("train", "validation"):
    assert 0.0 <= row[f"{split}/jaccard"] <= 1.0
  # The round's own run scored nothing (its archive has no masks): no test/ keys.
  own = runner.load(os.path.join(workdir, "round_0"))
  assert own.config.run.test_split == "" and own.config.mask_artifacts
  assert os.path.getsize(os.path.join(workdir, "figures", "kmeans_vs_selflearned_validation.png")) > 0
  kmeans_scores = io.read_json(os.path.join(workdir, "kmeans", "eval_validation.json"))  # the baseline row
  assert 0.0 <= kmeans_scores["validation/jaccard"] <= 1.0
  stored = io.read_json(os.path.join(workdir, "round_0", "eval_validation.json"))  # as evaluate writes it
  assert stored["validation/jaccard"] == row["validation/jaccard"] and stored["scored_on"]["dataset"] == "isic2017"


def test_a_resumed_self_learning_run_reuses_the_round_scores(self_learned, archives):
  workdir, metrics = self_learned
  part3, full, data_dir = archives
  stored = os.path.join(workdir, "round_0", "eval_validation.json")
  before = os.path.getmtime(stored)
  config = runner.load(workdir).config
  again = self_learning.run(config, workdir)
  assert os.path.getmtime(stored) == before
  assert again["rounds"][0]["validation/jaccard"] == metrics["rounds"][0]["validation/jaccard"]
  del part3, full, data_dir


def test_evaluate_overrides_may_move_a_segmenter_to_another_archive(self_learned, archives):
  workdir, metrics = self_learned
  _, full, _ = archives
  task = runner.load(os.path.join(workdir, "round_0"))
  moved = task.with_overrides(**{"input.dataset": "isic2017", "input.manual_dir": str(full)})
  state = runner.restore(moved, os.path.join(workdir, "round_0"), "best")
  scores, _ = runner.evaluate(moved, state, "validation")
  assert scores["validation/jaccard"] == pytest.approx(metrics["rounds"][0]["validation/jaccard"])
  with pytest.raises(config_lib.ConfigError, match="cannot change"):
    task.with_overrides(**{"input.image_size": 64})


def test_manual_masks_of_another_archive_replace_the_pseudo_masks_of_their_ids(archives, tmp_path):
  part3, full, data_dir = archives
  manual = segmentation.ManualMasks(dataset="isic2017", manual_dir=str(full), split="train")
  config = _segmenter(data_dir, part3, labels="kmeans", manual_masks=manual)
  config = dataclasses.replace(config, input=dataclasses.replace(config.input, artifact_dir=str(tmp_path)))
  prepared = segmentation.SegmentationTask(config).prepare(["train", "validation"])
  merged = prepared.config.mask_artifacts
  assert "manual_over_pseudo_mask" in merged
  truth = fake.read(isic2017.Isic2017(data_dir=str(data_dir)), "train")
  for image_id in fake._2017_TRAIN:  # pylint: disable=protected-access
    record = io.read_json(os.path.join(merged, f"{image_id}.json"))
    assert record["manual"] and not record["uncertain"]
    stored = io.read_mask_file(os.path.join(merged, f"{image_id}.png"))
    assert (stored == (truth[image_id]["mask"][..., 0] > 0)).all()
  for image_id in fake._2017_VALID:  # pylint: disable=protected-access  (no manual mask given: K-means')
    assert "manual" not in io.read_json(os.path.join(merged, f"{image_id}.json"))
  with pytest.raises(config_lib.ConfigError, match="`manual_masks.dataset`='isic2017'.*`labels`='kmeans'"):
    segmentation.SegmentationTask(_segmenter(data_dir, part3, manual_masks=manual)).check(sharding.make_mesh())
  with_masks = dataclasses.replace(_segmenter(data_dir, part3, manual_masks=manual),
                                   input=dataclasses.replace(config.input, dataset="isic2017", manual_dir=str(full)))
  with pytest.raises(config_lib.ConfigError, match="`manual_masks.dataset`='isic2017'.*`labels`='kmeans'"):
    segmentation.SegmentationTask(with_masks).check(sharding.make_mesh())  # an input with masks: refused too


def test_the_self_learned_pipeline_predicts_masks_on_photos(self_learned):
  workdir, _ = self_learned
  task, state = runner.predictor(workdir)  # the last round's U-Net
  photo = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
  (record,) = task.predict_images(state, [photo])
  assert record["mask"].shape == (40, 50) and record["mask"].dtype == bool
