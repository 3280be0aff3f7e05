"""The whole self-learning framework end to end on the tiny dataset, a few steps per stage."""
import json
import os

import pytest

from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.pipelines.self_learning import two_stage
from lesion_jax.tasks import classification, runner, segmentation


@pytest.fixture(scope="module")
def report(tiny_data_dir, tiny_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("two_stage"))
  seg = segmentation.SegmenterConfig(input=pipeline.InputConfig(image_size=32, batch_size=8),
                                     model=segmentation.SegmenterModelConfig(features=4, levels=2),
                                     run=RunConfig(num_steps=4, eval_every=4))
  specs = (two_stage.ClassifierSpec("LeNet-5, raw images", "lenet5", "raw", num_steps=4),
           two_stage.ClassifierSpec("Proposed: U-Net crop + LeNet-5", "lenet5", "crops", num_steps=4))
  config = two_stage.TwoStageConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, segmenter=seg,
                                    classifiers=specs, classifier_image_size=32, classifier_batch_size=8)
  return workdir, two_stage.run(config, workdir)


def test_report_compares_kmeans_with_unet_and_lists_every_classifier(report):
  workdir, result = report
  for method in ("kmeans", "unet"):
    assert result["segmentation"][method]["num_images"] == 16  # the whole test split
    assert 0.0 <= result["segmentation"][method]["jaccard"] <= 1.0
  assert [row["name"] for row in result["classification"]] == [
      "LeNet-5, raw images", "Proposed: U-Net crop + LeNet-5"]
  for row in result["classification"]:
    assert 0.0 <= row["test/accuracy"] <= 1.0 and row["test/misclassification_rate"] == pytest.approx(
        1.0 - row["test/accuracy"])
  text = open(os.path.join(workdir, "report.md")).read()
  assert "| K-means (k=5) pseudo-masks |" in text and "| Proposed: U-Net crop + LeNet-5 |" in text
  assert json.load(open(os.path.join(workdir, "report.json")))["classification"] == result["classification"]
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  assert metrics["segmentation/unet/jaccard"] == result["segmentation"]["unet"]["jaccard"]
  for name in ("kmeans_vs_unet.png", "jaccard_kmeans_vs_unet.png", "roc_classifiers.png"):
    assert os.path.exists(os.path.join(workdir, "figures", name)), name


def test_each_stage_is_a_run_the_other_commands_can_open(report, tiny_dataset):
  workdir, _ = report
  seg_task = runner.load(os.path.join(workdir, "segmenter"))
  assert isinstance(seg_task, segmentation.SegmentationTask)
  assert seg_task.config.mask_artifacts and seg_task.config.input.dataset == tiny_dataset  # pseudo-masks
  for name in ("lenet-5_raw_images", "proposed_u-net_crop___lenet-5"):
    task = runner.load(os.path.join(workdir, "classifiers", name))
    assert isinstance(task, classification.ClassificationTask) and task.config.model.name == "lenet5"
    assert bool(task.config.image_artifacts) == name.startswith("proposed")  # crops only for "proposed"
  assert json.load(open(os.path.join(workdir, "config.json")))["task"] == "two_stage"


