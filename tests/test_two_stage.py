"""The whole self-learning framework end to end on the tiny dataset, a few steps per stage."""
import json
import os

import pytest

from lesion_jax.data import pipeline
from lesion_jax.tasks import classification, runner, segmentation, two_stage


@pytest.fixture(scope="module")
def report(tiny_data_dir, tiny_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("two_stage"))
  seg = segmentation.SegmenterConfig(input=pipeline.InputConfig(image_size=32, batch_size=8),
                                     model=segmentation.SegmenterModelConfig(features=4, levels=2),
                                     num_steps=4, eval_every=4)
  specs = (two_stage.ClassifierSpec("LeNet-5, raw images", "lenet5", "raw", num_steps=4),
           two_stage.ClassifierSpec("Proposed: U-Net crop + LeNet-5", "lenet5", "segmented", num_steps=4))
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
