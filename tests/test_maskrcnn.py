"""Pipeline 4's Mask R-CNN: target assignment on hand cases, instances from masks, pasting and box
AP, one compile of the train step whatever the number of lesions, and a tiny run (train, resume,
evaluate, predict masks at native resolution, predict_images on photos). The box/NMS/RoIAlign ops
have their own reference tests (test_detection_ops.py)."""
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.detection import targets
from lesion_jax.eval import metrics, postprocess
from lesion_jax.pipelines.maskrcnn import metrics as detection_metrics
from lesion_jax.pipelines.maskrcnn import ops
from lesion_jax.pipelines.maskrcnn import task as maskrcnn
from lesion_jax.tasks import base, runner, segmentation
from lesion_jax.train import sharding
from lesion_jax.train.state import OptimizerConfig


def test_anchor_labels_on_a_hand_case():
  gt = jnp.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])  # one lesion, one padding slot
  valid = jnp.array([True, False])
  anchors = jnp.array([
      [0.0, 0.0, 10.0, 10.0],    # IoU 1: foreground
      [0.0, 0.0, 10.0, 8.0],     # IoU 0.8: foreground
      [0.0, 0.0, 10.0, 5.0],     # IoU 0.5: between the thresholds, ignored
      [0.0, 0.0, 10.0, 2.0],     # IoU 0.2: background
      [20.0, 20.0, 30.0, 30.0],  # no overlap: background (the padding box at 0 is never matched)
  ])
  labels, matched = targets.assign_anchors(anchors, gt, valid, fg_iou=0.7, bg_iou=0.3)
  np.testing.assert_array_equal(labels, [1, 1, -1, 0, 0])
  np.testing.assert_array_equal(matched[:3], [0, 0, 0])
  # A lesion no anchor covers at 0.7 still gets its best anchors (ties included) as positives.
  small = jnp.array([[0.0, 0.0, 10.0, 5.0], [0.0, 5.0, 10.0, 10.0], [0.0, 0.0, 10.0, 2.0]])
  labels, _ = targets.assign_anchors(small, gt, valid, fg_iou=0.7, bg_iou=0.3)
  np.testing.assert_array_equal(labels, [1, 1, 0])
  labels, _ = targets.assign_anchors(small, gt, valid, fg_iou=0.7, bg_iou=0.3, allow_low_quality=False)
  np.testing.assert_array_equal(labels, [-1, -1, 0])
  # No lesion at all: every anchor is background.
  labels, _ = targets.assign_anchors(anchors, gt, jnp.array([False, False]))
  np.testing.assert_array_equal(labels, [0, 0, 0, 0, 0])


def test_sampling_keeps_the_foreground_quota_and_fills_with_background():
  labels = jnp.array([1] * 10 + [0] * 50 + [-1] * 40)
  sampled = np.asarray(targets.sample_labels(labels, 16, 0.25, jax.random.PRNGKey(0)))
  assert (sampled == 1).sum() == 4 and (sampled == 0).sum() == 12
  assert np.all(labels[sampled >= 0] == sampled[sampled >= 0])  # never relabels
  few = jnp.array([1, 1] + [0] * 5 + [-1] * 3)
  sampled = np.asarray(targets.sample_labels(few, 16, 0.5, jax.random.PRNGKey(1)))
  assert (sampled == 1).sum() == 2 and (sampled == 0).sum() == 5  # too few of both: all kept
  # The mask head's slots: the foreground maximum, or a smaller cap (--mask_rois_per_image).
  assert [targets.mask_rois(512, 0.25, cap) for cap in (0, 32, 200)] == [128, 32, 128]


def test_roi_sampling_adds_the_lesion_box_and_puts_foreground_first():
  proposals = jnp.array([[0.0, 0.0, 10.0, 9.0], [30.0, 30.0, 40.0, 40.0], [50.0, 50.0, 60.0, 60.0]])
  gt = jnp.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
  s = targets.sample_rois(proposals, jnp.array([True, True, False]), gt, jnp.array([1, 0]),
                          jnp.array([True, False]), num_rois=8, fg_fraction=0.5, fg_iou=0.5,
                          rng=jax.random.PRNGKey(0))
  classes, valid = np.asarray(s.classes), np.asarray(s.valid)
  # Foreground: the near-exact proposal and the lesion's own box; background: the far proposal.
  np.testing.assert_array_equal(classes[:2], [1, 1])
  assert valid[:3].all() and not valid[3:].any() and classes[2] == 0
  fg_boxes = {tuple(np.asarray(b).tolist()) for b in s.boxes[:2]}
  assert fg_boxes == {(0.0, 0.0, 10.0, 9.0), (0.0, 0.0, 10.0, 10.0)}
  # Mask targets: the lesion's mask cropped to each box.
  masks = np.zeros((64, 64, 2), np.float32)
  masks[0:10, 0:10, 0] = 1.0
  t = np.asarray(targets.mask_targets(jnp.asarray(masks), s.boxes[:2], s.matched[:2], 8))
  assert t.shape == (2, 8, 8) and t.min() == 1.0  # both boxes lie inside the lesion


