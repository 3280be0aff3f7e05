"""Pipeline 3, purification: random holes, hole scores and the OpenCV baselines, the inpainting
task end to end (Adam phase, then SGD fine-tuning with the encoder BatchNorm frozen), the purify
stage (resume) and the classifier's purified input, and the dilated U-Net's paper details."""
import dataclasses
import json
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lesion_jax.artifacts import occlusion, stage
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.models.unet import UNet
from lesion_jax.pipelines.purification import holes, ops
from lesion_jax.pipelines.purification import metrics as inpainting_eval
from lesion_jax.pipelines.purification import task as inpainting
from lesion_jax.tasks import classification, runner, segmentation


# --- random holes and scores ------------------------------------------------------------------

def test_random_holes_are_deterministic_bounded_and_varied():
  masks = [holes.random_hole_mask(seed, 64) for seed in range(30)]
  fractions = np.array([np.mean(m > 0) for m in masks])
  assert ((fractions > 0) & (fractions <= holes.HoleConfig().max_hole_fraction)).all()
  assert fractions.std() > 0.02  # strokes, hairs and blobs in varying amounts
  np.testing.assert_array_equal(holes.random_hole_mask(7, 64), masks[7])
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  op = ops.random_holes(64)
  a = op({}, tf.constant([1, 2], tf.int64))["holes"].numpy()
  b = op({}, tf.constant([1, 2], tf.int64))["holes"].numpy()
  assert a.shape == (64, 64, 1) and set(np.unique(a)) <= {0.0, 1.0} and a.any()
  np.testing.assert_array_equal(a, b)


def test_hole_scores_hand_case():
  target = np.full((16, 16, 3), 100, np.uint8)
  output = target.copy()
  hole = np.zeros((16, 16), bool)
  hole[4:8, 4:8] = True
  output[hole] = 110  # |error| 10 on every hole pixel, nothing outside
  output[0, 0] = 0  # outside the holes: ignored
  s = inpainting_eval.hole_scores(output, target, hole)
  assert s["l1"] == pytest.approx(10.0)
  assert s["psnr"] == pytest.approx(10 * np.log10(255.0 ** 2 / 100.0))
  assert inpainting_eval.hole_scores(target, target, hole)["ssim"] == pytest.approx(1.0)
  assert np.isnan(inpainting_eval.hole_scores(output, target, np.zeros_like(hole))["psnr"])


def test_opencv_baselines_fill_only_the_holes():
  rng = np.random.default_rng(0)
  image = cv2.GaussianBlur(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), (7, 7), 2)
  hole = np.zeros((32, 32), bool)
  hole[10:14, 5:25] = True
  damaged = image.copy()
  damaged[hole] = 0
  for method in inpainting_eval.OPENCV_METHODS:
    filled = inpainting_eval.opencv_inpaint(damaged, hole, method)
    np.testing.assert_array_equal(filled[~hole], damaged[~hole])
    assert np.abs(filled[hole].astype(int) - image[hole]).mean() < np.abs(damaged[hole].astype(int) - image[hole]).mean()
  with pytest.raises(ValueError, match="unknown OpenCV"):
    inpainting_eval.opencv_inpaint(damaged, hole, "magic")


# --- the inpainting task, end to end -----------------------------------------------------------

@pytest.fixture(scope="module")
def inpainter(tiny_data_dir, tiny_dataset, tmp_path_factory):
  """A tiny inpainter: 4 Adam steps, then 2 SGD fine-tuning steps from its best checkpoint."""
  root = str(tmp_path_factory.mktemp("inpainter"))
  config = inpainting.InpainterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=4),
      model=inpainting.InpainterModelConfig(features=8, levels=3), run=RunConfig(num_steps=4, eval_every=4, log_every=2))
  initial = os.path.join(root, "initial")
  runner.run(inpainting.InpaintingTask(config), initial, "test")
  final = os.path.join(root, "final")
  tuned = dataclasses.replace(config, finetune_from=initial, run=dataclasses.replace(config.run, num_steps=2, eval_every=2))
  runner.run(inpainting.InpaintingTask(tuned), final, "test")
  return {"root": root, "initial": initial, "final": final, "config": config}


def test_inpainter_run_scores_network_and_opencv_inside_the_occlusions(inpainter):
  with open(os.path.join(inpainter["final"], "metrics.json")) as f:
    metrics = json.load(f)
  for method in inpainting.METHODS:
    for score in inpainting_eval.SCORES:
      assert np.isfinite(metrics[f"test/{method}_{score}"]), (method, score)
  assert 0 < metrics["test/images_with_holes"] <= metrics["test/num_images"] == 16
  assert os.path.exists(os.path.join(inpainter["final"], "figures", "test_inpainting.png"))
  with open(os.path.join(inpainter["final"], "config.json")) as f:
    assert json.load(f)["config"]["finetune_from"] == inpainter["initial"]


