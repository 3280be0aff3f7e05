"""Tests for the synthetic dermoscopy renderer and the `synthetic_lesions` TFDS builder."""

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import lesion_jax.data.builders  # pylint: disable=unused-import  # registers the builders
from lesion_jax.data import synthetic
from lesion_jax.data.builders import synthetic_lesions

_OCCLUDERS = ("hair", "ruler", "bubble", "sticker")


def _config(size: int = 32, on: tuple[str, ...] = (), vignette: float = 0.7,
            **kwargs) -> synthetic.RenderConfig:
  """Config with exactly the occluders in `on` forced on and the others off."""
  probs = {f"{name}_probability": float(name in on) for name in _OCCLUDERS}
  return synthetic.RenderConfig(image_size=size, vignette_probability=vignette, **probs, **kwargs)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_dtypes_and_values(size):
  for seed in range(4):
    ex = synthetic.render_example(seed, synthetic.RenderConfig(image_size=size))
    assert ex["image"].shape == (size, size, 3) and ex["image"].dtype == np.uint8
    for key in ("mask", "hair_mask", "occlusion_mask"):
      assert ex[key].shape == (size, size) and ex[key].dtype == np.uint8
      assert set(np.unique(ex[key])) <= {0, 255}
    assert isinstance(ex["label"], int) and 0 <= ex["label"] < len(synthetic.DIAGNOSES)
    assert ex["malignant"] == int(synthetic.MALIGNANT[synthetic.DIAGNOSES[ex["label"]]])
    assert all(isinstance(v, float) for v in ex["cues"].values())
    for cue in ("asymmetry", "border_irregularity", "num_colours", "diameter"):
      assert cue in ex["cues"]


def test_same_seed_is_identical_and_different_seeds_differ():
  config = synthetic.RenderConfig(image_size=64)
  a, b, c = (synthetic.render_example(s, config) for s in (7, 7, 8))
  for key in ("image", "mask", "hair_mask", "occlusion_mask"):
    assert a[key].tobytes() == b[key].tobytes()
  assert a["cues"] == b["cues"] and a["label"] == b["label"]
  assert not np.array_equal(a["image"], c["image"])
  assert not np.array_equal(a["mask"], c["mask"])


@pytest.mark.parametrize("size", [48, 100, 512])
def test_other_sizes_render(size):
  ex = synthetic.render_example(3, _config(size, on=_OCCLUDERS))
  assert ex["image"].shape == (size, size, 3)
  assert ex["mask"].any() and ex["hair_mask"].any()


def test_lesion_mask_is_a_central_blob():
  for seed in range(40):
    ex = synthetic.render_example(seed, synthetic.RenderConfig(image_size=32))
    mask = ex["mask"] > 0
    assert 0.01 < mask.mean() < 0.6, seed
    assert mask[8:24, 8:24].any(), seed  # roughly central


def test_each_occluder_gets_masked_when_forced_on():
  for size in (32, 64):
    for seed in range(3):
      for name in _OCCLUDERS:
        ex = synthetic.render_example(seed, _config(size, on=(name,)))
        assert ex["occlusion_mask"].any(), (size, seed, name)
        assert ex["hair_mask"].any() == (name == "hair"), (size, seed, name)


def test_hair_mask_is_inside_occlusion_mask():
  for seed in range(10):
    ex = synthetic.render_example(seed, _config(64, on=_OCCLUDERS))
    hair, occ = ex["hair_mask"] > 0, ex["occlusion_mask"] > 0
    assert hair.any() and not (hair & ~occ).any()
    assert (occ & ~hair).any()  # ruler, bubbles and sticker are there too


def test_no_occlusions_when_all_probabilities_are_zero():
  for seed in range(10):
    ex = synthetic.render_example(seed, _config(64))
    assert not ex["occlusion_mask"].any() and not ex["hair_mask"].any()


def test_hair_changes_only_hair_pixels():
  # Each part of the scene has its own random stream: adding hair leaves the lesion and skin alone.
  for seed in range(5):
    clean = synthetic.render_example(seed, _config(64, vignette=0.0))
    hairy = synthetic.render_example(seed, _config(64, on=("hair",), vignette=0.0))
    assert np.array_equal(clean["mask"], hairy["mask"])
    assert clean["cues"]["diameter"] == hairy["cues"]["diameter"]
    near_hair = cv2.dilate(hairy["hair_mask"], np.ones((3, 3), np.uint8)) > 0
    assert np.array_equal(clean["image"][~near_hair], hairy["image"][~near_hair])
    assert not np.array_equal(clean["image"][near_hair], hairy["image"][near_hair])


