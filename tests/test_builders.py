"""The TFDS builders of the real archives (isic2016, isic2017, isic2018, ph2, ham10000), on tiny
fake archives written here in the official layouts, and isic2017 on the real sample in shared/.

Each fake archive is prepared once per module; the error cases use their own small copies.
"""
import inspect
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lesion_jax.data import pipeline
from lesion_jax.data.builders import common
from lesion_jax.data.builders import ham10000
from lesion_jax.data.builders import isic2016
from lesion_jax.data.builders import isic2017
from lesion_jax.data.builders import isic2018
from lesion_jax.data.builders import ph2

# ---------------------------------------------------------------------------------------------
# Fake archives.


def _image(path, h, w, seed=0):
  """Writes a random RGB image (smooth, so JPEG keeps it close) and returns it."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
  image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(str(path), image[..., ::-1])
  return image


def _mask(path, h, w):
  mask = np.zeros((h, w), np.uint8)
  cv2.ellipse(mask, (w // 2, h // 2), (max(1, w // 3), max(1, h // 3)), 0, 0, 360, 255, -1)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(str(path), mask)
  return mask


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def _isic_pairs(root, data_dir, gt_dir, suffix, sizes):
  """ISIC_<id>.jpg images and ISIC_<id><suffix> masks for {id: (h, w)}."""
  for k, (image_id, (h, w)) in enumerate(sizes.items()):
    _image(os.path.join(root, data_dir, f"{image_id}.jpg"), h, w, seed=k)
    _mask(os.path.join(root, gt_dir, f"{image_id}{suffix}"), h, w)


_2017_TRAIN = {"ISIC_0000001": ("melanoma", (24, 32)),
               "ISIC_0000002": ("seborrheic_keratosis", (30, 20)),
               "ISIC_0000003": ("nevus", (20, 20)),
               "ISIC_0000004": ("nevus", (30, 700))}  # 700 > 512: resized by the 512 config
_2017_VALID = {"ISIC_0000010": ("melanoma", (22, 28)), "ISIC_0000011": ("nevus", (26, 26)),
               "ISIC_0000012": ("seborrheic_keratosis", (20, 36))}


def make_isic2017(root, splits=(("Training", _2017_TRAIN), ("Validation", _2017_VALID))):
  for part, rows in splits:
    _isic_pairs(root, f"ISIC-2017_{part}_Data", f"ISIC-2017_{part}_Part1_GroundTruth",
                "_segmentation.png", {i: size for i, (_, size) in rows.items()})
    lines = ["image_id,melanoma,seborrheic_keratosis"] + [
        f"{i},{float(d == 'melanoma')},{float(d == 'seborrheic_keratosis')}"
        for i, (d, _) in rows.items()]
    _write(os.path.join(root, f"ISIC-2017_{part}_Part3_GroundTruth.csv"), "\n".join(lines) + "\n")
    # The official Data folders also hold superpixel maps: they must be ignored.
    first = next(iter(rows))
    _image(os.path.join(root, f"ISIC-2017_{part}_Data", f"{first}_superpixels.png"), 20, 20)
  return root


def make_isic2016(root):
  part1 = "ISBI2016_ISIC_Part1_"
  _isic_pairs(root, part1 + "Training_Data", part1 + "Training_GroundTruth", "_Segmentation.png",
              {"ISIC_0000000": (20, 30), "ISIC_0000001": (32, 24), "ISIC_0000002": (20, 20)})
  _write(os.path.join(root, "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"),
         "ISIC_0000000,benign\nISIC_0000001,malignant\nISIC_0000002,benign\n")
  _isic_pairs(root, part1 + "Test_Data", part1 + "Test_GroundTruth", "_Segmentation.png",
              {"ISIC_0000003": (24, 24), "ISIC_0000004": (20, 28)})
  _write(os.path.join(root, "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"),
         "ISIC_0000003,0.0\nISIC_0000004,1.0\n")
  return root


_2018_TASK3 = {"ISIC_0024306": "NV", "ISIC_0024307": "MEL", "ISIC_0024308": "BCC",
               "ISIC_0024309": "AKIEC", "ISIC_0024310": "BKL", "ISIC_0024311": "DF",
               "ISIC_0024312": "VASC"}


def make_isic2018(root):
  _isic_pairs(root, "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth",
              "_segmentation.png", {"ISIC_0000000": (20, 30), "ISIC_0000001": (30, 24)})
  _isic_pairs(root, "ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth",
              "_segmentation.png", {"ISIC_0012255": (24, 24)})
  _write(os.path.join(root, "ISIC2018_Task1-2_Training_Input", "LICENSE.txt"), "licence\n")
  cols = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
  lines = ["image," + ",".join(cols)]
  for k, (i, dx) in enumerate(_2018_TASK3.items()):
    _image(os.path.join(root, "ISIC2018_Task3_Training_Input", f"{i}.jpg"), 20, 24, seed=k)
    lines.append(i + "," + ",".join("1.0" if c == dx else "0.0" for c in cols))
  truth = "ISIC2018_Task3_Training_GroundTruth"
  _write(os.path.join(root, truth, truth + ".csv"), "\n".join(lines) + "\n")
  return root


def _ph2_ids():
  """25 cases in the PH2 proportions (2:2:1): id → Clinical Diagnosis code."""
  return {f"IMD{100 + k:03d}": (0 if k < 10 else 1 if k < 20 else 2) for k in range(25)}


def make_ph2(root):
  base = os.path.join(root, "PH2Dataset", "PH2 Dataset images")
  rows = ["||   Name  || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment "
          "Network | Dots/Globules | Streaks | Regression Areas | Blue-Whitish Veil ||  Colors ||"]
  for k, (i, code) in enumerate(_ph2_ids().items()):
    case = os.path.join(base, i)
    _image(os.path.join(case, f"{i}_Dermoscopic_Image", f"{i}.bmp"), 20, 28, seed=k)
    _mask(os.path.join(case, f"{i}_lesion", f"{i}_lesion.bmp"), 20, 28)
    os.makedirs(os.path.join(case, f"{i}_roi"), exist_ok=True)
    histo = "Melanoma" if code == 2 else ""
    rows.append(f"|| {i}  || {histo:>22} || {code:>18} ||   0 | T | A | A | A | A ||   3  4 ||")
  rows += ["", "Legend:", "Clinical Diagnosis: 0 - Common Nevus; 1 - Atypical Nevus; 2 - Melanoma"]
  _write(os.path.join(root, "PH2Dataset", "PH2_dataset.txt"), "\n".join(rows) + "\n")
  return root


_HAM_DX = ("nv", "mel", "bkl", "bcc", "akiec", "df", "vasc")


def make_ham10000(root, num_lesions=24):
  """Lesions with 1-3 images each, spread over both image folders, with masks."""
  lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
  n = 0
  for lesion in range(num_lesions):
    for _ in range(1 + lesion % 3):
      image_id = f"ISIC_{24306 + n:07d}"
      part = "HAM10000_images_part_1" if n % 2 else "HAM10000_images_part_2"
      _image(os.path.join(root, part, f"{image_id}.jpg"), 20, 26, seed=n)
      _mask(os.path.join(root, "HAM10000_segmentations_lesion_tschandl",
                         f"{image_id}_segmentation.png"), 20, 26)
      lines.append(f"HAM_{lesion:07d},{image_id},{_HAM_DX[lesion % 7]},histo,50.0,male,back")
      n += 1
  _write(os.path.join(root, "HAM10000_metadata.csv"), "\n".join(lines) + "\n")
  return root


# ---------------------------------------------------------------------------------------------
# Preparing and reading.


def prepare(cls, manual_dir, data_dir, config=None, **kwargs):
  builder = cls(data_dir=str(data_dir), config=config, **kwargs)
  config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  builder.download_and_prepare(download_config=config)
  return builder


def read(builder, split):
  """id → example (numpy) of one split."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}