def test_finetuning_starts_from_the_initial_run_and_freezes_the_encoder_batchnorm(inpainter):
  initial_task = runner.load(inpainter["initial"])
  first = runner.restore(initial_task, inpainter["initial"], "best")
  tuned_task = runner.load(inpainter["final"])
  assert tuned_task.model().freeze_encoder_bn and not initial_task.model().freeze_encoder_bn
  start = tuned_task.warm_start(tuned_task.init_state(jax.random.key(1)))
  jax.tree.map(np.testing.assert_array_equal, start.params, jax.device_get(first.params))
  after = runner.restore(tuned_task, inpainter["final"], "latest")
  stats_before, stats_after = jax.device_get(first.batch_stats), jax.device_get(after.batch_stats)
  encoder = [k for k in stats_after if k.startswith("enc")]
  decoder = [k for k in stats_after if k.startswith("dec")]
  assert encoder and decoder
  for k in encoder:  # frozen: running statistics untouched by the fine-tuning steps
    jax.tree.map(np.testing.assert_array_equal, stats_after[k], stats_before[k])
  assert any(not np.array_equal(a, b) for k in decoder
             for a, b in zip(jax.tree.leaves(stats_after[k]), jax.tree.leaves(stats_before[k])))


def test_inpaint_images_changes_only_the_hole_pixels(inpainter):
  task = runner.load(inpainter["final"])
  state = runner.restore(task, inpainter["final"], "best")
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)  # not the run's size: resized both ways
  hole = np.zeros((40, 56), bool)
  hole[10:20, 30:40] = True
  out, = task.inpaint_images(state, [image], [hole])
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out[~hole], image[~hole])
  assert not np.array_equal(out[hole], image[hole])


def test_purify_stage_resumes_and_feeds_the_classifier(inpainter, tiny_data_dir, tiny_dataset):
  builder = pipeline.get_builder(tiny_dataset, tiny_data_dir)
  root = os.path.join(inpainter["root"], "artifacts")
  detector = occlusion.OcclusionConfig()
  directory = inpainting.purified_images(inpainter["final"], builder, ["test"], root, detector)
  ids = stage.split_ids(builder, "test")
  assert all(os.path.exists(os.path.join(directory, f"{i}.json")) for i in ids)
  masks = occlusion.occlusion_store(root, builder.info.full_name, detector)
  examples = {ex["id"]: ex["image"] for ex in stage.read_examples(builder, "test", features=("image",))}
  from lesion_jax import io  # pylint: disable=g-import-not-at-top
  for image_id in ids:  # pixels outside the detected occlusions are the original ones
    purified = io.read_rgb_image(os.path.join(directory, f"{image_id}.png"))
    mask = occlusion.read_occlusion_mask(masks, image_id)
    np.testing.assert_array_equal(purified[~mask], examples[image_id][~mask])
  # Resume: nothing is recomputed; a deleted record is recomputed alone.
  from lesion_jax.artifacts import purify  # pylint: disable=g-import-not-at-top
  task, state = inpainting.inpainter_from_workdir(inpainter["final"])
  store = purify.purified_store(root, builder.info.full_name, inpainter["final"], int(state.step), masks)
  assert store.directory == directory
  inpaint = lambda images, m: task.inpaint_images(state, images, m)
  again = purify.purify_split(builder, "test", store, masks, detector, inpaint)
  assert again["computed"] == 0 and again["reused"] == len(ids)
  os.remove(store.record_path(ids[3]))
  again = purify.purify_split(builder, "test", store, masks, detector, inpaint)
  assert again["computed"] == 1 and again["reused"] == len(ids) - 1
  # The classifier reads the purified images in place of the originals.
  config = classification.ClassifierConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=16),
      image_artifacts=directory)
  batch = next(iter(classification.ClassificationTask(config).eval_batches("test")))
  first = batch["id"][0].decode()
  expected = pipeline.preprocess_image(io.read_rgb_image(os.path.join(directory, f"{first}.png")), 32)
  np.testing.assert_allclose(batch["image"][0], expected, atol=1e-6)


def test_perceptual_and_style_features_come_from_a_trained_classifier(tiny_data_dir, tiny_dataset, tmp_path):
  config = classification.ClassifierConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      run=RunConfig(num_steps=2, eval_every=2, log_every=1, val_split=""))
  workdir = str(tmp_path / "lenet")
  runner.train(classification.ClassificationTask(config), workdir)
  features = inpainting.classifier_features(workdir, 2)
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  maps = features(images)
  assert len(maps) == 2 and all(m.ndim == 4 and m.shape[0] == 2 and float(m.min()) >= 0 for m in maps)
  from lesion_jax.pipelines.purification import losses  # pylint: disable=g-import-not-at-top
  target = images
  output = images * 0.5
  mask = jnp.ones((2, 32, 32, 1)).at[:, 8:16, 8:16].set(0.0)
  terms = losses.loss_per_example(output, target, mask, features)
  assert float(terms["perceptual"].min()) > 0 and float(terms["style_out"].min()) > 0
  with pytest.raises(ValueError, match="fewer than"):
    inpainting.classifier_features(workdir, 50)(images)