def _instances(mask, mode="whole", max_instances=3):
  op = ops.lesion_instances("mask", max_instances, mode, min_area=2)
  return {k: v.numpy() for k, v in op({"mask": tf.constant(mask)}, tf.zeros([2], tf.int64)).items()}


def test_instances_from_masks_give_exact_boxes():
  mask = np.zeros((20, 30, 1), np.float32)
  mask[2:6, 3:9] = 1.0      # two parts of one lesion
  mask[10:18, 20:28] = 1.0
  whole = _instances(mask)
  np.testing.assert_array_equal(whole["gt_valid"], [True, False, False])
  np.testing.assert_array_equal(whole["gt_boxes"][0], [2, 3, 18, 28])
  np.testing.assert_array_equal(whole["gt_classes"], [1, 0, 0])
  np.testing.assert_array_equal(whole["gt_masks"][..., 0], mask[..., 0])
  parts = _instances(mask, "components")
  np.testing.assert_array_equal(parts["gt_valid"], [True, True, False])
  np.testing.assert_array_equal(parts["gt_boxes"][:2], [[10, 20, 18, 28], [2, 3, 6, 9]])  # largest first
  empty = _instances(np.zeros((20, 30, 1), np.float32))
  assert not empty["gt_valid"].any() and not empty["gt_boxes"].any()


def test_paste_fills_the_box_at_native_resolution():
  prob = postprocess.paste_mask(np.ones((28, 28)), [10, 20, 50, 60], 100, 120, box_scale=(1.0, 1.0))
  mask = prob >= 0.5
  assert prob.shape == (100, 120)
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (10, 50, 20, 60)
  # Boxes in model pixels scale to the native image (the model saw it stretched).
  scaled = postprocess.paste_mask(np.ones((28, 28)), [5, 10, 25, 30], 100, 120, box_scale=(2.0, 2.0))
  np.testing.assert_allclose(scaled, prob, atol=1e-5)


def test_box_ap_and_lesion_found_counts_on_a_hand_case():
  truth = np.zeros((20, 20), bool)
  truth[0:10, 0:10] = True
  acc = detection_metrics.DetectionAccumulator(3, score_threshold=0.5)
  # Image 1: best detection exact (TP at 0.5 and 0.75), a duplicate (FP), padding.
  acc.update([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]], [0.9, 0.8, 0.0], [True, True, False], truth)
  # Image 2: one detection at IoU 0.6 with score 0.4: no lesion found, TP at 0.5 only.
  acc.update([[0, 0, 10, 6], [0, 0, 0, 0], [0, 0, 0, 0]], [0.4, 0, 0], [True, False, False], truth)
  out = acc.summarize(acc.rows())
  # IoU 0.5: detections by score 0.9 TP, 0.8 FP, 0.4 TP → precision envelope 1 up to recall 0.5,
  # 2/3 up to recall 1: AP = (51·1 + 50·2/3) / 101.
  assert out["box_ap50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
  assert out["box_ap75"] == pytest.approx(51 / 101)
  assert out["no_lesion_images"] == 1
  assert out["lesion_found"]["lesion_images_found"] == 1 and out["lesion_found"]["lesion_images_missed"] == 1
  confusion = metrics.pixel_confusion({"tp": [3, 1], "fp": [1, 0], "fn": [0, 2], "tn": [6, 7]})
  assert confusion["sensitivity"] == pytest.approx(4 / 6) and confusion["precision"] == pytest.approx(4 / 5)


TINY_MODEL = maskrcnn.MaskRCNNModelConfig(
    depth=18, width=8, fpn_features=16, anchor_sizes=(4.0, 8.0, 16.0, 32.0, 64.0), rpn_pre_nms_topk_train=64,
    rpn_pre_nms_topk_test=32, rpn_post_nms_topk_train=32, rpn_post_nms_topk_test=16, rpn_batch_per_image=32,
    rois_per_image=16, box_fc_features=32, mask_features=16, detections=4)


@pytest.fixture(scope="module")
def tiny_config(tiny_data_dir, tiny_dataset):
  return maskrcnn.MaskRCNNConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=4),
      model=TINY_MODEL, optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3, warmup_steps=2),
      run=RunConfig(num_steps=6, eval_every=3, log_every=3, val_split="validation"), score_threshold=0.05,
      summary_images=0)