def sizes(builder):
  return {s: builder.info.splits[s].num_examples for s in builder.info.splits}


def check_masks(examples):
  for i, ex in examples.items():
    assert ex["mask"].shape == ex["image"].shape[:2] + (1,), i
    assert set(np.unique(ex["mask"])) <= {0, 255} and ex["mask"].max() == 255, i


def _copy(src, tmp_path):
  dst = tmp_path / "manual"
  shutil.copytree(src, dst)
  return dst


# ---------------------------------------------------------------------------------------------
# isic2017 on a fake archive: splits, labels, masks, both size configs, errors, skipping.


@pytest.fixture(scope="module")
def isic2017_manual(tmp_path_factory):
  return make_isic2017(tmp_path_factory.mktemp("isic2017_manual"))


@pytest.fixture(scope="module")
def isic2017_data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("isic2017_tfds")


@pytest.fixture(scope="module")
def isic2017_512(isic2017_manual, isic2017_data_dir):
  return prepare(isic2017.Isic2017, isic2017_manual, isic2017_data_dir)


def test_isic2017_splits_ids_labels_and_masks(isic2017_512):
  assert isic2017_512.builder_config.name == "512"  # the default
  assert set(isic2017_512.info.splits) == {"train", "validation"}  # no Test_v2 folders: no test
  names = isic2017_512.info.features["label"].names
  for split, rows in (("train", _2017_TRAIN), ("validation", _2017_VALID)):
    examples = read(isic2017_512, split)
    assert set(examples) == set(rows)
    for i, (diagnosis, _) in rows.items():
      assert names[examples[i]["label"]] == diagnosis
      assert examples[i]["malignant"] == int(diagnosis == "melanoma")
    check_masks(examples)
  assert isic2017_512.info.metadata["skipped_examples"] == {}


