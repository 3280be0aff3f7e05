"""The Lesion Feature Network pipeline (Li and Shen 2018, ISIC 2017 task 2): the superpixel patch
op on a hand-made example (labels by the min-fraction rule and the priority, balancing counts,
rotations, background subsampling), the weighted loss, the LFN's shapes, and a tiny run on
synthetic_lesions/features_tiny (train, evaluate, resume, evaluate from the workdir)."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lesion_jax.train import state as state_lib
import tensorflow as tf

from lesion_jax import config as config_lib
from lesion_jax.artifacts import superpixels as superpixels_lib
from lesion_jax.artifacts.superpixels import SuperpixelConfig
from lesion_jax.data import pipeline
from lesion_jax.models.lfn import LFN_VARIANTS, lfn
from lesion_jax.pipelines.lesion_index import feature_network as fn
from lesion_jax.pipelines.lesion_index import ops
from lesion_jax.tasks import base, runner
from lesion_jax.train import sharding

FEATURES_TINY = "synthetic_lesions/features_tiny"
SEED = tf.constant([3, 4], tf.int64)


# ----------------------------------------------------------------------------------------------
# The patch op on a hand-made image: 3 superpixels, 3 mask channels.
#
#   superpixel 0: columns 0..3, plus pixel (4, 4)          33 px, pigment network on 8 (< half)
#   superpixel 1: rows 0..3, columns 4..7 (a 4x4 square)    16 px, pigment network on exactly 8
#   superpixel 2: rows 4..7, columns 4..7 without (4, 4)    15 px, negative network on all 15,
#                                                                  streaks on 11 (rows 4..6)
# The masks' channels are (streaks, pigment_network, negative_network) while the classes are
# 1 = pigment network, 2 = negative network, 3 = streaks: mask_channels = [1, 2, 0].

CHANNELS = [1, 2, 0]
PN, NN, ST = 1, 2, 3


def _hand_example():
  sp = np.zeros((8, 8), np.int32)
  sp[0:4, 4:8] = 1
  sp[4:8, 4:8] = 2
  sp[4, 4] = 0
  masks = np.zeros((8, 8, 3), np.uint8)
  masks[0:2, 0:4, 1] = 1  # 8 of superpixel 0's 33 pixels
  masks[0:2, 4:8, 1] = 1  # 8 of superpixel 1's 16 pixels: exactly half
  masks[4:8, 4:8, 2] = 1  # all of superpixel 2 (and pixel (4, 4) of superpixel 0)
  masks[4:7, 4:8, 0] = 1  # 11 of superpixel 2's 15 pixels
  image = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
  example = {"id": tf.constant("hand"), "image": tf.constant(image), "superpixels": tf.constant(sp),
             "feature_masks": tf.constant(masks)}
  return image, sp, example


def _run_op(example, seed=SEED, **kwargs):
  kwargs.setdefault("size", 4)
  out = ops.superpixel_patches(CHANNELS, **kwargs)(example, seed)
  return {k: v.numpy() for k, v in out.items()}


def test_labels_follow_the_min_fraction_rule_and_the_priority():
  _, _, example = _hand_example()
  out = _run_op(example, priority=[ST, NN, PN])
  assert list(out["patch_index"]) == [0, 1, 2] and list(out["rotation"]) == [0, 0, 0]
  # 0: 8/33 pigment network -> background; 1: exactly half -> pigment network; 2: negative
  # network (15/15) and streaks (11/15) both qualify -> the first of the priority.
  assert list(out["label"]) == [0, PN, ST]
  assert list(_run_op(example, priority=[NN, ST, PN])["label"]) == [0, PN, NN]
  assert list(_run_op(example, priority=[ST, NN, PN], min_fraction=0.6)["label"]) == [0, 0, ST]
  assert list(_run_op(example, priority=[ST, NN, PN], min_fraction=0.9)["label"]) == [0, 0, NN]
  assert list(_run_op(example)["label"]) == [0, PN, NN]  # default priority: class order
  assert out["image"].shape == (3, 4, 4, 3) and out["image"].dtype == np.float32
  assert list(out["id"]) == [b"hand"] * 3
  with pytest.raises(ValueError, match="priority"):
    ops.superpixel_patches(CHANNELS, priority=[1, 2])
  with pytest.raises(ValueError, match="keep_probability"):
    ops.superpixel_patches(CHANNELS, keep_probability=(0.1, 1.0))


def test_patch_is_the_bounding_box_with_the_outside_zeroed():
  image, _, example = _hand_example()
  out = _run_op(example, priority=[ST, NN, PN])  # size 4 = the 4x4 boxes: samples on pixel centres
  normalized = image.astype(np.float32) / 255.0 * 2.0 - 1.0
  np.testing.assert_allclose(out["image"][1], normalized[0:4, 4:8], atol=1e-5)
  expected = normalized[4:8, 4:8].copy()
  expected[0, 0] = 0.0  # pixel (4, 4) is superpixel 0's
  np.testing.assert_allclose(out["image"][2], expected, atol=1e-5)
  # Resized (bilinear, 4x4 box -> 7x7): samples whose nearest pixel is another's are still 0.
  big = _run_op(example, size=7)["image"][2]
  assert np.all(big[0, 0] == 0.0) and np.all(big[2:] != 0.0) and np.all(big[:, 2:] != 0.0)


def test_balancing_counts_and_the_four_rotations_of_a_small_class():
  _, _, example = _hand_example()
  prio = [ST, NN, PN]
  keep_all = (1.0, 1.0, 1.0, 1.0)
  plain = _run_op(example, priority=prio)
  out = _run_op(example, priority=prio, keep_probability=keep_all, rotate_classes=(ST,))
  assert np.bincount(out["label"], minlength=4).tolist() == [1, 1, 0, 4]
  assert list(out["patch_index"]) == [0, 1, 2, 2, 2, 2] and list(out["rotation"]) == [0, 0, 0, 1, 2, 3]
  for j in range(4):  # tf.image.rot90: k quarter turns counter-clockwise, as np.rot90
    np.testing.assert_allclose(out["image"][2 + j], np.rot90(plain["image"][2], j), atol=1e-6)
  np.testing.assert_array_equal(out["image"][:2], plain["image"][:2])
  both = _run_op(example, priority=prio, keep_probability=keep_all, rotate_classes=(PN, ST))
  assert np.bincount(both["label"], minlength=4).tolist() == [1, 4, 0, 4]
  no_background = _run_op(example, priority=prio, keep_probability=(0.0, 1.0, 1.0, 1.0), rotate_classes=(ST,))
  assert np.bincount(no_background["label"], minlength=4).tolist() == [0, 1, 0, 4]
  capped = _run_op(example, priority=prio, keep_probability=(1.0, 0.0, 1.0, 1.0))
  assert list(capped["label"]) == [0, ST]  # a class capped at 0 is left out too


def test_background_subsampling_is_deterministic_for_a_seed():
  sp = np.arange(64, dtype=np.int32).reshape(8, 8).repeat(2, 0).repeat(2, 1)  # 64 superpixels of 2x2
  example = {"id": tf.constant("bg"), "image": tf.zeros((16, 16, 3), tf.uint8), "superpixels": tf.constant(sp),
             "feature_masks": tf.zeros((16, 16, 3), tf.uint8)}
  op = ops.superpixel_patches(CHANNELS, size=4, keep_probability=(0.25, 1.0, 1.0, 1.0))
  kept = [op(example, tf.constant([s, 1], tf.int64))["patch_index"].numpy() for s in range(20)]
  again = op(example, tf.constant([0, 1], tf.int64))["patch_index"].numpy()
  np.testing.assert_array_equal(kept[0], again)
  assert len({tuple(k) for k in kept}) > 1  # other seeds keep other superpixels
  assert 0.15 < np.mean([len(k) for k in kept]) / 64 < 0.35
  full = ops.superpixel_patches(CHANNELS, size=4)(example, SEED)
  assert full["label"].shape == (64,) and not np.any(full["label"].numpy())


def test_decode_superpixels_reads_the_rgb_index_encoding():
  labels = np.array([[0, 255, 256], [70000, 65536, 3]], np.int32)
  png = tf.io.encode_png(tf.constant(superpixels_lib.encode_index_rgb(labels)))
  out = ops.decode_superpixels("superpixels")({"superpixels": png}, SEED)["superpixels"]
  np.testing.assert_array_equal(out.numpy(), labels)
  as_is = ops.decode_superpixels("superpixels")({"superpixels": tf.constant(labels)}, SEED)["superpixels"]
  np.testing.assert_array_equal(as_is.numpy(), labels)


# ----------------------------------------------------------------------------------------------
# The loss and the model.

def test_weighted_loss_matches_a_hand_computation():
  logits = np.array([[2.0, 0.5, -1.0, 0.0, 0.3], [0.1, 0.2, 3.0, -0.5, 0.0], [-1.0, 0.0, 0.0, 1.0, 2.0]],
                    np.float32)
  labels = np.array([0, 2, 4])
  weights = (1.0, 1.0, 5.0, 3.0, 8.0)
  ce = np.log(np.exp(logits).sum(1)) - logits[np.arange(3), labels]
  got = fn.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), weights)
  np.testing.assert_allclose(np.asarray(got), np.array([1.0, 5.0, 8.0]) * ce, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(fn.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), None)),
                             ce, rtol=1e-5)


@pytest.mark.parametrize("variant", sorted(LFN_VARIANTS))
def test_lfn_variants_give_class_logits_with_and_without_batchnorm(variant):
  x = jnp.zeros((2, 16, 16, 3))  # any side that survives three poolings
  for batchnorm in (True, False):
    model = lfn(variant, num_classes=5, use_batchnorm=batchnorm)
    variables = model.init(jax.random.key(0), x, train=False)
    assert ("batch_stats" in variables) == batchnorm
    out = model.apply(variables, x, train=False)
    assert out.shape == (2, 5) and out.dtype == jnp.float32
    convs = sorted((n for n in variables["params"] if n.startswith("Conv_")), key=lambda n: int(n[5:]))
    assert len(convs) == 4 * 3 and set(variables["params"]) - set(convs) == {"Dense_0"} | (
        {f"BatchNorm_{i}" for i in range(12)} if batchnorm else set())
    widths = [variables["params"][n]["kernel"].shape for n in convs]
    assert [k[-1] for k in widths] == [w for w in LFN_VARIANTS[variant] for _ in range(3)]
    assert [k[0] for k in widths] == [3, 3, 1] * 4  # 3x3, 3x3, 1x1 per stage
    assert ("bias" in variables["params"]["Conv_0"]) != batchnorm


def test_step_decay_schedule():
  schedule = state_lib.step_decay_schedule(0.01, 10, 0.1)
  np.testing.assert_allclose([schedule(s) for s in (0, 9, 10, 19, 20)], [0.01, 0.01, 1e-3, 1e-3, 1e-4], rtol=1e-5)
  # The same schedule is OptimizerConfig's step_decay (what the LFN builds from its own fields).
  from lesion_jax.train.state import OptimizerConfig, learning_rate_schedule  # pylint: disable=g-import-not-at-top
  step = learning_rate_schedule("step_decay", 0.01, 100, decay_every=10, decay_factor=0.1)
  np.testing.assert_allclose([step(s) for s in range(30)], [schedule(s) for s in range(30)])
  with pytest.raises(config_lib.ConfigError, match="decay_every"):
    OptimizerConfig(lr_schedule="step_decay")
  lfn_optimizer = fn.FeatureNetworkConfig().optimizer
  assert (lfn_optimizer.decay_every, lfn_optimizer.decay_factor) == (None, None)  # the LFN's own fields decide


# ----------------------------------------------------------------------------------------------
# A tiny run on features_tiny (32 px, 64/16/16 images, SLIC superpixels as artifacts).

@pytest.fixture(scope="module")
def features_data_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("tfds_features"))
  pipeline.get_builder(FEATURES_TINY, data_dir)
  return data_dir


@pytest.fixture(scope="module")
def task(features_data_dir):
  config = fn.FeatureNetworkConfig(
      input=pipeline.InputConfig(dataset=FEATURES_TINY, data_dir=features_data_dir, batch_size=16),
      patch=fn.PatchConfig(size=16), balance=fn.BalanceConfig(expanded_shuffle=256),
      superpixels=SuperpixelConfig(num_superpixels=50), run=config_lib.RunConfig(num_steps=20, eval_every=20, log_every=10),
      decay_every=10)
  return fn.FeatureNetworkTask(config)


@pytest.fixture(scope="module")
def trained(task, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lfn"))
  return workdir, runner.run(task, workdir)


def test_the_task_maps_feature_names_to_the_datasets_channels(task):
  # synthetic.FEATURE_NAMES: pigment_network, negative_network, streaks, milia_like_cyst, globules
  assert task.class_names == ["background", "pigment_network", "negative_network", "milia_like_cyst", "streaks"]
  assert task.patch_op(True).name.startswith("superpixel_patches([0, 1, 3, 2], size=16")
  assert "priority=[4, 2, 3, 1]" in task.patch_op(True).name and "keep_probability=()" in task.patch_op(False).name
  for bad in ({"model": fn.LFNModelConfig(variant="lfn_huge")},
              {"patch": fn.PatchConfig(priority=("streaks",))},
              {"patch": fn.PatchConfig(features=("pigment_network", "halo"), priority=("halo", "pigment_network"))},
              {"class_weights": (1.0, 2.0)}):
    with pytest.raises(config_lib.ConfigError):
      fn.FeatureNetworkTask(dataclasses.replace(task.config, **bad)).check(sharding.make_mesh())


def test_train_batches_are_balanced_patches_and_resumable(task):
  batches = task.train_batches(0)
  first, second = next(batches), next(batches)
  assert first["image"].shape == (16, 16, 16, 3) and first["label"].dtype == np.int32
  assert set(first) == {"id", "image", "label", "patch_index"}
  resumed = next(task.train_batches(1))
  for key in first:
    np.testing.assert_array_equal(resumed[key], second[key])
  # The superpixel artifacts' PNG decodes (RGB index encoding) to the stored label map.
  store = task.superpixel_store
  image_id = base.decode_ids(first["id"][:1])[0]
  png = tf.io.read_file(store.png_path(image_id))
  np.testing.assert_array_equal(ops.decode_index_rgb_tensor(png).numpy(),
                                superpixels_lib.read_superpixels(store, image_id).labels)


def test_tiny_run_scores_every_feature_and_restores_to_the_same_scores(task, trained):
  workdir, metrics = trained
  names = task.class_names
  for name in names[1:]:
    for metric in ("auc", "ap", "sensitivity", "specificity"):
      assert f"test/{name}_{metric}" in metrics
  assert metrics["test/mean_auc"] is not None and 0.0 <= metrics["test/mean_auc"] <= 1.0
  assert 0.0 <= metrics["test/accuracy"] <= 1.0 and metrics["test/num_images"] == 16
  cm = np.asarray(metrics["test/confusion_matrix"])
  assert cm.shape == (5, 5) and cm.sum() == metrics["test/num_patches"] > 16
  history = json.load(open(os.path.join(workdir, "history.json")))
  assert [s for s, _ in history["val/best_metric"]] == [20] and "train/accuracy" in history
  for figure in ("test_confusion.png", "test_patches.png", "curves.png"):
    assert os.path.exists(os.path.join(workdir, "figures", figure)), figure
  assert json.load(open(os.path.join(workdir, "config.json")))["task"] == "feature_network"
  # From the workdir alone: the task from config.json, the best checkpoint, the same scores.
  loaded = runner.load(workdir)
  assert loaded.config == task.config
  scores, result = runner.evaluate(loaded, runner.restore(loaded, workdir, "best"), "test")
  assert scores == {k: v for k, v in metrics.items()}
  assert len(result.ids) == metrics["test/num_patches"]


def test_predict_images_scores_each_feature_on_a_photos_slic_superpixels_as_evaluation_does(task, trained):
  from lesion_jax.artifacts import stage  # pylint: disable=g-import-not-at-top
  workdir, _ = trained
  mesh = sharding.make_mesh()
  state = runner.restore(task, workdir, "best", mesh)
  assert task.predicts == {"scores"}
  rng = np.random.default_rng(0)
  photos = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 56), (33, 33))]
  records = task.predict_images(state, photos)
  features = task.class_names[1:]
  for photo, record in zip(photos, records):
    assert sorted(record["scores"]) == sorted(features)
    assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
    labels, patches, index = task.photo_patches(photo)
    assert labels.shape == photo.shape[:2] and len(patches) == len(index) == len(np.unique(labels))
  # On the test split's images: the largest per-superpixel probability of each feature among the
  # patches the evaluation scored for that image (the same SLIC superpixels, the same patches).
  evaluation = task.evaluate(state, "test", mesh)
  ids = np.asarray(evaluation.ids)
  examples = list(stage.read_examples(task.builder, "test", features=("image",)))[:3]
  for ex, record in zip(examples, task.predict_images(state, [ex["image"] for ex in examples])):
    probs = evaluation.per_example["probs"][ids == ex["id"]]
    assert len(probs) == len(task.photo_patches(ex["image"])[1])
    for k, name in enumerate(features, start=1):
      assert record["scores"][name] == pytest.approx(probs[:, k].max(), abs=1e-5), name