def test_image_clean_is_the_scene_rendered_without_occluders():
  # The exact ground truth of occlusion removal: the same seed with every occluder off.
  for seed in range(4):
    occluded = synthetic.render_example(seed, _config(48, on=_OCCLUDERS))
    bare = synthetic.render_example(seed, _config(48))
    assert occluded["occlusion_mask"].any()
    np.testing.assert_array_equal(occluded["image_clean"], bare["image"])
    np.testing.assert_array_equal(bare["image_clean"], bare["image"])
    assert not np.array_equal(occluded["image"], occluded["image_clean"])


def test_occlusions_can_follow_the_diagnosis():
  shortcut = synthetic_lesions.render_config(32, "train", shortcut=True)
  seeds = range(300)
  for name, by_label in (("hair", synthetic_lesions.SHORTCUT_HAIR),
                         ("ruler", synthetic_lesions.SHORTCUT_RULER)):
    assert getattr(shortcut, f"{name}_probability_by_label") == by_label
  rows = [synthetic.render_example(s, shortcut) for s in seeds]
  hairy = {k: np.mean([r["cues"]["num_hairs"] > 0 for r in rows if r["malignant"] == k]) for k in (0, 1)}
  assert hairy[1] > 0.85 and hairy[0] < 0.45, hairy
  # The test split of a shortcut config renders as the plain configs do.
  assert synthetic_lesions.render_config(32, "test", shortcut=True) == synthetic_lesions.render_config(32, "test")


def test_forced_label():
  for label in range(3):
    ex = synthetic.render_example(0, synthetic.RenderConfig(image_size=32, label=label))
    assert ex["label"] == label


def test_class_conditional_cues_differ_in_the_intended_direction():
  config = _config(32)
  examples = [synthetic.render_example(1000 + s, config) for s in range(240)]
  labels = np.array([ex["label"] for ex in examples])
  counts = np.bincount(labels, minlength=3)
  assert 0.45 < counts[0] / len(labels) < 0.75 and counts[1] >= 25 and counts[2] >= 25

  def mean(cue, label):
    return np.mean([ex["cues"][cue] for ex in examples if ex["label"] == label])

  nev, mel, sk = 0, 1, 2
  assert mean("num_colours", mel) > mean("num_colours", nev) + 0.7
  assert mean("diameter", mel) > mean("diameter", nev) + 0.05
  assert mean("asymmetry", mel) > mean("asymmetry", nev) + 0.15
  assert mean("border_irregularity", mel) > mean("border_irregularity", nev) + 0.15
  assert mean("has_blue_grey", mel) > mean("has_blue_grey", nev) + 0.2
  assert mean("has_black", mel) > mean("has_black", nev) + 0.2
  assert mean("cysts", sk) > mean("cysts", nev) + 0.4
  assert mean("border_blur", sk) < mean("border_blur", nev) - 0.5
  # The rendered masks follow the cues: melanomas are bigger than nevi in pixels too.
  area = lambda label: np.mean([(ex["mask"] > 0).mean() for ex in examples if ex["label"] == label])
  assert area(mel) > 1.3 * area(nev)
  # ...but with overlap: some nevi look worse than the average melanoma.
  nevus_colours = [ex["cues"]["num_colours"] for ex in examples if ex["label"] == nev]
  assert max(nevus_colours) >= mean("num_colours", mel)


# ------------------------------------------------------------------------------------------------
# TFDS builder.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  tfds.builder("synthetic_lesions/tiny", data_dir=path).download_and_prepare()
  return path


def test_tiny_builder_splits(data_dir):
  expected = {"train": 64, "validation": 16, "test": 16}
  ids = []
  for split, count in expected.items():
    ds = tfds.load("synthetic_lesions/tiny", split=split, data_dir=data_dir, download=False)
    examples = list(tfds.as_numpy(ds))
    assert len(examples) == count
    for ex in examples:
      assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
      for key in ("mask", "hair_mask", "occlusion_mask"):
        assert ex[key].shape == (32, 32, 1) and set(np.unique(ex[key])) <= {0, 255}
      assert 0 <= ex["label"] < 3 and ex["malignant"] == int(ex["label"] == 1)
      assert ex["id"].decode().startswith(f"synth_{split}_")
      ids.append(ex["id"].decode())
  assert len(set(ids)) == len(ids) == sum(expected.values())