def test_bad_inpainter_configs_are_refused(tiny_data_dir, tiny_dataset):
  from lesion_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from lesion_jax.train import sharding  # pylint: disable=g-import-not-at-top
  base = inpainting.InpainterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=4),
      model=inpainting.InpainterModelConfig(features=8, levels=3))
  mesh = sharding.make_mesh()
  for change, message in (({"eval_holes": "nowhere"}, "choose one of"),
                          ({"target_key": "clean_photo"}, "no 'clean_photo' feature"),
                          ({"model": inpainting.InpainterModelConfig(levels=6)}, "multiple of 64")):
    with pytest.raises(config_lib.ConfigError, match=message):
      inpainting.InpaintingTask(dataclasses.replace(base, **change)).check(mesh)



def test_detected_holes_are_prepared_before_training(tiny_data_dir, tiny_dataset, tmp_path):
  # eval_holes=detected needs the detected masks of the splits read: prepare stores them (once).
  config = inpainting.InpainterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=4,
                                 artifact_dir=str(tmp_path)),
      model=inpainting.InpainterModelConfig(features=8, levels=3), eval_holes="detected")
  task = inpainting.InpaintingTask(config)
  assert task.prepare(["test"]) is not task
  prepared = task.prepare(["test"]).config.occlusion_artifacts
  assert prepared and prepared.startswith(str(tmp_path)) and os.listdir(prepared)
  plain = inpainting.InpaintingTask(dataclasses.replace(config, eval_holes="random"))
  assert plain.prepare(["test"]) is plain  # nothing detected, nothing stored


def test_real_data_mode_scores_random_holes_in_the_image_itself(tiny_data_dir, tiny_dataset):
  # No clean truth on real images: --target_key=image --eval_holes=random.
  config = inpainting.InpainterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      target_key="image", eval_holes="random")
  task = inpainting.InpaintingTask(config)
  batch = next(iter(task.eval_batches("test")))
  np.testing.assert_array_equal(batch["image"], batch["target"])
  assert (batch["mask"] < 0.5).any() and (batch["mask"] > 0.5).any()
  again = next(iter(task.eval_batches("test")))  # the same random holes every evaluation
  np.testing.assert_array_equal(batch["mask"], again["mask"])
  train = next(iter(task.train_batches(0)))
  assert set(train) >= {"target", "mask"} and train["target"].shape == (8, 32, 32, 3)


# --- the dilated U-Net -----------------------------------------------------------------------

def test_dilated_unet_has_dilated_2_then_4_convs_and_standardises_its_input():
  config = segmentation.SegmenterModelConfig(name="dilated_unet", features=4, levels=2, norm="none",
                                             channel_mean=(0.6, 0.5, 0.4), channel_std=(0.2, 0.1, 0.3))
  model = config.build()
  assert model.bottleneck_dilations == (2, 4)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)), jnp.float32)
  # Random weights of the right shapes (eval_shape: no compiled initialisation, which is slow cold).
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype),
                           jax.eval_shape(model.init, jax.random.key(0), x))
  assert {"dilated0", "dilated1"} <= set(variables["params"])
  kernels = [variables["params"][f"dilated{j}"]["conv0"]["kernel"].shape for j in (0, 1)]
  assert kernels == [(3, 3, 16, 16)] * 2
  # The input is standardised: the same weights without the statistics, fed ((x + 1) / 2 - mean)
  # / std, give the same output (and a different one on x itself).
  plain = UNet(features=4, levels=2, norm="none", bottleneck_dilations=(2, 4))
  standardised = (((np.asarray(x) + 1) / 2) - np.array(config.channel_mean)) / np.array(config.channel_std)
  out = jax.jit(model.apply)(variables, x)
  both = jax.jit(plain.apply)(variables, jnp.concatenate([jnp.asarray(standardised, jnp.float32), x]))
  np.testing.assert_allclose(out[0], both[0], rtol=1e-4, atol=1e-4)
  assert not np.allclose(out[0], both[1])


def test_channel_statistics_match_numpy(tiny_data_dir, tiny_dataset):
  config = pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32)
  mean, std = pipeline.channel_statistics(config, "validation")
  builder = pipeline.get_builder(tiny_dataset, tiny_data_dir)
  pixels = np.concatenate([ex["image"].reshape(-1, 3) / 255.0 for ex in stage.read_examples(builder, "validation",
                                                                                              features=("image",))])
  np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-5)
  np.testing.assert_allclose(std, pixels.std(0), atol=1e-5)