def _photos():
  """uint8 RGB photos of other sizes than the dataset's."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 56), (35, 35))]


def _needs_segmenter_predictions():
  from lesion_jax.tasks import base  # pylint: disable=g-import-not-at-top
  if segmentation.SegmentationTask.predict_images is base.Task.predict_images:
    pytest.skip("SegmentationTask.predict_images is not implemented yet (the U-Net's masks on photos)")


def test_the_two_stage_workdir_loads_as_its_pipeline_and_predicts_with_the_crop_classifier(report):
  workdir, _ = report
  loaded = runner.load(workdir)
  assert isinstance(loaded, two_stage.TwoStagePipeline) and loaded.config.classifier_image_size == 32
  stages = loaded.stages(workdir)
  assert list(stages) == ["segmenter", "classifiers/lenet-5_raw_images", "classifiers/proposed_u-net_crop___lenet-5"]
  for stage_dir in stages.values():
    assert os.path.exists(os.path.join(stage_dir, "config.json")), stage_dir
  assert isinstance(runner.load(stages["segmenter"]), segmentation.SegmentationTask)
  task, state = loaded.predictor(workdir)  # the classifier on U-Net lesion crops, its best state
  assert isinstance(task, classification.ClassificationTask)
  assert task.config == runner.load(stages["classifiers/proposed_u-net_crop___lenet-5"]).config
  assert task.config.crop.segmenter_workdir == stages["segmenter"] and 1 <= int(state.step) <= 4  # best
  _needs_segmenter_predictions()
  photos = _photos()
  for photo, record in zip(photos, task.predict_images(state, photos)):
    assert record["mask"].shape == photo.shape[:2] and record["mask"].dtype == bool
    assert len(record["probabilities"]) == len(task.class_names)
    assert float(sum(record["probabilities"])) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def rounds(tiny_data_dir, tiny_dataset, tmp_path_factory):
  from lesion_jax.pipelines.self_learning import self_learning  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("self_learning"))
  seg = segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      model=segmentation.SegmenterModelConfig(features=4, levels=2), run=RunConfig(num_steps=4, eval_every=4))
  from lesion_jax.artifacts import relabel  # pylint: disable=g-import-not-at-top
  # A 4-step U-Net is never confident: keep every relabelled mask (the flags are tested on their own).
  config = self_learning.SelfLearningConfig(segmenter=seg, rounds=1, relabel=relabel.RelabelConfig(
      min_confidence=0.0, min_fraction=0.0, max_fraction=1.0))
  return workdir, config, self_learning.run(config, workdir)


def test_self_learning_rounds_relabel_with_the_previous_unet(rounds, tiny_dataset):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lesion_jax.artifacts import relabel, stage  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.self_learning import self_learning  # pylint: disable=g-import-not-at-top
  workdir, config, result = rounds
  rows = result["rounds"]
  assert [r["round"] for r in rows] == [0, 1] and rows[1]["trained_on"] == "round 0 U-Net"
  for row in rows:
    assert 0.0 <= row["test/jaccard"] <= 1.0
    assert set(row["pseudo_masks"]) == {"train", "validation"}  # the test split is not relabelled
    assert 0.0 <= row["pseudo_masks"]["train"]["pseudo_mask_jaccard"] <= 1.0
  first = runner.load(os.path.join(workdir, "round_0"))
  second = runner.load(os.path.join(workdir, "round_1"))
  assert "kmeans_mask" in first.config.mask_artifacts and relabel.RELABEL_KIND in second.config.mask_artifacts
  assert second.config.run.train_split == "train"  # not transductive by default
  # Round 1's masks are round 0's U-Net's own binarised maps, image by image.
  builder = pipeline.get_builder(tiny_dataset, config.segmenter.input.data_dir)
  state = runner.restore(first, os.path.join(workdir, "round_0"), "best")
  example = next(iter(stage.read_examples(builder, "train", features=("image",))))
  prob = first.masks.segment_images(state, [example["image"]])[0]
  stored = io_read_mask(second.config.mask_artifacts, example["id"])
  np.testing.assert_array_equal(stored, first.masks.binarize(prob)[0])
  assert os.path.exists(os.path.join(workdir, "figures", "rounds.png"))
  records = [json.load(open(os.path.join(second.config.mask_artifacts, f))) for f in
             os.listdir(second.config.mask_artifacts) if f.endswith(".json")]
  assert records and all(0.0 <= r["confidence"] <= 1.0 and "jaccard" in r for r in records)
  # Re-running resumes: nothing is trained or relabelled again, the same scores come back (the
  # pipeline loaded from the workdir runs it).
  again = runner.load(workdir).run(workdir)
  assert [r["test/jaccard"] for r in again["rounds"]] == [r["test/jaccard"] for r in rows]


def test_the_self_learning_workdir_loads_as_its_pipeline_and_predicts_with_the_last_round(rounds, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.self_learning import self_learning  # pylint: disable=g-import-not-at-top
  workdir, config, _ = rounds
  loaded = runner.load(workdir)
  assert isinstance(loaded, self_learning.SelfLearningPipeline) and loaded.config == config
  stages = loaded.stages(workdir)
  assert stages == {f"round_{r}": os.path.join(workdir, f"round_{r}") for r in (0, 1)}
  assert all(os.path.exists(os.path.join(d, "metrics.json")) for d in stages.values())
  task, state = loaded.predictor(workdir)
  assert isinstance(task, segmentation.SegmentationTask)
  assert task.config == runner.load(stages["round_1"]).config and int(state.step) == 4
  # A pipeline stopped before round 1 finished predicts with round 0.
  partial = str(tmp_path / "partial")
  shutil.copytree(stages["round_0"], os.path.join(partial, "round_0"))
  os.makedirs(os.path.join(partial, "round_1"))
  shutil.copy(os.path.join(workdir, "config.json"), partial)
  shutil.copy(os.path.join(stages["round_1"], "config.json"), os.path.join(partial, "round_1"))
  first, _ = runner.load(partial).predictor(partial)
  assert first.config == runner.load(stages["round_0"]).config
  _needs_segmenter_predictions()
  photos = _photos()
  for photo, record in zip(photos, task.predict_images(state, photos)):
    assert record["mask"].shape == photo.shape[:2] and record["mask"].dtype == bool


def test_self_learning_from_ground_truth_adds_pseudo_masks_of_the_test_images(tiny_data_dir, tiny_dataset,
                                                                               tmp_path_factory):
  from lesion_jax.artifacts import relabel, stage, store  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.self_learning import self_learning  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("self_learning_gt"))
  seg = segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      model=segmentation.SegmenterModelConfig(features=4, levels=2), run=RunConfig(num_steps=4, eval_every=4, val_split=""))
  keep_all = relabel.RelabelConfig(min_confidence=0.0, min_fraction=0.0, max_fraction=1.0)
  with pytest.raises(ValueError, match="transductive"):
    self_learning.SelfLearningConfig(segmenter=seg, rounds=1, relabel=keep_all, start="ground_truth")
  config = self_learning.SelfLearningConfig(segmenter=seg, rounds=1, relabel=keep_all, start="ground_truth",
                                            transductive=True)
  rows = self_learning.run(config, workdir)["rounds"]
  assert [r["trained_on"] for r in rows] == ["ground truth", "ground truth + round 0 U-Net"]
  assert set(rows[1]["pseudo_masks"]) == {"test"}  # only the test images are relabelled
  first = runner.load(os.path.join(workdir, "round_0"))
  second = runner.load(os.path.join(workdir, "round_1"))
  assert first.config.mask_artifacts is None and first.config.run.train_split == "train"
  assert second.config.run.train_split == "train+test" and second.config.keep_unmatched_masks
  # Round 1 reads the manual masks of the training images and round 0's masks of the test images.
  builder = pipeline.get_builder(tiny_dataset, tiny_data_dir)
  stored = {f[:-4] for f in os.listdir(second.config.mask_artifacts) if f.endswith(".png")}
  test_ids = set(stage.split_ids(builder, "test"))
  assert stored == {store.safe_name(i) for i in test_ids}
  # Byte for byte: the dataset's own encoded mask, or the stored artifact file.
  own = {ex["id"]: ex["mask"] for ex in pipeline.read_split(builder, "train+test").as_numpy_iterator()}
  joined = pipeline.read_split(builder, "train+test", joins=second.masks.joins())
  seen = set()
  for ex in joined.as_numpy_iterator():
    image_id = ex["id"].decode()
    if image_id in test_ids:
      path = os.path.join(second.config.mask_artifacts, store.safe_name(image_id) + ".png")
      assert ex["mask"] == open(path, "rb").read()
    else:
      assert ex["mask"] == own[ex["id"]]
    seen.add(image_id in test_ids)
  assert seen == {True, False}


def test_relabel_flags_unconfident_empty_and_full_maps():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lesion_jax.artifacts import relabel  # pylint: disable=g-import-not-at-top
  crisp = np.zeros((10, 10), np.float32)
  crisp[2:6, 2:6] = 1.0
  assert relabel.map_confidence(crisp, crisp > 0.5) == 1.0
  blurry = np.full((10, 10), 0.45, np.float32)
  blurry[2:6, 2:6] = 0.55
  assert relabel.map_confidence(blurry, blurry > 0.5) == pytest.approx(0.1)
  compute = relabel.relabel_compute(lambda images: [crisp, blurry, np.zeros((10, 10), np.float32)],
                                    lambda p: p > 0.5, relabel.RelabelConfig())
  out = compute([{"image": None}] * 3, None)
  assert [a.record["uncertain"] for a in out] == [False, True, True]
  assert "lesion fraction" in out[2].record["reasons"][-1]


def io_read_mask(directory, image_id):
  from lesion_jax import io  # pylint: disable=g-import-not-at-top
  from lesion_jax.artifacts import store  # pylint: disable=g-import-not-at-top
  return io.read_mask_file(os.path.join(directory, store.safe_name(image_id) + ".png"))
