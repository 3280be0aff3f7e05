"""The lesion-mask parts the segmentation task shares with Mask R-CNN's (LesionMasks,
MaskPostprocess: composed, not inherited), what the segmentation task builds before training
(`prepare`: input statistics and K-means pseudo-masks), and `predict_images` on photos of any
size. Mask R-CNN's own run predicting on photos is in test_maskrcnn.py."""
import dataclasses
import json

import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax import models
from lesion_jax.artifacts import annotate, stage
from lesion_jax.artifacts.kmeans import KMeansConfig
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.eval import postprocess
from lesion_jax.pipelines.maskrcnn import task as maskrcnn
from lesion_jax.tasks import base, lesion_masks, runner, segmentation

SIZES = ((40, 56), (32, 32), (71, 23))


@pytest.fixture(scope="module")
def config(tiny_data_dir, tiny_dataset):
  return segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      model=segmentation.SegmenterModelConfig(features=4, levels=2), run=RunConfig(num_steps=2, eval_every=2, log_every=2),
      summary_images=0)


@pytest.fixture(scope="module")
def trained(config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("segmenter"))
  runner.run(segmentation.SegmentationTask(config), workdir, "test")
  task = runner.load(workdir)
  return task, runner.restore(task, workdir, "best")


def test_predict_images_gives_each_image_its_own_size_mask(trained):
  task, state = trained
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
  records = task.predict_images(state, images)
  assert [r["mask"].shape for r in records] == list(SIZES)
  assert all(r["mask"].dtype == bool for r in records)
  # The run's maps, binarised as it scores them.
  for record, mask in zip(records, task.masks.masks_for(task.masks.segment_images(state, images))):
    np.testing.assert_array_equal(record["mask"], mask)
  tta = task.predict_images(state, images, predict="tta")
  assert [r["mask"].shape for r in tta] == list(SIZES)
  with pytest.raises(base.PredictionUnsupported, match="no 'flips' prediction"):
    task.predict_images(state, images, predict="flips")


def test_prepare_measures_input_statistics_and_annotates_kmeans_masks(config, tmp_path):
  data = dataclasses.replace(config.input, artifact_dir=str(tmp_path))
  asked = dataclasses.replace(config, input=data, labels="kmeans", kmeans=KMeansConfig(k=4), input_norm="dataset")
  task = segmentation.SegmentationTask(asked)
  prepared = task.prepare(runner.run_splits(task, "test"))
  c = prepared.config
  assert (c.model.channel_mean, c.model.channel_std) == pipeline.channel_statistics(data, "train")
  store = annotate.kmeans_store(str(tmp_path), task.builder.info.full_name, asked.kmeans)
  assert c.mask_artifacts == store.directory
  # The splits trained and validated on, not the test split (scored against the ground truth).
  assert all(store.has(i) for split in ("train", "validation") for i in stage.split_ids(task.builder, split))
  assert not any(store.has(i) for i in stage.split_ids(task.builder, "test"))
  assert dataclasses.replace(c, mask_artifacts=None, model=config.model) == asked  # nothing else changes
  assert task.prepare(["train"]).config == c  # stored: found again, not recomputed differently
  assert prepared.prepare(["train"]) is prepared  # a prepared (recorded) config is left as it is
  plain = segmentation.SegmentationTask(config)
  assert plain.prepare(["train"]) is plain
  # Another store of masks to train on is not silently replaced by the K-means one.
  with pytest.raises(config_lib.ConfigError, match="`labels`=kmeans"):
    segmentation.SegmentationTask(dataclasses.replace(asked, mask_artifacts=str(tmp_path / "other"))).prepare([])


def test_a_record_written_before_the_prepare_fields_loads_with_their_defaults(config):
  record = json.loads(json.dumps(segmentation.SegmentationTask(config).describe()))
  for key in ("labels", "kmeans", "input_norm"):
    del record["config"][key]
  assert base.from_record(record).config == config


def test_mask_rcnn_composes_the_shared_parts_instead_of_inheriting_the_segmenter():
  assert maskrcnn.MaskRCNNTask.__bases__ == (base.Task,)
  task = maskrcnn.MaskRCNNTask(maskrcnn.MaskRCNNConfig(threshold=0.3, postprocess=False, paste="union"))
  assert isinstance(task.masks, lesion_masks.LesionMasks)
  assert task.masks.postprocess == postprocess.MaskPostprocess(0.3, clean=False, fallback=False)
  assert task.masks.source == maskrcnn.InstancePaste(128, 0.5, "union")
  assert task.with_overrides(fallback=True).masks.postprocess.fallback
  with pytest.raises(config_lib.ConfigError, match="`tta_scales`"):
    task.with_overrides(tta_scales=(64,))
  seg = segmentation.SegmentationTask(segmentation.SegmenterConfig())
  assert seg.with_overrides(fallback=True, tta_scales=(64, 80)).masks.postprocess.fallback
  # The network from the model registry, its (train, test) pairs joined.
  net = task.model()
  assert isinstance(net, models.MaskRCNN) and net.num_classes == 1
  assert (net.rpn_pre_nms_topk, net.rpn_post_nms_topk) == ((1000, 500), (500, 200))
