"""The dermoscopic-feature builders (isic2017_features, isic2018_features) on tiny fake archives
written here in the official layouts.

Each fake archive is prepared once per module (both configs); the error cases use their own small
copies, and the per-example checks call the builders' `load_example` directly (no preparation).
"""
import inspect
import json
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lesion_jax.data import pipeline
from lesion_jax.data.builders import common
from lesion_jax.data.builders import isic2017_features
from lesion_jax.data.builders import isic2018_features

# ---------------------------------------------------------------------------------------------
# Fake archives.


def _stripes(h, w, n):
  """An image whose columns are cut into n vertical stripes, stripe k a flat colour."""
  colours = np.array([[(40 * k) % 256, 255 - (25 * k) % 256, (90 + 70 * k) % 256]
                      for k in range(n)], np.uint8)
  stripe = np.minimum(np.arange(w) * n // w, n - 1)
  return colours[stripe][None].repeat(h, 0), stripe[None].repeat(h, 0).astype(np.int32)


def _write_image(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])


def _write_superpixels(path, index):
  """The official encoding: index = R + 256 G + 65536 B."""
  rgb = np.stack([index & 255, (index >> 8) & 255, (index >> 16) & 255], -1).astype(np.uint8)
  assert cv2.imwrite(str(path), rgb[..., ::-1])