def test_isic2017_512_resizes_long_side_and_keeps_small_images(isic2017_512, isic2017_manual,
                                                               isic2017_data_dir):
  small = read(isic2017_512, "train")
  assert small["ISIC_0000004"]["image"].shape == (22, 512, 3)  # 30x700 → 512 wide, aspect kept
  assert small["ISIC_0000004"]["mask"].shape == (22, 512, 1)
  assert small["ISIC_0000001"]["image"].shape == (24, 32, 3)  # never enlarged
  full = prepare(isic2017.Isic2017, isic2017_manual, isic2017_data_dir, config="full")
  big = read(full, "train")["ISIC_0000004"]
  assert big["image"].shape == (30, 700, 3)
  source = os.path.join(isic2017_manual, "ISIC-2017_Training_Data", "ISIC_0000004.jpg")
  encoded = full.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  stored = {ex["id"].decode(): ex["image"] for ex in tfds.as_numpy(encoded)}
  with open(source, "rb") as f:
    assert stored["ISIC_0000004"] == f.read()  # native JPEGs are stored as downloaded
  truth = cv2.imread(os.path.join(isic2017_manual, "ISIC-2017_Training_Part1_GroundTruth",
                                  "ISIC_0000004_segmentation.png"), cv2.IMREAD_GRAYSCALE)
  np.testing.assert_array_equal(big["mask"][..., 0], truth)
  # The reduced mask is the area-resized full mask, thresholded at 0.5.
  area = cv2.resize((truth > 0).astype(np.float32), (512, 22), interpolation=cv2.INTER_AREA)
  expected = area >= 0.5
  np.testing.assert_array_equal(small["ISIC_0000004"]["mask"][..., 0] > 0, expected)