def test_one_compile_for_batches_with_different_numbers_of_lesions(tiny_config):
  # Jitted exactly as the training loop jits it (same function name, shardings, donation, batch
  # fields, typed rng): the persistent compilation cache then serves this compile to tiny_run below
  # instead of compiling the same step twice (~50 s on CPU).
  task = maskrcnn.MaskRCNNTask(tiny_config)
  mesh = sharding.make_mesh()
  rng_init, rng_train = jax.random.split(jax.random.key(task.seed))
  state = sharding.replicate(task.init_state(rng_init), mesh)
  inner = task.train_step()
  traces = []

  @functools.wraps(inner)
  def counted(state, batch, rng):
    traces.append(1)
    return inner(state, batch, rng)

  step = sharding.jit_train_step(counted, state, mesh)
  template = sharding.device_fields(next(task.train_batches(0)))
  b, h, w, slots = template["gt_masks"].shape

  def batch(num_lesions):
    masks = np.zeros((b, h, w, slots), np.float32)
    boxes = np.zeros((b, slots, 4), np.float32)
    valid = np.zeros((b, slots), bool)
    for i, count in enumerate(num_lesions):
      for k in range(count):
        y, x = 2 + 14 * (k // 2), 2 + 14 * (k % 2)
        masks[i, y:y + 12, x:x + 12, k] = 1.0
        boxes[i, k] = [y, x, y + 12, x + 12]
        valid[i, k] = True
    fields = dict(template, gt_boxes=boxes, gt_classes=valid.astype(template["gt_classes"].dtype),
                  gt_masks=masks, gt_valid=valid)
    assert all(fields[k].dtype == template[k].dtype for k in fields)
    return sharding.shard_batch(fields, mesh)

  assert slots >= 3 and b == 4
  for step_number, counts in enumerate(((1, 1, 1, 1), (0, 2, 3, 1), (0, 0, 0, 0)), 1):
    state, m = step(state, batch(counts), jax.random.fold_in(rng_train, step_number))
    assert all(np.isfinite(float(v)) for v in m.values()), m
    if not any(counts):  # nothing to detect: no foreground terms, and no NaN from empty means
      assert float(m["mask"]) == 0.0 and float(m["roi_box"]) == 0.0 and float(m["fg_rois"]) == 0.0
    else:
      assert float(m["fg_rois"]) > 0
  assert len(traces) == 1


@pytest.fixture(scope="module")
def tiny_run(tiny_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("maskrcnn"))
  first_three = dataclasses.replace(tiny_config, run=dataclasses.replace(tiny_config.run, num_steps=3))
  runner.train(maskrcnn.MaskRCNNTask(first_three), workdir, sharding.make_mesh())
  scores = runner.run(maskrcnn.MaskRCNNTask(tiny_config), workdir, "test")  # resumes at step 3
  return workdir, scores


def test_tiny_run_resumes_scores_and_predicts_at_native_resolution(tiny_run):
  workdir, scores = tiny_run
  history = json.load(open(os.path.join(workdir, "history.json")))
  loss_key = next(k for k in history if k.endswith("loss"))
  assert [s for s, _ in history[loss_key]] == [3, 6]  # the second run resumed at step 3
  assert scores["test/num_images"] == 16
  for key in ("jaccard", "dice", "box_ap50", "box_ap75", "no_lesion_images"):
    assert f"test/{key}" in scores, key
  assert 0 <= scores["test/no_lesion_images"] <= 16
  assert set(scores["test/pixel_confusion"]) >= {"accuracy", "sensitivity", "specificity", "precision"}
  task = runner.load(workdir)
  assert isinstance(task, maskrcnn.MaskRCNNTask)
  mesh = sharding.make_mesh()
  state = runner.restore(task, workdir, "best", mesh)
  image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
  prob, = task.masks.segment_images(state, [image], mesh)
  assert prob.shape == (40, 56) and 0.0 <= prob.min() and prob.max() <= 1.0


def test_tiny_run_is_a_lesion_segmenter_that_predicts_masks_on_photos(tiny_run):
  workdir, _ = tiny_run
  task = segmentation.load_segmenter(workdir)  # what lesion crops for a classifier accept
  assert isinstance(task, maskrcnn.MaskRCNNTask)
  state = runner.restore(task, workdir, "best", sharding.make_mesh())
  rng = np.random.default_rng(1)
  images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 56), (64, 48), (32, 32))]
  records = task.predict_images(state, images)
  assert [r["mask"].shape for r in records] == [(40, 56), (64, 48), (32, 32)]
  assert all(r["mask"].dtype == bool for r in records)
  for record, mask in zip(records, task.masks.masks_for(task.masks.segment_images(state, images))):
    np.testing.assert_array_equal(record["mask"], mask)
  with pytest.raises(base.PredictionUnsupported, match="no 'tta' prediction"):
    task.predict_images(state, images, predict="tta")