def test_tiny_builder_matches_the_renderer(data_dir):
  # Stored examples can be regenerated from (config seed, split, index) without TFDS.
  ds = tfds.load("synthetic_lesions/tiny", split="validation", data_dir=data_dir, download=False)
  stored = {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}
  fresh = synthetic_lesions.make_example(32, 0, "validation", 5)
  ex = stored[fresh["id"]]
  for key in ("image", "image_clean", "mask", "hair_mask", "occlusion_mask"):
    np.testing.assert_array_equal(ex[key], fresh[key])
  assert ex["label"] == fresh["label"]


def test_builder_info(data_dir):
  builder = tfds.builder("synthetic_lesions", data_dir=data_dir)
  assert builder.builder_config.name == "s64"  # the default
  assert builder.info.features["label"].names == list(synthetic.DIAGNOSES)
  assert builder.info.features["malignant"].names == ["benign", "malignant"]
  assert [c.name for c in synthetic_lesions.SyntheticLesions.BUILDER_CONFIGS] == [
      "s64", "s128", "s256", "tiny", "features64", "features128", "features_tiny", "shortcut128",
      "shortcut_tiny", "imbalanced2017", "imbalanced_tiny", "ham7", "ham7_tiny"]
  assert "feature_masks" not in builder.info.features  # only the features* configs have it


def test_custom_config_object(data_dir):
  config = synthetic_lesions.SyntheticLesionsConfig(
      name="custom", image_size=40, num_train=3, num_validation=2, num_test=2, seed=5)
  builder = tfds.builder("synthetic_lesions", config=config, data_dir=data_dir)
  builder.download_and_prepare()
  assert "custom" in str(builder.data_dir)
  assert builder.info.splits["train"].num_examples == 3
  ex = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
  assert ex["image"].shape == (40, 40, 3) and ex["mask"].shape == (40, 40, 1)
  fresh = synthetic_lesions.make_example(40, 5, "test", int(ex["id"].decode()[-6:]))
  np.testing.assert_array_equal(ex["image"], fresh["image"])


def test_example_seeds_never_collide_across_splits():
  seeds = {synthetic_lesions.example_seed(s, split, i)
           for s in range(3) for split in ("train", "validation", "test") for i in range(50)}
  assert len(seeds) == 3 * 3 * 50


# ------------------------------------------------------------------------------------------------
# Class sets: the 7 HAM10000 classes, and the imbalanced builder configs.

HAM = synthetic.DIAGNOSES_HAM10000
AKIEC, BCC, BKL, DF, MEL, NV, VASC = range(7)
# The appearance class (cue model) of each diagnosis' typical examples.
_OWN_LOOK = {NV: 0, MEL: 1, BKL: 2, VASC: 3, BCC: 4, DF: 5, AKIEC: 6}


def _ham_config(size, label, **kwargs):
  return _config(size, vignette=0.0, class_set="ham10000", label=label, **kwargs)


def test_default_class_set_draws_none_of_the_new_structures():
  # The 3-class configs render as before the 7-class set was added (checked byte for byte
  # against the previous renderer when it was added; a stored hash would also change with
  # OpenCV's CPU-specific rounding, so it is not kept as a test): no new cue or stream is used.
  configs = [synthetic.RenderConfig(image_size=32),
             synthetic.RenderConfig(image_size=64, dermoscopic_features=True),
             synthetic.RenderConfig(image_size=32, hair_probability_by_label=(0.3, 0.95, 0.3),
                                    ruler_probability_by_label=(0.05, 0.6, 0.05))]
  for config in configs:
    for seed in range(3):
      ex = synthetic.render_example(seed, config)
      assert ex["label"] in (0, 1, 2) and 0 <= ex["cues"]["appearance"] <= 2
      assert not set(synthetic.STRUCTURE_NAMES) & set(ex["cues"])  # only with class_set=ham10000


