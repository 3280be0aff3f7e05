"""Pipelines as a notebook runs them: library calls only (no `experiments` import), then predict on
a user's photos for every kind of run.

Pipeline 1 (self-learning annotation): K-means pseudo-masks -> a U-Net trained on them -> its
masks crop the lesions -> LeNet-5 on raw images and on the crops. Pipeline 3's classifier on
purified input: an inpainter (Adam, then SGD fine-tuning) fills the detected occlusions of every
image, a classifier reads the purified images. Each run is then asked to predict on photos of
other sizes, replaying what it read in training."""
import sys

import numpy as np
import pytest

from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.pipelines.gan import task as gan
from lesion_jax.pipelines.purification import task as inpainting
from lesion_jax.tasks import base, classification, runner, segmentation


def _photos():
  rng = np.random.default_rng(3)
  photos = []
  for h, w in ((48, 64), (40, 40), (72, 56)):
    image = np.full((h, w, 3), (200, 160, 150), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    image[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2] = (70, 45, 35)
    photos.append(np.clip(image + rng.integers(0, 6, image.shape), 0, 255).astype(np.uint8))
  return photos


@pytest.fixture(scope="module")
def data(tiny_data_dir, tiny_dataset, tmp_path_factory):
  return pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8,
                              artifact_dir=str(tmp_path_factory.mktemp("artifacts")))


@pytest.fixture(scope="module")
def pipeline_one(data, tmp_path_factory):
  """Pipeline 1 from library calls: workdirs of the self-learned U-Net, LeNet-5 on raw images and
  LeNet-5 on its lesion crops, with their metrics."""
  root = tmp_path_factory.mktemp("pipeline1")
  unet = segmentation.SegmenterConfig(input=data, labels="kmeans", run=RunConfig(num_steps=4, eval_every=2, log_every=2),
                                      model=segmentation.SegmenterModelConfig(features=4, levels=2))
  seg_dir = str(root / "unet")
  seg_metrics = runner.run(segmentation.SegmentationTask(unet), seg_dir)
  lenet = classification.ClassifierConfig(input=data, run=RunConfig(num_steps=4, eval_every=2, log_every=2))
  raw_dir, crops_dir = str(root / "lenet_raw"), str(root / "lenet_crops")
  raw_metrics = runner.run(classification.ClassificationTask(lenet), raw_dir)
  crops = classification.ClassifierConfig(input=data, run=RunConfig(num_steps=4, eval_every=2, log_every=2), source="crops",
                                          crop=classification.LesionCropConfig(segmenter_workdir=seg_dir))
  crop_metrics = runner.run(classification.ClassificationTask(crops), crops_dir)
  return {"unet": (seg_dir, seg_metrics), "raw": (raw_dir, raw_metrics), "crops": (crops_dir, crop_metrics)}


@pytest.fixture(scope="module")
def purified_classifier(data, tmp_path_factory):
  """Pipeline 3's classifier on purified input, from library calls."""
  root = tmp_path_factory.mktemp("pipeline3")
  inpainter = inpainting.InpainterConfig(input=data, model=inpainting.InpainterModelConfig(features=4, levels=2),
                                         run=RunConfig(num_steps=2, eval_every=2, log_every=2), finetune_steps=2)
  inpainter_dir = str(root / "inpainter")
  inpainting.train_two_phase(inpainter, inpainter_dir)
  config = classification.ClassifierConfig(input=data, run=RunConfig(num_steps=4, eval_every=2, log_every=2), source="purified",
                                           purify=classification.PurifyConfig(inpainter_workdir=inpainter_dir))
  cls_dir = str(root / "lenet_purified")
  return inpainter_dir, cls_dir, runner.run(classification.ClassificationTask(config), cls_dir)