def test_isic2017_missing_everything_and_partial_split(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("nothing here")
  with pytest.raises(common.ManualDataError,
                     match="no split found.*ISIC-2017_Training_Data.*MANUAL_DOWNLOAD"):
    prepare(isic2017.Isic2017, tmp_path / "empty", tmp_path / "d1")
  manual = make_isic2017(tmp_path / "m", splits=(("Validation", _2017_VALID),))
  shutil.rmtree(manual / "ISIC-2017_Validation_Part1_GroundTruth")
  with pytest.raises(common.ManualDataError,
                     match="ISIC-2017_Validation_Part1_GroundTruth missing"):
    prepare(isic2017.Isic2017, manual, tmp_path / "d2")


def test_isic2017_bad_examples_fail_with_id_and_reason(isic2017_manual, tmp_path, damaged_jpeg):
  manual = _copy(isic2017_manual, tmp_path)
  data = manual / "ISIC-2017_Training_Data"
  (data / "ISIC_0000002.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(common.BadExampleError,
                     match=r"ISIC_0000002: bad image.*not a decodable.*skip_bad_examples"):
    prepare(isic2017.Isic2017, manual, tmp_path / "d1")
  # Damaged mid-stream: OpenCV alone would decode it (bottom part flat grey) with only a libjpeg
  # warning on stderr; the validated reader refuses it.
  (data / "ISIC_0000002.jpg").write_bytes(damaged_jpeg)
  with pytest.raises(common.BadExampleError, match=r"ISIC_0000002: bad image.*corrupt JPEG data"):
    prepare(isic2017.Isic2017, manual, tmp_path / "d0")
  # Every bad example of a split is reported in one pass, not one per run.
  (data / "ISIC_0000003.jpg").write_bytes(b"")
  with pytest.raises(common.BadExampleError, match=r"ISIC_0000002: bad image.*2 bad examples "
                     r"\(train: 2\)(.|\n)*\n  train ISIC_0000003: bad image.*empty"):
    prepare(isic2017.Isic2017, manual, tmp_path / "d01")
  _image(data / "ISIC_0000003.jpg", 20, 20)
  _image(data / "ISIC_0000002.jpg", 30, 20)
  mask = manual / "ISIC-2017_Training_Part1_GroundTruth" / "ISIC_0000003_segmentation.png"
  _mask(mask, 20, 21)
  with pytest.raises(common.BadExampleError,
                     match=r"ISIC_0000003: mask .* is 21x20 px but its image .* is 20x20"):
    prepare(isic2017.Isic2017, manual, tmp_path / "d2")
  _mask(mask, 20, 20)
  with open(manual / "ISIC-2017_Validation_Part3_GroundTruth.csv", "a") as f:
    f.write("ISIC_0009999,1.0,0.0\n")
  with pytest.raises(common.BadExampleError,
                     match=r"ISIC_0009999: label row in .*Validation_Part3.* has no image"):
    prepare(isic2017.Isic2017, manual, tmp_path / "d3")


def _break_isic2017(manual):
  """An empty image, a mask of the wrong size and a label row without image: 3 bad examples."""
  (manual / "ISIC-2017_Training_Data" / "ISIC_0000002.jpg").write_bytes(b"")
  _mask(manual / "ISIC-2017_Validation_Part1_GroundTruth" / "ISIC_0000011_segmentation.png", 5, 5)
  with open(manual / "ISIC-2017_Validation_Part3_GroundTruth.csv", "a") as f:
    f.write("ISIC_0009999,1.0,0.0\n")
  return manual


def test_isic2017_skip_bad_examples_counts_and_records(isic2017_manual, tmp_path, caplog):
  manual = _break_isic2017(_copy(isic2017_manual, tmp_path))
  # The flag is a builder argument, so TFDS name strings (and pipeline.get_builder) reach it.
  builder = tfds.builder("isic2017/512/skip_bad_examples=True", data_dir=str(tmp_path / "d"))
  with caplog.at_level("WARNING"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert sizes(builder) == {"train": len(_2017_TRAIN) - 1, "validation": len(_2017_VALID) - 1}
  assert builder.info.metadata["skipped_counts"] == {"train": 1, "validation": 2}
  skipped = builder.info.metadata["skipped_examples"]
  assert set(skipped["train"]) == {"ISIC_0000002"} and "empty" in skipped["train"]["ISIC_0000002"]
  assert set(skipped["validation"]) == {"ISIC_0000011", "ISIC_0009999"}
  assert "skipped 3 bad examples" in caplog.text and "ISIC_0009999" in caplog.text
  # The record survives a reload from disk.
  reloaded = isic2017.Isic2017(data_dir=str(tmp_path / "d"))
  assert reloaded.info.metadata["skipped_examples"] == skipped


def test_isic2017_beam_path_is_wired(isic2017_512):
  builder = isic2017.Isic2017(data_dir=isic2017_512.data_dir_root)
  records = [common.Record("ISIC_0000001", "/nonexistent.jpg")]
  # pylint: disable=protected-access
  assert inspect.isgenerator(builder._generate_examples(split="train", records=records))
  builder._use_beam = True  # what _download_and_prepare sets when a Beam runner/options are given
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError:
    with pytest.raises(ImportError, match="pip install apache-beam"):
      builder._generate_examples(split="train", records=records)
  else:
    assert isinstance(builder._generate_examples(split="train", records=records), beam.PTransform)
  # What the Beam workers get must pickle.
  spec = common.LoadSpec(max_size=512, image_format="jpeg")
  assert pickle.loads(pickle.dumps((records[0], spec))) == (records[0], spec)


def test_beam_generation_matches_in_process(isic2017_manual, isic2017_512, tmp_path):
  beam = pytest.importorskip("apache_beam")  # not a dependency: runs where it is installed

  def beam_prepare(manual, data_dir, **kwargs):
    options = beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])
    builder = isic2017.Isic2017(data_dir=str(data_dir), **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual), beam_options=options))
    return builder

  builder = beam_prepare(isic2017_manual, tmp_path / "d1")
  for split in ("train", "validation"):
    a, b = read(builder, split), read(isic2017_512, split)
    assert set(a) == set(b)
    for i in a:
      np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
      np.testing.assert_array_equal(a[i]["mask"], b[i]["mask"])
  assert builder.info.metadata["skipped_counts"] == {}
  broken = _break_isic2017(_copy(isic2017_manual, tmp_path))
  skipping = beam_prepare(broken, tmp_path / "d2", skip_bad_examples=True)
  assert skipping.info.metadata["skipped_counts"] == {"train": 1, "validation": 2}
  if hasattr(beam.metrics.Metrics, "string_set"):  # Beam >= 2.58 brings the workers' ids back
    assert set(skipping.info.metadata["skipped_examples"]["train"]) == {"ISIC_0000002"}
  shutil.rmtree(broken / "ISIC-2017_Validation_Data")  # keep only the decoding problem
  shutil.rmtree(broken / "ISIC-2017_Validation_Part1_GroundTruth")
  os.remove(broken / "ISIC-2017_Validation_Part3_GroundTruth.csv")
  with pytest.raises(Exception, match="ISIC_0000002: bad image"):  # Beam may wrap the error
    beam_prepare(broken, tmp_path / "d3")