def test_class_sets_names_and_malignant():
  assert synthetic.class_names() == synthetic.class_names("isic2017") == synthetic.DIAGNOSES
  assert synthetic.class_names("ham10000") == HAM == (
      "actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
      "melanoma", "nevus", "vascular_lesion")
  assert synthetic.HAM10000_CODES == tuple(sorted(synthetic.HAM10000_CODES))  # alphabetical
  assert {n for n, m in synthetic.malignant_map("ham10000").items() if m} == {
      "melanoma", "basal_cell_carcinoma", "actinic_keratosis"}
  assert synthetic.malignant_map("isic2017") == synthetic.MALIGNANT
  assert sum(synthetic.HAM10000_COUNTS) == 10015
  with pytest.raises(ValueError, match="class_set"):
    synthetic.class_names("isic2019")
  with pytest.raises(ValueError, match="class_priors needs 7"):  # the default has 3
    synthetic.render_example(0, synthetic.RenderConfig(image_size=32, class_set="ham10000"))
  with pytest.raises(ValueError, match="label must index"):
    synthetic.render_example(0, synthetic.RenderConfig(image_size=32, label=3))
  with pytest.raises(ValueError, match="hair_probability_by_label needs 7"):
    synthetic.render_example(0, _ham_config(32, 0, hair_probability_by_label=(0.1, 0.2, 0.3)))
  # Sampled labels follow the priors' class set.
  config = synthetic.RenderConfig(image_size=32, class_set="ham10000",
                                  class_priors=synthetic.HAM10000_PRIORS)
  for seed in range(3):
    ex = synthetic.render_example(seed, config)
    assert 0 <= ex["label"] < 7
    assert ex["malignant"] == int(synthetic.MALIGNANT_HAM10000[HAM[ex["label"]]])


@pytest.mark.parametrize("size", [32, 64])
def test_ham10000_classes_render_deterministically(size):
  for label in range(7):
    config = synthetic.RenderConfig(image_size=size, class_set="ham10000", label=label)
    a, b = (synthetic.render_example(40 + label, config) for _ in range(2))
    for key in ("image", "image_clean", "mask", "hair_mask", "occlusion_mask", "feature_masks"):
      assert a[key].tobytes() == b[key].tobytes(), (HAM[label], key)
    assert a["cues"] == b["cues"] and a["label"] == label
    assert a["image"].shape == (size, size, 3) and a["mask"].any()
    assert set(synthetic.STRUCTURE_NAMES) <= set(a["cues"])
    assert a["malignant"] == int(label in (AKIEC, BCC, MEL))


def test_ham10000_look_alikes_overlap():
  # Cues come from the diagnosis' own appearance class mostly, from look-alikes sometimes.
  config = synthetic.RenderConfig(class_set="ham10000")
  for label in range(7):
    rng = np.random.default_rng(label)
    sample = synthetic._sample_cues  # pylint: disable=protected-access
    looks = np.array([sample(rng, label, config)["appearance"] for _ in range(200)])
    assert 0.75 < np.mean(looks == _OWN_LOOK[label]) < 0.97, HAM[label]


def _lesion_stats(ex):
  """Lab statistics inside the lesion mask of an (occluder-free) image."""
  mask = ex["mask"] > 0
  lab = cv2.cvtColor(ex["image"], cv2.COLOR_RGB2LAB).astype(np.float32)
  lum, red = lab[..., 0], lab[..., 1] - 128.0
  dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
  centre, rim = dist >= 0.6 * dist.max(), mask & (dist <= 0.35 * dist.max())
  spots = lum - cv2.GaussianBlur(lum, (0, 0), 2.0) > 5.0  # small bright dots
  return {"redness": np.median(red[mask]),
          "red_peaks": np.percentile(red[mask], 98) - np.median(red[mask]),
          "centre_minus_rim": lum[centre].mean() - lum[rim].mean(),
          "spots": spots[mask].mean()}


def _own_look_stats(label, num=10):
  """_lesion_stats of the first `num` examples (seeds 500...) whose cues come from the class's
  own appearance model (look-alikes are the test above's business)."""
  stats, seed = [], 500
  while len(stats) < num:
    ex = synthetic.render_example(seed, _ham_config(64, label))
    if ex["cues"]["appearance"] == _OWN_LOOK[label]:
      stats.append(_lesion_stats(ex))
    seed += 1
  return stats


