"""The real-data levers: the stratified selection split, Shades of Gray colour constancy,
letterboxed input mapped back, the catastrophic-failure fallback, the soft Jaccard loss and
multi-scale flip test-time augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from lesion_jax.data import ops, pipeline, selection
from lesion_jax.eval import metrics, postprocess
from lesion_jax.train import losses


# --- selection split ---------------------------------------------------------------------------

def test_index_ranges_split_merges_runs():
  assert selection.index_ranges_split("train", [5, 0, 1, 2]) == "train[0:3]+train[5:6]"
  assert selection.index_ranges_split("train", [7]) == "train[7:8]"
  with pytest.raises(ValueError):
    selection.index_ranges_split("train", [])


def test_split_name_shortens_long_index_range_splits_only():
  long = selection.index_ranges_split("train", [0, 1, 2, 5, 9, 11, 20])  # 5 ranges, 7 examples
  assert selection.split_name(long) == "train: 7 examples in 5 index ranges"
  for short in ("validation", "train[0:3]+train[5:6]", "train[:80%]", "train+validation+test+extra"):
    assert selection.split_name(short) == short


def test_holdout_is_stratified_disjoint_complete_and_fixed():
  labels = np.array([0] * 83 + [1] * 27 + [2] * 40)  # the ISIC sample's Training classes
  fit, holdout = selection.stratified_holdout_indices(labels, 0.2, seed=0)
  assert len(holdout) == 30 and len(fit) == 120
  assert not set(fit) & set(holdout) and sorted([*fit, *holdout]) == list(range(150))
  for c, n in zip(range(3), (83, 27, 40)):  # each class within one image of its share
    assert abs((labels[holdout] == c).sum() - 0.2 * n) <= 1
  again = selection.stratified_holdout_indices(labels, 0.2, seed=0)
  np.testing.assert_array_equal(again[1], holdout)
  assert not np.array_equal(selection.stratified_holdout_indices(labels, 0.2, seed=1)[1], holdout)
  with pytest.raises(ValueError):
    selection.stratified_holdout_indices(labels, 1.0, seed=0)


def test_holdout_splits_read_through_tfds(tiny_data_dir, tiny_dataset):
  builder = pipeline.get_builder(tiny_dataset, tiny_data_dir)
  fit, holdout = selection.holdout_splits(builder, "train", 0.25, seed=3)
  ids = lambda split: [i.decode() for i in pipeline.read_split(builder, split, per_process=False).map(
      lambda ex: ex["id"]).as_numpy_iterator()]
  fit_ids, holdout_ids, all_ids = ids(fit), ids(holdout), ids("train")
  assert len(holdout_ids) == len(all_ids) // 4 and not set(fit_ids) & set(holdout_ids)
  assert sorted(fit_ids + holdout_ids) == sorted(all_ids)
  assert builder.info.splits[holdout].num_examples == len(holdout_ids)  # the runner's count works
  assert selection.holdout_splits(builder, "train", 0.25, seed=3) == (fit, holdout)
  labels = np.fromiter(pipeline.read_split(builder, "train", per_process=False).map(
      lambda ex: ex["label"]).as_numpy_iterator(), np.int64)
  held = np.fromiter(pipeline.read_split(builder, holdout, per_process=False).map(
      lambda ex: ex["label"]).as_numpy_iterator(), np.int64)
  for c in np.unique(labels):  # stratified on the diagnosis
    assert abs((held == c).sum() - 0.25 * (labels == c).sum()) <= 1


# --- colour constancy ----------------------------------------------------------------------------

def _sog(image, p=6.0):
  return ops.shades_of_gray("image", p)({"image": tf.constant(image, tf.float32)}, None)["image"].numpy()


def test_shades_of_gray_turns_a_uniform_cast_grey():
  cast = np.broadcast_to(np.array([0.6, 0.3, 0.3], np.float32), (4, 5, 3))
  out = _sog(cast)
  grey = np.sqrt(0.6 ** 2 + 0.3 ** 2 + 0.3 ** 2) / np.sqrt(3)  # |e| / sqrt(3) with e = the colour
  np.testing.assert_allclose(out, np.full((4, 5, 3), grey), atol=1e-6)


def test_shades_of_gray_hand_case_and_grey_world():
  # Two pixels; red is 0 and 1, green and blue 0.5: e_r = (1/2)^(1/p), e_g = e_b = 0.5.
  image = np.array([[[0.0, 0.5, 0.5], [1.0, 0.5, 0.5]]], np.float32)
  for p in (6.0, 1.0):
    e = np.array([0.5 ** (1 / p), 0.5, 0.5])
    gains = np.linalg.norm(e) / np.sqrt(3) / e
    np.testing.assert_allclose(_sog(image, p), np.clip(image * gains, 0, 1), atol=1e-6)
  # p = 1 is Grey World: the channel means become equal.
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 0.5, (8, 8, 3)).astype(np.float32) * np.array([1.0, 0.6, 0.4], np.float32)
  means = _sog(image, 1.0).reshape(-1, 3).mean(0)
  np.testing.assert_allclose(means, means.mean(), rtol=1e-5)
  with pytest.raises(ValueError):
    ops.shades_of_gray("image", 0.5)


def test_colour_constancy_and_letterbox_reach_predict_preprocessing(tiny_data_dir, tiny_dataset):
  # predict's preprocessing equals the evaluation pipeline's for every geometry / colour setting.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = pipeline.get_builder(tiny_dataset, tiny_data_dir)
  raw = next(iter(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False))))
  config = pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=48, batch_size=4,
                                geometry="letterbox", color_constancy="shades_of_gray")
  preprocess = ops.segmentation_ops(48, None, keep_encoded_mask=True, **pipeline.image_prep(config))
  batch = next(pipeline.eval_iterator(config, preprocess, "test"))
  np.testing.assert_allclose(pipeline.preprocess_image(raw["image"], 48, **pipeline.image_prep(config)),
                             batch["image"][0], atol=1e-6)
  plain = pipeline.preprocess_image(raw["image"], 48)
  assert np.abs(plain - batch["image"][0]).max() > 0.05


# --- letterbox ------------------------------------------------------------------------------------

def test_letterboxed_mask_stays_on_its_image_and_maps_back():
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  h, w, size = 30, 60, 32
  image = np.zeros((h, w, 3), np.uint8)
  mask = np.zeros((h, w, 1), np.uint8)
  image[8:22, 10:40] = 200
  mask[8:22, 10:40] = 255
  out = ops.chain([ops.letterbox("image", size), ops.letterbox("mask", size, mask=True)])(
      {"image": tf.constant(image), "mask": tf.constant(mask)}, None)
  boxed_image, boxed_mask = out["image"].numpy(), out["mask"].numpy()[..., 0]
  assert boxed_mask.shape == (size, size) and set(np.unique(boxed_mask)) <= {0.0, 1.0}
  top, left, nh, nw = ops.letterbox_window(h, w, size)
  assert (top, left, nh, nw) == (8, 0, 16, 32)
  assert not boxed_mask[:top].any() and not boxed_mask[top + nh:].any()  # nothing in the padding
  bright = boxed_image[..., 0] > 0.5
  assert (bright == (boxed_mask > 0)).mean() > 0.97  # the mask sits on its lesion
  # A map shaped like the letterboxed mask comes back to the native mask.
  task = segmentation.SegmentationTask(segmentation.SegmenterConfig(
      input=pipeline.InputConfig(image_size=size, geometry="letterbox")))
  back = task.prob_at(boxed_mask.astype(np.float32), h, w) > 0.5
  truth = mask[..., 0] > 0
  assert (back & truth).sum() / (back | truth).sum() > 0.9
  stretched = segmentation.SegmentationTask(segmentation.SegmenterConfig(input=pipeline.InputConfig(image_size=size)))
  wrong = stretched.prob_at(boxed_mask.astype(np.float32), h, w) > 0.5
  assert (wrong & truth).sum() / (wrong | truth).sum() < 0.7  # the geometry matters


# --- fallback, loss, TTA ---------------------------------------------------------------------------

def test_catastrophic_fallback_hand_cases():
  prob = np.full((20, 20), 0.05, np.float32)
  prob[5:10, 5:12] = 0.3  # a weak lesion: nothing passes 0.5
  mask, replaced = postprocess.catastrophic_fallback(prob, prob > 0.5)
  assert replaced and mask.sum() == 35 and mask[5:10, 5:12].all()
  full = np.full((20, 20), 0.8, np.float32)
  full[4:12, 4:12] = 0.99  # the whole field of view passes 0.5; Otsu finds the lesion
  mask, replaced = postprocess.catastrophic_fallback(full, full > 0.5)
  assert replaced and mask.sum() == 64
  normal = prob > 0.2
  mask, replaced = postprocess.catastrophic_fallback(prob, normal)
  assert not replaced and np.array_equal(mask, normal)
  flat = np.full((20, 20), 0.9, np.float32)  # nothing to separate: the mask stays as it was
  mask, replaced = postprocess.catastrophic_fallback(flat, flat > 0.5)
  assert not replaced and mask.all()


def test_soft_jaccard_loss():
  masks = jnp.zeros((2, 4, 4, 1)).at[:, :2].set(1.0)  # 8 lesion pixels of 16
  confident = jnp.where(masks > 0, 20.0, -20.0)
  np.testing.assert_allclose(losses.soft_jaccard_loss(confident, masks), 0.0, atol=1e-6)
  half = jnp.zeros((2, 4, 4, 1))  # p = 0.5 everywhere: inter 4, union 8 + 8 - 4 = 12
  np.testing.assert_allclose(losses.soft_jaccard_loss(half, masks), 1 - (4 + 1) / (12 + 1), rtol=1e-6)
  both = losses.segmentation_loss_per_example(half, masks, "bce_jaccard")
  np.testing.assert_allclose(both, np.log(2) + 1 - 5 / 13, rtol=1e-5)


def test_lovasz_hinge_hand_case():
  # gt [1, 0], logits [0.5, 0.5]: hinge errors [0.5, 1.5]; sorted, the Jaccard steps are [0.5, 0.5].
  logits = jnp.array([0.5, 0.5]).reshape(1, 1, 2, 1)
  masks = jnp.array([1.0, 0.0]).reshape(1, 1, 2, 1)
  np.testing.assert_allclose(losses.lovasz_hinge_loss(logits, masks), [1.0], rtol=1e-6)
  np.testing.assert_allclose(losses.lovasz_hinge_loss(jnp.zeros((1, 4, 4, 1)), jnp.ones((1, 4, 4, 1))), [1.0])
  sure = jnp.where(masks > 0, 3.0, -3.0)  # every margin beyond 1: no loss, no gradient
  np.testing.assert_allclose(losses.lovasz_hinge_loss(sure, masks), [0.0], atol=1e-7)
  grad = jax.grad(lambda x: losses.lovasz_hinge_loss(x, masks).sum())(logits)
  assert grad.reshape(-1)[0] < 0 < grad.reshape(-1)[1]  # raise the lesion's logit, lower the skin's
  both = losses.segmentation_loss_per_example(logits, masks, "bce_lovasz")
  bce = float(np.mean(np.log1p(np.exp(-0.5 * np.array([1.0, -1.0])))))  # log(1 + e^{-z s}), s = 2 gt - 1
  np.testing.assert_allclose(both, [bce + 1.0], rtol=1e-5)


@pytest.fixture(scope="module")
def unet_state():
  import optax  # pylint: disable=g-import-not-at-top
  from lesion_jax.models.unet import UNet  # pylint: disable=g-import-not-at-top
  from lesion_jax.train.state import create_train_state  # pylint: disable=g-import-not-at-top
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  return create_train_state(UNet(features=4, levels=2, norm="batch"), optax.sgd(0.1), jax.random.key(0),
                            images[:1]), images


def test_multiscale_flip_tta_is_equivariant_and_averages_scales(unet_state):
  from lesion_jax.train import steps  # pylint: disable=g-import-not-at-top
  state, images = unet_state
  tta = jax.jit(lambda st, x: steps.make_segmentation_tta_predict_step((32, 48))(st, {"image": x}))
  flip_only = jax.jit(lambda st, x: steps.make_segmentation_tta_predict_step(())(st, {"image": x}))
  mirrored = jnp.flip(images, 2)
  out = tta(state, images)
  assert out.shape == (2, 32, 32)
  np.testing.assert_allclose(tta(state, mirrored), jnp.flip(out, 2), atol=1e-5)
  np.testing.assert_allclose(flip_only(state, images),
                             steps.segmentation_predict_step_flip_tta(state, {"image": images}), atol=1e-6)
  assert float(jnp.abs(out - flip_only(state, images)).max()) > 1e-4  # the 48 px pass changed it


def test_seed_ensemble_averages_the_members_maps_in_one_program(unet_state):
  import optax  # pylint: disable=g-import-not-at-top
  from lesion_jax.models.unet import UNet  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.maskrcnn import task as maskrcnn  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  from lesion_jax.train import sharding, steps  # pylint: disable=g-import-not-at-top
  from lesion_jax.train.state import create_train_state  # pylint: disable=g-import-not-at-top
  state, images = unet_state
  other = create_train_state(UNet(features=4, levels=2, norm="batch"), optax.sgd(0.1), jax.random.key(1),
                             images[:1])
  mesh = sharding.make_mesh(1)
  task = segmentation.SegmentationTask(segmentation.SegmenterConfig())
  batch = {"image": images}
  ensemble = task.jit_predict((state, other), mesh, "predict", ensemble=True)((state, other), batch)
  alone = [np.asarray(steps.segmentation_predict_step(s, batch)) for s in (state, other)]
  assert float(np.abs(alone[0] - alone[1]).max()) > 1e-3  # the members differ, so the mean shows
  np.testing.assert_allclose(ensemble, (alone[0] + alone[1]) / 2, atol=1e-6)
  with pytest.raises(ValueError, match="cannot be averaged"):
    maskrcnn.MaskRCNNTask(maskrcnn.MaskRCNNConfig()).jit_predict((state, other), mesh, ensemble=True)


# --- classifier levers ---------------------------------------------------------------------------

def test_copy_matching_keeps_a_head_of_another_shape_fresh():
  from lesion_jax import pretrained  # pylint: disable=g-import-not-at-top
  source = {"params": {"conv": {"kernel": np.ones((3, 3, 3, 4))}, "head": {"kernel": np.ones((4, 7))}},
            "batch_stats": {"bn": {"mean": np.full((4,), 2.0)}}}
  target = {"params": {"conv": {"kernel": np.zeros((3, 3, 3, 4), np.float32)}, "head": {"kernel": np.zeros((4, 2))}},
            "batch_stats": {"bn": {"mean": np.zeros((4,), np.float32)}}}
  tree, report = pretrained.copy_matching(source, target)
  np.testing.assert_array_equal(tree["params"]["conv"]["kernel"], 1.0)
  assert tree["params"]["conv"]["kernel"].dtype == np.float32  # the model's dtype, not the source's
  np.testing.assert_array_equal(tree["batch_stats"]["bn"]["mean"], 2.0)
  np.testing.assert_array_equal(tree["params"]["head"]["kernel"], 0.0)
  assert report == {"copied": 2, "fresh": ["params/head/kernel"]}
  with pytest.raises(ValueError, match="no parameter"):
    pretrained.copy_matching({"params": {"other": np.ones(3)}}, target)


def test_abcd_features_are_scale_free_and_flag_an_empty_mask():
  from lesion_jax.eval import abcd, measure  # pylint: disable=g-import-not-at-top
  image = np.full((100, 160, 3), (200, 160, 150), np.uint8)
  mask = np.zeros((100, 160), bool)
  mask[30:60, 50:110] = True  # a 30 x 60 rectangle: axis ratio 1/2
  image[mask] = (60, 40, 30)
  small = measure.measure_lesion(mask, image)
  big = measure.measure_lesion(np.kron(mask, np.ones((2, 2), bool)), np.kron(image, np.ones((2, 2, 1), np.uint8)))
  f_small, f_big = abcd.abcd_features(small), abcd.abcd_features(big)
  assert f_small.shape == (len(abcd.FEATURE_NAMES),)
  names = list(abcd.FEATURE_NAMES)
  np.testing.assert_allclose(f_small[names.index("area_fraction")], 30 * 60 / (100 * 160), rtol=1e-6)
  np.testing.assert_allclose(f_small[names.index("axis_ratio")], 0.5, atol=0.02)
  np.testing.assert_allclose(f_small, f_big, rtol=0.05, atol=0.01)  # twice the resolution, the same lesion
  empty = abcd.abcd_features(measure.measure_lesion(np.zeros((10, 10), bool), np.zeros((10, 10, 3), np.uint8)))
  assert empty[names.index("no_lesion")] == 1.0 and not empty[:-1].any()


def test_abcd_selection_uses_the_train_split_only_and_is_deterministic():
  from lesion_jax.eval import abcd  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = np.array([0] * 40 + [1] * 20)
  features = rng.normal(size=(60, len(abcd.FEATURE_NAMES)))
  features[:, 3] += 1.5 * labels  # asymmetry separates the classes
  model, report = abcd.select_and_fit(features, labels, "auto", folds=5, seed=0)
  assert set(report["cv_roc_auc"]) == set(abcd.candidates())
  assert report["chosen"] == max(report["cv_roc_auc"], key=report["cv_roc_auc"].get)
  assert report["cv_roc_auc"][report["chosen"]] > 0.75 and report["cv_probs"].shape == (60, 2)
  _, again = abcd.select_and_fit(features, labels, "auto", folds=5, seed=0)
  np.testing.assert_array_equal(report["cv_probs"], again["cv_probs"])
  assert model.predict_proba(features[:3]).shape == (3, 2)
  with pytest.raises(ValueError, match="at least 5 examples of every class"):
    abcd.select_and_fit(features[:44], labels[:44], "auto", folds=5)
  with pytest.raises(ValueError, match="choose auto"):
    abcd.select_and_fit(features, labels, "svm")


def test_average_predictions_joins_members_by_id():
  from lesion_jax.eval import inference  # pylint: disable=g-import-not-at-top
  a = {"ids": ["x", "y", "z"], "labels": [0, 1, 1], "probs": [[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]}
  b = {"ids": ["y", "x"], "labels": [1, 0], "probs": [[0.2, 0.8], [0.7, 0.3]]}
  ensemble, dropped = inference.average_predictions({"a": a, "b": b})
  assert ensemble["ids"] == ["x", "y"] and ensemble["labels"] == [0, 1] and dropped == ["z"]
  np.testing.assert_allclose(ensemble["probs"], [[0.8, 0.2], [0.3, 0.7]])
  with pytest.raises(ValueError, match="disagree on its label"):
    inference.average_predictions({"a": a, "b": {**b, "labels": [0, 0]}})


def _members(rng, labels, ids, informative_scale):
  """Three-class predictions: one member whose probabilities follow the labels, one of pure noise."""
  onehot = np.eye(3)[labels]
  good = np.exp(informative_scale * onehot + rng.normal(0, 1.0, onehot.shape))
  noise = np.exp(rng.normal(0, 3.0, onehot.shape))
  as_saved = lambda p: {"ids": ids, "labels": labels.tolist(), "probs": (p / p.sum(1, keepdims=True)).tolist()}
  return {"good": as_saved(good), "noise": as_saved(noise)}


def test_a_learned_stack_outweighs_a_noise_member_and_scores_its_own_split_out_of_fold():
  """The stack learns to ignore a member of pure noise that the average cannot; on the images it was
  fitted on, its probabilities come from folds that did not see them."""
  from lesion_jax.eval import inference  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  fit_labels, test_labels = rng.integers(0, 3, 150), rng.integers(0, 3, 150)
  fit = _members(rng, fit_labels, [f"s{i}" for i in range(150)], 1.5)
  test = _members(rng, test_labels, [f"v{i}" for i in range(150)], 1.5)
  stacked, dropped, out_of_fold = inference.stack_predictions(fit, test)
  averaged, _ = inference.average_predictions(test)
  assert not out_of_fold and not dropped and stacked["ids"] == test["good"]["ids"]
  np.testing.assert_allclose(np.sum(stacked["probs"], axis=1), 1.0, atol=1e-9)
  score = lambda p: metrics.classification_scores(np.asarray(p["labels"]), np.asarray(p["probs"]))["roc_auc"]
  assert score(stacked) > score(averaged) + 0.05
  own, _, own_out_of_fold = inference.stack_predictions(fit, fit)
  assert own_out_of_fold
  # Out of fold is not the fit on all images scored on them: that one is optimistic, this one not.
  in_sample, _, _ = inference.stack_predictions(fit, {k: {**v, "ids": [f"o{i}" for i in range(150)]}
                                                      for k, v in fit.items()})
  assert score(own) < score(in_sample)
  with pytest.raises(ValueError, match="not the scored ones"):
    inference.stack_predictions({"good": fit["good"]}, test)
  # Scored images that are partly the fitting ones would be scored partly in-sample: refused.
  part = {k: {key: v[key][:100] for key in ("ids", "labels", "probs")} for k, v in fit.items()}
  with pytest.raises(ValueError, match="also fitted on"):
    inference.stack_predictions(fit, part)