def _write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def _blocks(h, w, rng, block):
  """Superpixels as a shuffled grid of block x block squares (indices 0..n-1)."""
  grid = np.arange(-(-h // block) * -(-w // block)).reshape(-(-h // block), -(-w // block))
  grid = rng.permutation(grid.size)[grid]
  return np.kron(grid, np.ones((block, block), np.int64))[:h, :w].astype(np.int32)


# id → (height, width, superpixel kind). ISIC_0000001 has 300 superpixels (indices > 255: the G
# channel is used); ISIC_0000003 is 600 px wide, so the 512 config resizes it.
_2017 = {"Training": {"ISIC_0000001": (30, 40, 2), "ISIC_0000002": (40, 30, 10),
                      "ISIC_0000003": (40, 600, "stripes")},
         "Validation": {"ISIC_0000010": (20, 24, 4)}}
_BIG = "ISIC_0000003"


def make_isic2017_features(root):
  """The archive, and id → (superpixel map, (n, 4) labels) of what was written."""
  rng = np.random.default_rng(0)
  truth = {}
  for part, rows in _2017.items():
    data = os.path.join(root, f"ISIC-2017_{part}_Data")
    for i, (h, w, kind) in rows.items():
      if kind == "stripes":
        image, index = _stripes(h, w, 10)
      else:
        index = _blocks(h, w, rng, kind)
        image = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (w, h))
      _write_image(os.path.join(data, f"{i}.jpg"), image)
      _write_superpixels(os.path.join(data, f"{i}_superpixels.png"), index)
      labels = rng.integers(0, 2, (index.max() + 1, 4)).astype(np.uint8)
      labels[:, 0] = np.arange(len(labels)) % 2  # every column has both values
      _write_json(os.path.join(root, f"ISIC-2017_{part}_Part2_GroundTruth", f"{i}_features.json"),
                  {name: labels[:, k].tolist()
                   for k, name in enumerate(isic2017_features.FEATURES)})
      truth[i] = (index, labels)
  # The Part 1 files that share the folder are ignored; Test_v2 Data without Part 2: no test split.
  _write_image(os.path.join(root, "ISIC-2017_Test_v2_Data", "ISIC_0000020.jpg"),
               np.zeros((8, 8, 3), np.uint8))
  return root, truth


_ATTR = isic2018_features.ATTRIBUTES
# id → (height, width); ISIC_0000102 is 600 px wide.
_2018 = {"Training": {"ISIC_0000100": (30, 40), "ISIC_0000101": (40, 30),
                      "ISIC_0000102": (40, 600)},
         "Validation": {"ISIC_0000200": (24, 20)}}
_BIG18 = "ISIC_0000102"


def make_isic2018_features(root):
  """The archive (Training ground truth with the _v3 suffix, Validation's without), and id →
  (H, W, 5) bool masks as written."""
  rng = np.random.default_rng(1)
  truth = {}
  for part, rows in _2018.items():
    suffix = "_v3" if part == "Training" else ""
    image_dir = os.path.join(root, f"ISIC2018_Task1-2_{part}_Input")
    gt = os.path.join(root, f"ISIC2018_Task2_{part}_GroundTruth{suffix}")
    os.makedirs(gt, exist_ok=True)
    for i, (h, w) in rows.items():
      if w > 512:
        image, stripe = _stripes(h, w, 10)
        # Attribute k covers stripes k and k + 5, so masks and colours can be compared.
        masks = np.stack([(stripe % 5) == k for k in range(5)], -1)
      else:
        image = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (w, h))
        masks = np.kron(rng.random((h // 5 + 1, w // 5 + 1, 5)) < 0.4,
                        np.ones((5, 5, 1), bool))[:h, :w]
        masks[..., 4] = False  # an empty mask, as most official ones are
      _write_image(os.path.join(image_dir, f"{i}.jpg"), image)
      for k, name in enumerate(_ATTR):
        assert cv2.imwrite(os.path.join(gt, f"{i}_attribute_{name}.png"),
                           masks[..., k].astype(np.uint8) * 255)
      truth[i] = masks
    with open(os.path.join(gt, "LICENSE.txt"), "w") as f:
      f.write("licence\n")
  return root, truth


# ---------------------------------------------------------------------------------------------
# Preparing and reading.


def prepare(cls, manual_dir, data_dir, config=None, **kwargs):
  builder = cls(data_dir=str(data_dir), config=config, **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def read(builder, split):
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}


def _copy(src, tmp_path):
  dst = tmp_path / "manual"
  shutil.copytree(src, dst)
  return dst


def _stripe_centres(width, n=10):
  """Column of the centre of each of the n stripes at `width` px."""
  return [int((k + 0.5) * width / n) for k in range(n)]


# ---------------------------------------------------------------------------------------------
# isic2017_features.


@pytest.fixture(scope="module")
def isic2017_archive(tmp_path_factory):
  return make_isic2017_features(tmp_path_factory.mktemp("isic2017f_manual"))


@pytest.fixture(scope="module")
def isic2017_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("isic2017f_tfds"))


@pytest.fixture(scope="module")
def isic2017_512(isic2017_archive, isic2017_data_dir):
  return pipeline.get_builder("isic2017_features", isic2017_data_dir, str(isic2017_archive[0]))


@pytest.fixture(scope="module")
def isic2017_full(isic2017_archive, isic2017_data_dir):
  return pipeline.get_builder("isic2017_features/full", isic2017_data_dir,
                              str(isic2017_archive[0]))


def test_isic2017_features_full_equals_what_was_written(isic2017_full, isic2017_archive):
  _, truth = isic2017_archive
  assert set(isic2017_full.info.features) == {"id", "image", "superpixels", "features",
                                              "feature_masks"}
  assert set(isic2017_full.info.splits) == {"train", "validation"}  # no Test_v2 Part 2
  assert isic2017_full.info.metadata["feature_names"] == list(isic2017_features.FEATURES)
  examples = {**read(isic2017_full, "train"), **read(isic2017_full, "validation")}
  assert set(examples) == set(truth)
  for i, ex in examples.items():
    index, labels = truth[i]
    assert ex["superpixels"].dtype == np.int32 and ex["features"].dtype == np.uint8
    np.testing.assert_array_equal(ex["superpixels"], index, err_msg=i)
    np.testing.assert_array_equal(ex["features"], labels, err_msg=i)
    assert ex["image"].shape == index.shape + (3,)
    assert ex["feature_masks"].shape == index.shape + (4,)
    np.testing.assert_array_equal(ex["feature_masks"], labels[index], err_msg=i)
  assert examples["ISIC_0000001"]["superpixels"].max() == 299  # decoded across R and G
  assert isic2017_full.info.metadata["skipped_examples"] == {}


def test_isic2017_features_512_keeps_the_maps_aligned(isic2017_512, isic2017_full,
                                                      isic2017_archive):
  assert isic2017_512.builder_config.name == "512"
  small, full = read(isic2017_512, "train"), read(isic2017_full, "train")
  for i in ("ISIC_0000001", "ISIC_0000002"):  # small images: stored as they are
    np.testing.assert_array_equal(small[i]["superpixels"], full[i]["superpixels"])
  big = small[_BIG]
  assert big["image"].shape == (34, 512, 3)  # 40x600 → 512 wide, aspect kept
  assert big["superpixels"].shape == (34, 512) and big["feature_masks"].shape == (34, 512, 4)
  index, labels = isic2017_archive[1][_BIG]
  np.testing.assert_array_equal(big["superpixels"],
                                isic2017_features.resize_nearest(index, (34, 512)))
  np.testing.assert_array_equal(big["features"], labels)
  np.testing.assert_array_equal(big["feature_masks"], labels[big["superpixels"]])
  # Aligned with the resized image: at each stripe's centre the colour is that stripe's.
  colours, _ = _stripes(1, 600, 10)
  for k, col in enumerate(_stripe_centres(512)):
    assert (big["superpixels"][:, col] == k).all()
    source = colours[0, _stripe_centres(600)[k]]
    assert np.abs(big["image"][17, col].astype(int) - source).max() < 12, k


def test_decode_superpixels_uses_all_three_channels():
  rgb = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [255, 255, 255]]], np.uint8)
  np.testing.assert_array_equal(isic2017_features.decode_superpixels(rgb),
                                [[1, 256, 65536, 2**24 - 1]])