def test_ham10000_signature_cues_are_measurable():
  stats = {label: _own_look_stats(label) for label in (NV, VASC, DF, BCC, AKIEC)}
  mean = lambda label, key: np.mean([r[key] for r in stats[label]])
  # Vascular lesions: red-purple lacunae, far redder than nevi.
  assert mean(VASC, "redness") > mean(NV, "redness") + 5.0
  # Dermatofibromas: central white scar, brighter than their (brown-ringed) rim; nevi the reverse.
  assert mean(DF, "centre_minus_rim") > 4.0
  assert mean(DF, "centre_minus_rim") > mean(NV, "centre_minus_rim") + 10.0
  # Basal cell carcinomas: thin red vessels stand out from the pink lesion.
  assert mean(BCC, "red_peaks") > mean(NV, "red_peaks") + 4.0
  # Actinic keratoses: a pinker lesion interrupted by bright follicular openings.
  assert mean(AKIEC, "spots") > mean(NV, "spots") + 0.08
  assert mean(AKIEC, "redness") > mean(NV, "redness") + 1.5


def test_proportional_counts():
  counts = synthetic_lesions.proportional_counts
  assert counts((1372, 374, 254), 2000) == (1372, 374, 254)
  assert counts((393, 117, 90), 32, 2) == (21, 6, 5)
  assert counts(synthetic.HAM10000_COUNTS, 32, 2) == (2, 2, 4, 2, 4, 16, 2)
  assert counts((1, 1, 1), 10) == (4, 3, 3)
  with pytest.raises(ValueError, match="cannot hold"):
    counts((1, 1, 1), 5, 2)


def test_imbalanced_configs_label_counts():
  # Exact per-split counts of the full-size configs (their labels are computed, not rendered).
  configs = {c.name: c for c in synthetic_lesions.SyntheticLesions.BUILDER_CONFIGS}
  expected = {
      "imbalanced2017": {"train": [1372, 374, 254], "validation": [78, 30, 42],
                         "test": [393, 117, 90]},
      "ham7": {"train": [65, 103, 220, 23, 222, 1339, 28],
               "validation": [10, 15, 33, 5, 33, 199, 5],
               "test": [19, 31, 66, 7, 67, 402, 8]},
  }
  for name, splits in expected.items():
    for split, counts in splits.items():
      labels = synthetic_lesions.split_labels(configs[name], split)
      assert np.bincount(labels, minlength=len(counts)).tolist() == counts, (name, split)
      assert len(set(labels[:40].tolist())) > 1  # shuffled, not sorted
  assert configs["ham7"].image_size == configs["imbalanced2017"].image_size == 64
  assert synthetic_lesions.split_labels(configs["s64"], "train") is None  # sampled as before


_TINY_COUNTS = {
    "imbalanced_tiny": {"train": [66, 18, 12], "validation": [17, 6, 9], "test": [21, 6, 5]},
    "ham7_tiny": {"train": [3, 5, 11, 2, 11, 62, 2], "validation": [2, 2, 4, 2, 4, 16, 2],
                  "test": [2, 2, 4, 2, 4, 16, 2]},
}


@pytest.fixture(scope="module")
def imbalanced_data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds_imbalanced")
  for name in _TINY_COUNTS:
    tfds.builder(f"synthetic_lesions/{name}", data_dir=path).download_and_prepare()
  return path


@pytest.mark.parametrize("name", list(_TINY_COUNTS))
def test_tiny_imbalanced_builders(imbalanced_data_dir, name):
  builder = tfds.builder(f"synthetic_lesions/{name}", data_dir=imbalanced_data_dir)
  class_set = builder.builder_config.class_set
  names = synthetic.class_names(class_set)
  assert builder.info.features["label"].names == list(names)
  assert str(builder.info.version) == "1.2.0"
  malignant = synthetic.malignant_map(class_set)
  for split, counts in _TINY_COUNTS[name].items():
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    labels = np.array([ex["label"] for ex in examples])
    assert np.bincount(labels, minlength=len(names)).tolist() == counts, split
    assert min(counts) >= 2
    for ex in examples:
      assert ex["image"].shape == (32, 32, 3)
      assert ex["malignant"] == int(malignant[names[ex["label"]]])
  # A stored example is the renderer's with the label the split's list gives it.
  stored = {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="test"))}
  index = 3
  label = int(synthetic_lesions.split_labels(builder.builder_config, "test")[index])
  fresh = synthetic_lesions.make_example(32, 0, "test", index, class_set=class_set, label=label)
  for key in ("image", "image_clean", "mask"):
    np.testing.assert_array_equal(stored[fresh["id"]][key], fresh[key])
  assert stored[fresh["id"]]["label"] == label
