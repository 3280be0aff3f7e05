"""Dermoscopic structure masks (`feature_masks`) and the negative network / streaks option of the
synthetic renderer, and the `synthetic_lesions/features_tiny` builder config."""
import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import lesion_jax.data.builders  # pylint: disable=unused-import  # registers the builders
from lesion_jax.data import synthetic
from lesion_jax.data.builders import synthetic_lesions

PN, NN, ST, CYST, GLOB = range(5)
_KEYS = ("image", "mask", "hair_mask", "occlusion_mask")
_NEW_CUES = ("negative_network", "streaks", "streaks_regular", "num_streaks")


def _on(size: int, **kwargs) -> synthetic.RenderConfig:
  return synthetic.RenderConfig(image_size=size, dermoscopic_features=True, **kwargs)


def _present(ex) -> np.ndarray:
  """Which of the five structures an example's feature masks contain, bool (5,)."""
  return ex["feature_masks"].reshape(-1, len(synthetic.FEATURE_NAMES)).any(0)


def test_feature_names_order():
  assert synthetic.FEATURE_NAMES == (
      "pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("features", [False, True])
def test_feature_masks_shape_dtype_values_and_inside_the_lesion(size, features):
  config = synthetic.RenderConfig(image_size=size, dermoscopic_features=features)
  for seed in range(12):
    ex = synthetic.render_example(seed, config)
    fm = ex["feature_masks"]
    assert fm.shape == (size, size, 5) and fm.dtype == np.uint8
    assert set(np.unique(fm)) <= {0, 1}
    outside = fm.astype(bool) & (ex["mask"] == 0)[..., None]
    assert not outside.any(), (seed, np.flatnonzero(outside.any((0, 1))))


def test_option_off_draws_no_negative_network_or_streaks():
  for seed in range(40):
    ex = synthetic.render_example(seed, synthetic.RenderConfig(image_size=32))
    assert not ex["feature_masks"][..., [NN, ST]].any(), seed
    assert not set(_NEW_CUES) & set(ex["cues"]), seed


def test_each_feature_appears_in_some_seeds_and_not_others():
  present = np.stack([_present(synthetic.render_example(s, _on(32))) for s in range(120)])
  counts = present.sum(0)
  assert (counts > 0).all() and (counts < len(present)).all(), dict(
      zip(synthetic.FEATURE_NAMES, counts))


def test_feature_masks_follow_the_cues():
  for seed in range(60):
    ex = synthetic.render_example(seed, _on(64))
    c, has = ex["cues"], _present(ex)
    assert has[NN] == bool(c["negative_network"]), seed
    assert has[ST] == bool(c["streaks"]) == (c["num_streaks"] > 0), seed
    assert has[CYST] == bool(c["cysts"]), seed
    # A negative network can hide all of a pigment network; brown/black dot zones are globules.
    assert not has[PN] or c["network"] > 0, seed
    assert has[PN] or not c["network"] or c["negative_network"], seed
    assert has[GLOB] or not c["globules"], seed


def test_streaks_reach_beyond_the_lesion_body():
  # Streaks are radial projections at the periphery: they cross the border (and the mask then
  # includes them) rather than sitting in the lesion centre.
  seen = 0
  for seed in range(80):
    on = synthetic.render_example(seed, _on(64, vignette_probability=0.0))
    if not on["cues"]["streaks"]:
      continue
    off = synthetic.render_example(seed, synthetic.RenderConfig(image_size=64,
                                                                vignette_probability=0.0))
    grown = (on["mask"] > 0) & (off["mask"] == 0)
    assert grown.any(), seed
    assert not (grown & (on["feature_masks"][..., ST] == 0)).any(), seed
    streak = on["feature_masks"][..., ST] > 0
    body = off["mask"] > 0
    inner = cv2.erode(body.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert (streak & ~inner).sum() > (streak & inner).sum(), seed  # mostly at the periphery
    seen += 1
  assert seen >= 3


def test_melanoma_shows_negative_network_and_streaks_more_often_than_nevus():
  examples = [synthetic.render_example(1000 + s, _on(32)) for s in range(240)]
  labels = np.array([ex["label"] for ex in examples])
  present = np.stack([_present(ex) for ex in examples])
  nev, mel = labels == 0, labels == 1
  assert nev.sum() >= 100 and mel.sum() >= 25
  for channel in (NN, ST):
    rate_mel, rate_nev = present[mel, channel].mean(), present[nev, channel].mean()
    assert rate_mel > rate_nev + 0.12, (synthetic.FEATURE_NAMES[channel], rate_mel, rate_nev)
    # ...but overlapping: some nevi have them, most melanomas do not.
    assert 0 < rate_nev and rate_mel < 0.6, (synthetic.FEATURE_NAMES[channel], rate_mel, rate_nev)


def test_option_off_is_the_default_rendering():
  # Off is the default: an explicit `dermoscopic_features=False` renders what a fresh default
  # RenderConfig renders (images, masks, labels, cues: everything).
  for size in (32, 64):
    for seed in range(6):
      a = synthetic.render_example(seed, synthetic.RenderConfig(image_size=size))
      b = synthetic.render_example(seed, synthetic.RenderConfig(image_size=size,
                                                                dermoscopic_features=False))
      for key in _KEYS + ("feature_masks",):
        assert a[key].tobytes() == b[key].tobytes(), (size, seed, key)
      assert a["label"] == b["label"] and a["cues"] == b["cues"]


@pytest.mark.parametrize("size", [32, 64])
def test_option_on_leaves_the_existing_structures_and_streams_alone(size):
  # The new structures draw from streams of their own: the option changes nothing else. A lesion
  # without them renders identically; one with them keeps its label, cues, occluders and the
  # other structures, and only pixels on or right next to the lesion change.
  unchanged = changed = 0
  for seed in range(60):
    off = synthetic.render_example(seed, synthetic.RenderConfig(image_size=size))
    on = synthetic.render_example(seed, _on(size))
    assert on["label"] == off["label"] and on["malignant"] == off["malignant"]
    assert {k: v for k, v in on["cues"].items() if k not in _NEW_CUES} == off["cues"]
    for key in ("hair_mask", "occlusion_mask"):
      assert np.array_equal(on[key], off[key]), (seed, key)
    for channel in (CYST, GLOB):  # the same dots (a streak can add lesion pixels next to them)
      on_dots = on["feature_masks"][..., channel] * (off["mask"] > 0)
      assert np.array_equal(on_dots, off["feature_masks"][..., channel]), (seed, channel)
    if not on["cues"]["negative_network"] and not on["cues"]["streaks"]:
      for key in _KEYS + ("feature_masks",):
        assert on[key].tobytes() == off[key].tobytes(), (seed, key)
      unchanged += 1
      continue
    changed += 1
    pn_on, pn_off = on["feature_masks"][..., PN] > 0, off["feature_masks"][..., PN] > 0
    assert not (pn_on & ~pn_off).any(), seed  # only hidden by a negative network, never added
    mask_on, mask_off = on["mask"] > 0, off["mask"] > 0
    assert not (mask_off & ~mask_on).any(), seed
    if not on["cues"]["streaks"]:
      assert np.array_equal(mask_on, mask_off), seed
    far = cv2.distanceTransform((~mask_on).astype(np.uint8), cv2.DIST_L2, 5) > 0.1 * size + 1
    assert np.array_equal(on["image"][far], off["image"][far]), seed
  assert unchanged >= 30 and changed >= 3


def test_same_seed_same_features_and_scene_at_every_size():
  for seed in (3, 15, 27):
    a, b = (synthetic.render_example(seed, _on(64)) for _ in range(2))
    for key in _KEYS + ("feature_masks",):
      assert a[key].tobytes() == b[key].tobytes()
    # Geometry is in image-relative units: the same structures at another size.
    big = synthetic.render_example(seed, _on(128))
    assert big["cues"] == a["cues"]
    assert np.array_equal(_present(big)[[NN, ST, CYST]], _present(a)[[NN, ST, CYST]])


# ------------------------------------------------------------------------------------------------
# TFDS builder.


@pytest.fixture(scope="module")
def features_data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds_features")
  tfds.builder("synthetic_lesions/features_tiny", data_dir=path).download_and_prepare()
  return path


def test_feature_configs_are_declared():
  configs = {c.name: c for c in synthetic_lesions.SyntheticLesions.BUILDER_CONFIGS}
  for name, size in (("features64", 64), ("features128", 128), ("features_tiny", 32)):
    assert configs[name].dermoscopic_features and configs[name].image_size == size
  assert (configs["features_tiny"].num_train, configs["features_tiny"].num_validation,
          configs["features_tiny"].num_test) == (64, 16, 16)
  for name in ("s64", "s128", "s256", "tiny"):
    assert not configs[name].dermoscopic_features


def test_features_tiny_builder_has_feature_masks(features_data_dir):
  builder = tfds.builder("synthetic_lesions/features_tiny", data_dir=features_data_dir)
  feature = builder.info.features["feature_masks"]
  assert feature.shape == (32, 32, 5) and feature.dtype == np.uint8
  assert builder.info.splits["train"].num_examples == 64
  present = []
  for split in ("train", "validation", "test"):
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
      fm = ex["feature_masks"]
      assert fm.shape == (32, 32, 5) and fm.dtype == np.uint8 and set(np.unique(fm)) <= {0, 1}
      assert not (fm.astype(bool) & (ex["mask"] == 0)).any()
      present.append(fm.reshape(-1, 5).any(0))
  assert np.stack(present).any(0).all()  # every structure occurs somewhere in the dataset


def test_features_tiny_builder_matches_the_renderer(features_data_dir):
  ds = tfds.load("synthetic_lesions/features_tiny", split="validation",
                 data_dir=features_data_dir, download=False)
  stored = {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}
  for index in (0, 7):
    fresh = synthetic_lesions.make_example(32, 0, "validation", index, dermoscopic_features=True)
    ex = stored[fresh["id"]]
    for key in _KEYS + ("feature_masks",):
      np.testing.assert_array_equal(ex[key], fresh[key])
    assert ex["label"] == fresh["label"]
  # Without the option, make_example gives what the existing configs store.
  assert "feature_masks" not in synthetic_lesions.make_example(32, 0, "validation", 0)