def _record_2017(manual, i, part="Training"):
  data = manual / f"ISIC-2017_{part}_Data"
  return common.Record(id=i, image=str(data / f"{i}.jpg"), values={
      "superpixels": str(data / f"{i}_superpixels.png"),
      "truth": str(manual / f"ISIC-2017_{part}_Part2_GroundTruth" / f"{i}_features.json")})


def test_isic2017_features_bad_examples_name_the_file(isic2017_archive, tmp_path):
  manual = _copy(isic2017_archive[0], tmp_path)
  spec = common.LoadSpec(max_size=512, image_format="jpeg")
  record = _record_2017(manual, "ISIC_0000002")
  good = json.loads(open(record.values["truth"]).read())
  n = len(good["streaks"])

  def expect(obj, pattern):
    _write_json(record.values["truth"], obj)
    with pytest.raises(common.BadExampleError, match=pattern):
      isic2017_features.load_example(record, spec)

  expect({**good, "streaks": good["streaks"][:-1]},
         rf"ISIC_0000002_features\.json: the feature lists differ in length.*'streaks': {n - 1}")
  shorter = {k: v[:-1] for k, v in good.items()}
  expect(shorter, rf"ISIC_0000002_superpixels\.png has index {n - 1}, beyond the {n - 1} "
         r"entries of the lists in .*ISIC_0000002_features\.json")
  expect({k: v + [0] for k, v in good.items()},
         rf"lists in .*ISIC_0000002_features\.json have {n + 1} entries but the superpixel map")
  expect({**good, "globules": good["streaks"]},
         r"ISIC_0000002_features\.json: unknown feature keys \['globules'\]")
  expect({k: v for k, v in good.items() if k != "milia_like_cyst"},
         r"ISIC_0000002_features\.json: missing feature keys \['milia_like_cyst'\]")
  expect({**good, "streaks": [2] * n}, r"'streaks' has values other than 0 and 1 \(e\.g\. 2\)")
  with open(record.values["truth"], "w") as f:
    f.write("{not json")
  with pytest.raises(common.BadExampleError, match=r"features\.json: not valid JSON"):
    isic2017_features.load_example(record, spec)
  _write_json(record.values["truth"], good)
  assert isic2017_features.load_example(record, spec)["features"].shape == (n, 4)
  cv2.imwrite(record.values["superpixels"], np.zeros((40, 31, 3), np.uint8))
  with pytest.raises(common.BadExampleError, match=r"superpixel map .*ISIC_0000002_superpixels"
                     r"\.png is 31x40 px but its image .*ISIC_0000002\.jpg is 30x40 px"):
    isic2017_features.load_example(record, spec)
  cv2.imwrite(record.values["superpixels"], np.zeros((40, 30), np.uint8))
  with pytest.raises(common.BadExampleError, match=r"_superpixels\.png: superpixel map has 1 "
                     r"channel\(s\) of uint8; expected 8-bit RGB"):
    isic2017_features.load_example(record, spec)


def _break_isic2017(manual):
  """A missing feature file (train), a feature file with an unknown key (train) and a superpixel
  map without its image (validation): 3 bad examples."""
  truth = manual / "ISIC-2017_Training_Part2_GroundTruth"
  os.remove(truth / "ISIC_0000001_features.json")
  good = json.loads((truth / "ISIC_0000002_features.json").read_text())
  _write_json(truth / "ISIC_0000002_features.json", {**good, "dots": good["streaks"]})
  shutil.copy(manual / "ISIC-2017_Validation_Data" / "ISIC_0000010_superpixels.png",
              manual / "ISIC-2017_Validation_Data" / "ISIC_0000011_superpixels.png")
  return manual