# ---------------------------------------------------------------------------------------------
# isic2016, isic2018, ph2, ham10000.


@pytest.fixture(scope="module")
def isic2016_manual(tmp_path_factory):
  return make_isic2016(tmp_path_factory.mktemp("isic2016_manual"))


def test_isic2016(isic2016_manual, tmp_path_factory):
  builder = prepare(isic2016.Isic2016, isic2016_manual, tmp_path_factory.mktemp("isic2016_tfds"))
  assert sizes(builder) == {"train": 3, "test": 2}
  train, test = read(builder, "train"), read(builder, "test")
  assert {i: int(ex["malignant"]) for i, ex in {**train, **test}.items()} == {
      "ISIC_0000000": 0, "ISIC_0000001": 1, "ISIC_0000002": 0, "ISIC_0000003": 0,
      "ISIC_0000004": 1}
  assert all(ex["label"] == ex["malignant"] for ex in train.values())
  check_masks(train)
  check_masks(test)


def test_isic2016_missing_folder_and_bad_label(isic2016_manual, tmp_path):
  manual = _copy(isic2016_manual, tmp_path)
  shutil.rmtree(manual / "ISBI2016_ISIC_Part1_Test_GroundTruth")
  with pytest.raises(common.ManualDataError,
                     match="ISBI2016_ISIC_Part1_Test_GroundTruth missing"):
    prepare(isic2016.Isic2016, manual, tmp_path / "d1")
  shutil.rmtree(manual)
  manual = _copy(isic2016_manual, tmp_path)
  labels = manual / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
  labels.write_text(labels.read_text() + "ISIC_0000001,benign\n")
  with pytest.raises(common.BadExampleError, match=r"ISIC_0000001: .*csv line 4: duplicate row"):
    prepare(isic2016.Isic2016, manual, tmp_path / "d2")
  labels.write_text(labels.read_text().replace("ISIC_0000001,benign\n", "ISIC_0000002,maybe\n"))
  with pytest.raises(common.BadExampleError, match=r"ISIC_0000002: .*csv line 4: label 'maybe'"):
    prepare(isic2016.Isic2016, manual, tmp_path / "d3")


@pytest.fixture(scope="module")
def isic2018_manual(tmp_path_factory):
  return make_isic2018(tmp_path_factory.mktemp("isic2018_manual"))