def test_no_command_line_code_was_needed():
  # This module imports none of experiments/ (checked in its source), and neither does the library.
  import ast  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  files = [__file__] + [os.path.join(d, f) for d, _, names in os.walk(os.path.join(root, "lesion_jax"))
                        for f in names if f.endswith(".py")]
  for path in files:
    for node in ast.walk(ast.parse(open(path).read())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not [n for n in names if n == "experiments" or n.startswith("experiments.")], path


def test_pipeline_one_trains_on_pseudo_masks_and_classifies_crops(pipeline_one):
  seg_dir, seg_metrics = pipeline_one["unet"]
  unet = runner.load(seg_dir, segmentation.SegmentationTask)
  assert unet.config.labels == "kmeans" and unet.config.mask_artifacts  # trained on the stored pseudo-masks
  assert 0.0 <= seg_metrics["test/jaccard"] <= 1.0  # scored against the manual masks
  crops_dir, crop_metrics = pipeline_one["crops"]
  task = runner.load(crops_dir, classification.ClassificationTask)
  assert task.source == "crops" and task.config.image_artifacts  # the crops it read, recorded
  for key in ("test/accuracy", "test/roc_auc"):
    assert key in crop_metrics and key in pipeline_one["raw"][1]


def test_predict_replays_the_lesion_crops(pipeline_one):
  photos = _photos()
  task, state = runner.predictor(pipeline_one["crops"][0])
  assert task.predicts == {"probabilities", "mask"}
  records = task.predict_images(state, photos)
  seg_task, seg_state = runner.predictor(pipeline_one["unet"][0])
  masks = [r["mask"] for r in seg_task.predict_images(seg_state, photos)]
  for photo, record, mask in zip(photos, records, masks):
    assert record["mask"].shape == photo.shape[:2] and record["mask"].dtype == bool
    np.testing.assert_array_equal(record["mask"], mask)  # the classifier's own segmenter's mask
    assert record["probabilities"].shape == (2,) and record["probabilities"].sum() == pytest.approx(1.0, abs=1e-5)
  # The probabilities are those of the crops the segmenter's masks make, not of the whole photos.
  raw = task.classify_images(state, photos)
  assert not np.allclose(np.stack(raw), np.stack([r["probabilities"] for r in records]))


def test_predict_on_raw_input_classifies_the_photos_themselves(pipeline_one):
  photos = _photos()
  task, state = runner.predictor(pipeline_one["raw"][0])
  assert task.predicts == {"probabilities"}
  records = task.predict_images(state, photos)
  np.testing.assert_allclose(np.stack([r["probabilities"] for r in records]),
                             np.stack(task.classify_images(state, photos)), atol=1e-6)


def test_pipeline_three_classifier_reads_and_predicts_purified_images(purified_classifier):
  inpainter_dir, cls_dir, metrics = purified_classifier
  assert "test/accuracy" in metrics
  task, state = runner.predictor(cls_dir)
  assert task.source == "purified" and task.predicts == {"probabilities", "purified"}
  photos = _photos()
  photos[0][10:12, :] = 5  # a dark hair across the first photo
  records = task.predict_images(state, photos)
  inpainter, inpainter_state = runner.predictor(inpainter_dir)
  purified = inpainter.predict_images(inpainter_state, photos, occlusion=task.config.purify.occlusion)
  for photo, record, expected in zip(photos, records, purified):
    assert record["purified"].shape == photo.shape and record["purified"].dtype == np.uint8
    np.testing.assert_array_equal(record["purified"], expected["purified"])
  np.testing.assert_allclose(np.stack([r["probabilities"] for r in records]),
                             np.stack(task.classify_images(state, [r["purified"] for r in records])), atol=1e-6)


def test_the_inpainter_purifies_photos_and_keeps_the_unoccluded_pixels(purified_classifier):
  inpainter, state = runner.predictor(purified_classifier[0])
  assert inpainter.config.finetune_from  # the final run is the fine-tuned one
  photo = _photos()[2]
  photo[30:32, 5:50] = 0
  record, = inpainter.predict_images(state, [photo])
  changed = np.any(record["purified"] != photo, axis=-1)
  holes = inpainting.occlusion_lib.detect_occlusions(photo, inpainter.config.occlusion)
  assert not changed[~holes].any()  # only detected occlusions are filled
  assert record["scores"]["occluded_fraction"] == pytest.approx(holes.mean())


def test_cross_validated_folds_predict_as_one_averaged_model(data, tmp_path):
  config = classification.ClassifierConfig(input=data, run=RunConfig(num_steps=2, eval_every=2, log_every=2, val_split=""), folds=2)
  runner.run(classification.ClassificationTask(config), str(tmp_path))
  task, states = runner.predictor(str(tmp_path))
  assert isinstance(states, tuple) and len(states) == 2
  photos = _photos()
  averaged = np.stack([r["probabilities"] for r in task.predict_images(states, photos)])
  each = [np.stack(task.classify_images(s, photos)) for s in states]
  np.testing.assert_allclose(averaged, np.mean(each, axis=0), atol=1e-6)


def test_a_gan_run_refuses_to_predict_with_its_reason():
  task = gan.GANTask(gan.GANConfig())
  assert not task.predicts
  with pytest.raises(base.PredictionUnsupported, match="takes no photos"):
    task.predict_images(None, _photos())


def test_the_predict_command_replays_purification_on_photos(purified_classifier, tmp_path):
  # The command line serves the same records: the purified photo beside the class probabilities.
  import csv  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import cv2  # pylint: disable=g-import-not-at-top
  photos = tmp_path / "photos"
  photos.mkdir()
  for i, photo in enumerate(_photos()[:2]):
    cv2.imwrite(str(photos / f"p{i}.png"), photo[..., ::-1])
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={purified_classifier[1]}",
                         f"--images={photos}/*.png", f"--out={out}"], cwd=repo, capture_output=True, text=True,
                        timeout=600, check=False, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.DictReader(open(out / "predictions.csv")))
  assert [r["status"] for r in rows] == ["ok", "ok"]
  for row in rows:
    assert float(row["p_benign"]) + float(row["p_malignant"]) == pytest.approx(1.0, abs=1e-4)
    assert os.path.basename(row["purified"]).endswith("_purified.png") and os.path.exists(row["purified"])
    assert "mask" not in row  # a purified-input classifier writes no lesion mask