def test_isic2017_features_bad_examples_fail_or_are_skipped(isic2017_archive, tmp_path):
  manual = _break_isic2017(_copy(isic2017_archive[0], tmp_path))
  with pytest.raises(common.BadExampleError,
                     match=r"ISIC_0000001: image .*ISIC_0000001\.jpg has no feature file "
                     r"\(expected .*Training_Part2_GroundTruth/ISIC_0000001_features\.json\)"
                     r".*skip_bad"):
    prepare(isic2017_features.Isic2017Features, manual, tmp_path / "d1")
  os.remove(manual / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg")  # index problem gone
  os.remove(manual / "ISIC-2017_Training_Data" / "ISIC_0000001_superpixels.png")
  os.remove(manual / "ISIC-2017_Validation_Data" / "ISIC_0000011_superpixels.png")
  with pytest.raises(common.BadExampleError,
                     match=r"ISIC_0000002: bad feature file: .*ISIC_0000002_features\.json: "
                     r"unknown feature keys \['dots'\]"):
    prepare(isic2017_features.Isic2017Features, manual, tmp_path / "d2")
  shutil.rmtree(manual)
  manual = _break_isic2017(_copy(isic2017_archive[0], tmp_path))
  builder = tfds.builder("isic2017_features/512/skip_bad_examples=True",
                         data_dir=str(tmp_path / "d3"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train": 1, "validation": 1}
  assert builder.info.metadata["skipped_counts"] == {"train": 2, "validation": 1}
  skipped = builder.info.metadata["skipped_examples"]
  assert set(skipped["train"]) == {"ISIC_0000001", "ISIC_0000002"}
  assert "no feature file" in skipped["train"]["ISIC_0000001"]
  assert "ISIC_0000002_features.json" in skipped["train"]["ISIC_0000002"]
  assert "superpixel map" in skipped["validation"]["ISIC_0000011"]
  assert set(read(builder, "train")) == {_BIG}


def test_isic2017_features_missing_manual_dir_and_folders(isic2017_archive, tmp_path):
  with pytest.raises(common.ManualDataError, match=r"isic2017_features: .*does not exist"):
    prepare(isic2017_features.Isic2017Features, tmp_path / "nowhere", tmp_path / "d1")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("nothing here")
  with pytest.raises(common.ManualDataError,
                     match="no split found.*ISIC-2017_Training_Part2_GroundTruth.*MANUAL_DOWNLOAD"):
    prepare(isic2017_features.Isic2017Features, tmp_path / "empty", tmp_path / "d2")
  manual = _copy(isic2017_archive[0], tmp_path)
  shutil.rmtree(manual / "ISIC-2017_Validation_Data")
  with pytest.raises(common.ManualDataError,
                     match=r"ISIC-2017_Validation_Data \(the images and superpixel maps"):
    prepare(isic2017_features.Isic2017Features, manual, tmp_path / "d3")


def test_feature_builders_beam_path_is_wired(isic2017_512):
  builder = isic2017_features.Isic2017Features(data_dir=isic2017_512.data_dir_root)
  records = [common.Record("ISIC_0000001", "/nonexistent.jpg")]
  # pylint: disable=protected-access
  assert inspect.isgenerator(builder._generate_examples(split="train", records=records))
  builder._use_beam = True
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError:
    with pytest.raises(ImportError, match="pip install apache-beam"):
      builder._generate_examples(split="train", records=records)
  else:
    assert isinstance(builder._generate_examples(split="train", records=records), beam.PTransform)
  # What the Beam workers get must pickle.
  for load in (isic2017_features.load_example, isic2018_features.load_example):
    assert pickle.loads(pickle.dumps(load)) is load


# ---------------------------------------------------------------------------------------------
# isic2018_features.


@pytest.fixture(scope="module")
def isic2018_archive(tmp_path_factory):
  return make_isic2018_features(tmp_path_factory.mktemp("isic2018f_manual"))


@pytest.fixture(scope="module")
def isic2018_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("isic2018f_tfds"))


@pytest.fixture(scope="module")
def isic2018_512(isic2018_archive, isic2018_data_dir):
  return pipeline.get_builder("isic2018_features", isic2018_data_dir, str(isic2018_archive[0]))


@pytest.fixture(scope="module")
def isic2018_full(isic2018_archive, isic2018_data_dir):
  return pipeline.get_builder("isic2018_features/full", isic2018_data_dir,
                              str(isic2018_archive[0]))


def test_isic2018_features_full_equals_the_pngs(isic2018_full, isic2018_archive):
  _, truth = isic2018_archive
  assert set(isic2018_full.info.features) == {"id", "image", "feature_masks"}
  # Training ground truth with _v3, Validation's without: both found.
  assert set(isic2018_full.info.splits) == {"train", "validation"}
  assert isic2018_full.info.metadata["feature_names"] == list(_ATTR)
  examples = {**read(isic2018_full, "train"), **read(isic2018_full, "validation")}
  assert set(examples) == set(truth)  # LICENSE.txt ignored
  for i, ex in examples.items():
    assert ex["feature_masks"].dtype == np.uint8
    assert ex["feature_masks"].shape == truth[i].shape == ex["image"].shape[:2] + (5,)
    np.testing.assert_array_equal(ex["feature_masks"], truth[i], err_msg=i)


def test_isic2018_features_512_keeps_the_masks_aligned(isic2018_512, isic2018_full,
                                                       isic2018_archive):
  small, full = read(isic2018_512, "train"), read(isic2018_full, "train")
  np.testing.assert_array_equal(small["ISIC_0000100"]["feature_masks"],
                                full["ISIC_0000100"]["feature_masks"])
  big = small[_BIG18]
  assert big["image"].shape == (34, 512, 3) and big["feature_masks"].shape == (34, 512, 5)
  np.testing.assert_array_equal(
      big["feature_masks"],
      isic2017_features.resize_nearest(isic2018_archive[1][_BIG18].astype(np.uint8), (34, 512)))
  colours, _ = _stripes(1, 600, 10)
  for k, col in enumerate(_stripe_centres(512)):
    expected = np.arange(5) == k % 5  # attribute j covers stripes j and j + 5
    assert (big["feature_masks"][:, col] == expected).all(), k
    source = colours[0, _stripe_centres(600)[k]]
    assert np.abs(big["image"][17, col].astype(int) - source).max() < 12, k


def test_isic2018_features_bad_examples(isic2018_archive, tmp_path):
  manual = _copy(isic2018_archive[0], tmp_path)
  gt = manual / "ISIC2018_Task2_Training_GroundTruth_v3"
  os.remove(gt / "ISIC_0000100_attribute_streaks.png")
  with pytest.raises(common.BadExampleError,
                     match=r"ISIC_0000100: image .*ISIC_0000100\.jpg lacks attribute mask\(s\) "
                     r".*_v3/ISIC_0000100_attribute_streaks\.png.*skip_bad_examples"):
    prepare(isic2018_features.Isic2018Features, manual, tmp_path / "d1")
  cv2.imwrite(str(gt / "ISIC_0000100_attribute_streaks.png"), np.zeros((30, 41), np.uint8))
  with pytest.raises(common.BadExampleError,
                     match=r"ISIC_0000100: attribute mask .*ISIC_0000100_attribute_streaks\.png "
                     r"is 41x30 px but its image .*ISIC_0000100\.jpg is 40x30 px"):
    prepare(isic2018_features.Isic2018Features, manual, tmp_path / "d2")
  # Skipped and counted: that one, plus an attribute PNG with an unknown name.
  cv2.imwrite(str(gt / "ISIC_0000101_attribute_dots.png"), np.zeros((40, 30), np.uint8))
  builder = prepare(isic2018_features.Isic2018Features, manual, tmp_path / "d3",
                    skip_bad_examples=True)
  assert builder.info.splits["train"].num_examples == 1
  assert builder.info.metadata["skipped_counts"] == {"train": 2}
  skipped = builder.info.metadata["skipped_examples"]["train"]
  assert "41x30" in skipped["ISIC_0000100"]
  assert "ISIC_0000101_attribute_dots.png has an unknown attribute name" in skipped["ISIC_0000101"]


def test_isic2018_features_folders(isic2018_archive, tmp_path):
  with pytest.raises(common.ManualDataError, match=r"isic2018_features: .*does not exist"):
    prepare(isic2018_features.Isic2018Features, tmp_path / "nowhere", tmp_path / "d1")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("nothing here")
  with pytest.raises(common.ManualDataError,
                     match="no split found.*ISIC2018_Task2_Training_GroundTruth_v3"):
    prepare(isic2018_features.Isic2018Features, tmp_path / "empty", tmp_path / "d2")
  manual = _copy(isic2018_archive[0], tmp_path)
  os.makedirs(manual / "ISIC2018_Task2_Validation_GroundTruth_v3")
  with pytest.raises(common.ManualDataError,
                     match=r"both .*Validation_GroundTruth and .*Validation_GroundTruth_v3 exist"):
    prepare(isic2018_features.Isic2018Features, manual, tmp_path / "d3")
  os.rmdir(manual / "ISIC2018_Task2_Validation_GroundTruth_v3")
  shutil.rmtree(manual / "ISIC2018_Task1-2_Validation_Input")
  with pytest.raises(common.ManualDataError,
                     match=r"ISIC2018_Task1-2_Validation_Input \(the images of this split\)"):
    prepare(isic2018_features.Isic2018Features, manual, tmp_path / "d4")