def test_isic2018_task1_has_masks_and_no_labels(isic2018_manual, tmp_path_factory):
  builder = prepare(isic2018.Isic2018, isic2018_manual, tmp_path_factory.mktemp("isic2018_tfds"))
  assert builder.builder_config.name == "task1_512"
  assert set(builder.info.features) == {"id", "image", "mask"}
  assert sizes(builder) == {"train": 2, "validation": 1}
  train = read(builder, "train")
  assert set(train) == {"ISIC_0000000", "ISIC_0000001"}  # LICENSE.txt ignored
  check_masks(train)


def test_isic2018_task3_labels_and_malignant(isic2018_manual, tmp_path_factory):
  builder = prepare(isic2018.Isic2018, isic2018_manual,
                    tmp_path_factory.mktemp("isic2018_tfds3"), config="task3_512")
  assert set(builder.info.features) == {"id", "image", "label", "malignant"}
  assert list(builder.info.splits) == ["train"]
  names = builder.info.features["label"].names
  train = read(builder, "train")
  assert {i: names[ex["label"]].upper() for i, ex in train.items()} == _2018_TASK3
  malignant = {i for i, ex in train.items() if ex["malignant"]}
  assert malignant == {"ISIC_0024307", "ISIC_0024308", "ISIC_0024309"}  # MEL, BCC, AKIEC


@pytest.fixture(scope="module")
def ph2_builder(tmp_path_factory):
  manual = make_ph2(tmp_path_factory.mktemp("ph2_manual"))
  return prepare(ph2.Ph2, manual, tmp_path_factory.mktemp("ph2_tfds"))


def test_ph2_stratified_folds(ph2_builder):
  codes = _ph2_ids()
  assert list(ph2_builder.info.splits) == [f"fold{k}" for k in range(5)]
  seen = {}
  for k in range(5):
    examples = read(ph2_builder, f"fold{k}")
    labels = sorted(int(ex["label"]) for ex in examples.values())
    assert labels == [0, 0, 1, 1, 2], k  # every fold has the class proportions
    for i, ex in examples.items():
      assert ex["label"] == codes[i] and ex["malignant"] == int(codes[i] == 2)
      assert ex["image"].shape == (20, 28, 3)
      seen[i] = k
    check_masks(examples)
  assert set(seen) == set(codes)
  # The assignment is a function of the table alone.
  by_label = {}
  for i, code in codes.items():
    by_label.setdefault(code, []).append(i)
  assert ph2.fold_of(by_label) == seen
  # Cross-validation and external testing use TFDS split arithmetic.
  assert len(read(ph2_builder, "fold1+fold2+fold3+fold4")) == 20
  assert len(read(ph2_builder, "all")) == 25


def test_ph2_reads_a_tab_separated_resave_of_its_table(tmp_path):
  manual = make_ph2(tmp_path / "m")
  table = manual / "PH2Dataset" / "PH2_dataset.txt"
  rows = ["Name\tHistological Diagnosis\tClinical Diagnosis\tAsymmetry"]
  rows += [f"{i}\t{'Melanoma' if code == 2 else ''}\t{code}\t0" for i, code in _ph2_ids().items()]
  table.write_bytes(("\r\n".join(rows) + "\r\n").encode())  # as a spreadsheet saves it
  builder = prepare(ph2.Ph2, manual, tmp_path / "d")
  labels = {i: int(ex["label"]) for i, ex in read(builder, "all").items()}
  assert labels == _ph2_ids()


def test_ph2_missing_mask_names_the_path(tmp_path):
  manual = make_ph2(tmp_path / "m")
  os.remove(manual / "PH2Dataset" / "PH2 Dataset images" / "IMD105" / "IMD105_lesion" /
            "IMD105_lesion.bmp")
  with pytest.raises(common.BadExampleError, match=r"IMD105: missing .*IMD105_lesion\.bmp"):
    prepare(ph2.Ph2, manual, tmp_path / "d")


@pytest.fixture(scope="module")
def ham_manual(tmp_path_factory):
  return make_ham10000(tmp_path_factory.mktemp("ham_manual"))


