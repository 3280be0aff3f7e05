"""The tf.data pipeline: shapes and value ranges, predict-time preprocessing equals eval-time,
augmentation only in training, and the image reader's refusals."""
import dataclasses

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lesion_jax import io
from lesion_jax.data import ops, pipeline
from lesion_jax.data.augment import AugmentConfig


@pytest.fixture(scope="module")
def config(tiny_data_dir, tiny_dataset):
  return pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=4)


def seg_train(config, **kwargs):
  return pipeline.train_iterator(config, ops.segmentation_ops(config.image_size, config.augment), **kwargs)


def seg_eval(config, split):
  return pipeline.eval_iterator(config, ops.segmentation_ops(config.image_size, None, keep_encoded_mask=True), split)


def cls_train(config, **kwargs):
  return pipeline.train_iterator(config, ops.classification_ops(config.image_size, config.augment, "malignant"),
                                 **kwargs)


def test_train_batches_shapes_ranges_and_masks(config):
  batch = next(seg_train(config))
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  assert batch["mask"].shape == (4, 32, 32, 1)
  assert set(np.unique(batch["mask"])) <= {0.0, 1.0} and batch["mask"].sum() > 0
  assert batch["id"].dtype.kind in "OS"


def test_resizing_to_another_size(config):
  batch = next(seg_eval(dataclasses.replace(config, image_size=48), "validation"))
  assert batch["image"].shape == (4, 48, 48, 3) and batch["mask"].shape == (4, 48, 48, 1)


def test_predict_preprocessing_equals_eval_pipeline(config):
  builder = pipeline.get_builder(config.dataset, config.data_dir)
  raw = next(iter(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False))))
  batch = next(seg_eval(dataclasses.replace(config, image_size=48), "test"))
  assert batch["id"][0] == raw["id"]
  np.testing.assert_allclose(pipeline.preprocess_image(raw["image"], 48), batch["image"][0], atol=1e-6)


def test_eval_is_not_augmented_but_train_is(config):
  eval_a = next(seg_eval(config, "train"))
  eval_b = next(seg_eval(config, "train"))
  np.testing.assert_array_equal(eval_a["image"], eval_b["image"])
  plain = next(seg_train(dataclasses.replace(config, augment=AugmentConfig.off())))
  augmented = next(seg_train(config))
  np.testing.assert_array_equal(plain["id"], augmented["id"])  # same examples, same order
  assert not np.allclose(plain["image"], augmented["image"])


def test_classification_batches_carry_labels(config):
  batch = next(cls_train(config))
  assert batch["label"].shape == (4,) and set(np.unique(batch["label"])) <= {0, 1}
  assert "mask" not in batch


def test_read_rgb_image_refuses_bad_files(tmp_path):
  rng = np.random.default_rng(0)
  good = tmp_path / "good.png"
  image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
  cv2.imwrite(str(good), image[..., ::-1])
  np.testing.assert_array_equal(io.read_rgb_image(good), image)  # RGB order, not BGR
  deep = tmp_path / "deep.png"
  cv2.imwrite(str(deep), (image.astype(np.uint16) * 257)[..., ::-1])
  np.testing.assert_array_equal(io.read_rgb_image(deep), image)
  cases = {"missing.png": "cannot read", "empty.png": "empty", "bad.jpg": "not a decodable",
           "gray.png": "grayscale", "rgba.png": "alpha", "small.png": "smaller than"}
  (tmp_path / "empty.png").write_bytes(b"")
  (tmp_path / "bad.jpg").write_bytes(b"garbage")
  cv2.imwrite(str(tmp_path / "gray.png"), image[..., 0])
  cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([image, image[..., :1]]))
  cv2.imwrite(str(tmp_path / "small.png"), image[:4, :4])
  for name, reason in cases.items():
    with pytest.raises(io.ImageError, match=reason) as e:
      io.read_rgb_image(tmp_path / name, min_size=8)
    assert name in str(e.value)


def test_reader_applies_exif_orientation_and_notes_animations(tmp_path):
  import io as pyio  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  pixels = np.random.default_rng(1).integers(0, 255, (24, 40, 3), dtype=np.uint8)
  for orientation in range(1, 9):
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    im.save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    image, notes = io.read_rgb_image_with_notes(path)
    np.testing.assert_array_equal(image, expected)  # as a viewer shows it
    assert (notes == [f"EXIF orientation {orientation} applied"]) == (orientation > 1)
  frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (10, 200)]
  for fmt, name in (("GIF", "anim.gif"), ("TIFF", "pages.tif")):  # an animation, two pages
    buf = pyio.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    (tmp_path / name).write_bytes(buf.getvalue())
    image, notes = io.read_rgb_image_with_notes(tmp_path / name)
    assert image.shape == (16, 16, 3) and image.max() <= 12 and notes == ["animated: first of 2 frames used"]


def test_atomic_writes_leave_no_temporaries(tmp_path):
  io.write_json(tmp_path / "a" / "m.json", {"x": np.float32(0.5), "y": np.arange(3)})
  assert io.read_json(tmp_path / "a" / "m.json") == {"x": 0.5, "y": [0, 1, 2]}
  io.write_png(tmp_path / "a" / "m.png", np.zeros((4, 4), np.uint8))
  assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["m.json", "m.png"]


def test_fold_splits_hold_every_example_out_once():
  from lesion_jax.tasks.runner import fold_splits  # pylint: disable=g-import-not-at-top
  assert fold_splits("train", 10, 5, 0) == ("train[2:]", "train[0:2]")
  assert fold_splits("train", 10, 5, 2) == ("train[:4]+train[6:]", "train[4:6]")
  assert fold_splits("train", 10, 5, 4) == ("train[:8]", "train[8:10]")
  with pytest.raises(ValueError):
    fold_splits("train", 10, 5, 5)


def test_balanced_sampling_evens_out_classes(config):
  cfg = dataclasses.replace(config, batch_size=32)
  labels = np.concatenate([b["label"] for _, b in zip(range(4), cls_train(cfg, balance_key="malignant"))])
  plain = np.concatenate([b["label"] for _, b in zip(range(4), cls_train(cfg))])
  assert abs(labels.mean() - 0.5) < 0.15 and plain.mean() < 0.35  # ~20 % malignant without balancing
  resumed = next(cls_train(cfg, start_step=2, balance_key="malignant"))
  again = [b for _, b in zip(range(3), cls_train(cfg, balance_key="malignant"))][2]
  np.testing.assert_array_equal(resumed["id"], again["id"])  # balanced streams resume exactly too


def test_missing_feature_is_reported_with_the_dataset_name(config):
  with pytest.raises(KeyError, match="synthetic_lesions.*'lesion_outline'"):
    next(pipeline.train_iterator(config, ops.segmentation_ops(32, None, mask_key="lesion_outline")))
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  task = segmentation.SegmentationTask(segmentation.SegmenterConfig(input=config, mask_key="lesion_outline"))
  with pytest.raises(ValueError, match="has no 'lesion_outline' feature.*`labels`=kmeans"):
    next(task.train_batches(0))