def test_ham10000_lesion_level_splits(ham_manual, tmp_path_factory):
  builder = prepare(ham10000.Ham10000, ham_manual, tmp_path_factory.mktemp("ham_tfds"))
  assert "mask" not in builder.info.features  # the default config stores no masks
  lesion_split, total = {}, 0
  names = builder.info.features["label"].names
  for split in ("train", "validation", "test"):
    for i, ex in read(builder, split).items():
      lesion = ex["lesion_id"].decode()
      assert lesion_split.setdefault(lesion, split) == split, f"{lesion} is in two splits"
      assert split == ham10000.split_of(lesion)
      dx = _HAM_DX[int(lesion[4:]) % 7]
      assert names[ex["label"]] == dx and ex["malignant"] == int(dx in ("mel", "bcc", "akiec"))
      total += 1
  assert total == sum(1 + k % 3 for k in range(24))
  assert len(set(lesion_split.values())) == 3  # 24 lesions reach every split


def test_ham10000_seg_config_and_missing_masks(ham_manual, tmp_path):
  builder = prepare(ham10000.Ham10000, ham_manual, tmp_path / "d1", config="seg_512")
  check_masks(read(builder, "train"))
  manual = _copy(ham_manual, tmp_path)
  shutil.rmtree(manual / "HAM10000_segmentations_lesion_tschandl")
  with pytest.raises(common.ManualDataError,
                     match="HAM10000_segmentations_lesion_tschandl.*does not exist"):
    prepare(ham10000.Ham10000, manual, tmp_path / "d2", config="seg_512")


def test_read_mask_conventions(tmp_path):
  cv2.imwrite(str(tmp_path / "01.png"), np.array([[0, 1], [1, 0]], np.uint8))
  cv2.imwrite(str(tmp_path / "noisy.png"), np.array([[3, 250], [128, 127]], np.uint8))
  zero, full = np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)
  cv2.imwrite(str(tmp_path / "colour.png"), np.dstack([zero, full, zero]))
  cv2.imwrite(str(tmp_path / "grey.png"), np.dstack([full, full, full]))
  diagonal = [[False, True], [True, False]]
  np.testing.assert_array_equal(common.read_mask(tmp_path / "01.png"), diagonal)
  np.testing.assert_array_equal(common.read_mask(tmp_path / "noisy.png"), diagonal)
  assert common.read_mask(tmp_path / "grey.png").all()
  with pytest.raises(common.io.ImageError, match="colour"):
    common.read_mask(tmp_path / "colour.png")
  assert common.target_size(560, 768, 512) == (373, 512)  # PH2
  assert common.target_size(20, 30, 512) == common.target_size(20, 30, None) == (20, 30)


# ---------------------------------------------------------------------------------------------
# isic2017 on the real sample (read in place, never copied).


@pytest.fixture(scope="module")
def real_isic2017(tmp_path_factory, real_sample_dir):
  if not os.path.isdir(real_sample_dir):
    pytest.skip(f"real ISIC 2017 sample not found at {real_sample_dir}")
  data_dir = str(tmp_path_factory.mktemp("isic2017_real"))
  return pipeline.get_builder("isic2017", data_dir, real_sample_dir), data_dir


def test_real_isic2017_sample(real_isic2017):
  builder, _ = real_isic2017
  assert sizes(builder) == {"train": 150, "validation": 150}
  names = builder.info.features["label"].names
  for split, melanoma, keratosis in (("train", 27, 40), ("validation", 30, 42)):
    examples = read(builder, split)
    assert all(i.startswith("ISIC_") for i in examples)
    counts = {n: sum(names[ex["label"]] == n for ex in examples.values()) for n in names}
    assert counts == {"melanoma": melanoma, "seborrheic_keratosis": keratosis,
                      "nevus": 150 - melanoma - keratosis}
    assert sum(int(ex["malignant"]) for ex in examples.values()) == melanoma
    check_masks(examples)


def test_real_isic2017_through_the_pipeline(real_isic2017):
  _, data_dir = real_isic2017
  config = pipeline.InputConfig(dataset="isic2017", data_dir=data_dir, image_size=64,
                                batch_size=8)
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  task = segmentation.SegmentationTask(segmentation.SegmenterConfig(input=config))
  batches = list(task.eval_batches("validation"))
  assert len(batches) == 19 and sum(b["weight"].sum() for b in batches) == 150
  assert batches[0]["image"].shape == (8, 64, 64, 3) and batches[0]["mask"].shape == (8, 64, 64, 1)
  assert 0 < batches[0]["mask"].mean() < 1
