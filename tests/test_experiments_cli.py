"""End to end through the command lines: train a few steps → checkpoints → evaluate from the
checkpoint with identical metrics → resume training → predict on files, one of them corrupt."""
import csv
import glob
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Short aliases and dotted paths name the same config fields.
TINY_FLAGS = ["--image_size=32", "--batch_size=8", "--model.features=4", "--levels=2", "--eval_every=2",
              "--log_every=2"]


ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")


class _Commands:
  """`python -m module args...` through tests/cli_server.py: the same run in a forked child of a
  process that has the libraries imported already (saves ~10 s of imports per command)."""

  def __init__(self, scratch):
    self._scratch, self._count = scratch, 0
    self._server = subprocess.Popen([sys.executable, "-m", "tests.cli_server"], cwd=REPO, env=ENV,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert json.loads(self._server.stdout.readline()) == {"ready": True}

  def run(self, module, *args, timeout=600, check=False):
    self._count += 1
    out, err = (os.path.join(self._scratch, f"{self._count}.{n}") for n in ("out", "err"))
    request = {"module": module, "args": list(args), "cwd": REPO, "stdout": out, "stderr": err,
               "timeout": timeout}
    self._server.stdin.write(json.dumps(request) + "\n")
    self._server.stdin.flush()
    reply = json.loads(self._server.stdout.readline())
    if reply["timed_out"]:
      raise subprocess.TimeoutExpired([module, *args], timeout)
    proc = subprocess.CompletedProcess([module, *args], reply["returncode"], open(out).read(), open(err).read())
    if check and proc.returncode != 0:
      raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc

  def close(self):
    self._server.stdin.close()
    self._server.wait(timeout=60)


_commands = None


@pytest.fixture(scope="module", autouse=True)
def commands(tmp_path_factory):
  global _commands
  _commands = _Commands(str(tmp_path_factory.mktemp("cli")))
  yield _commands
  _commands.close()


def run(module, *args, check=True):
  return _commands.run(module, *args, check=check)


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tiny_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  proc = run("experiments.train_segmenter", f"--workdir={workdir}", f"--dataset={tiny_dataset}",
             f"--data_dir={tiny_data_dir}", "--num_steps=4", *TINY_FLAGS)
  return workdir, proc


def test_train_writes_the_run_record(trained):
  workdir, proc = trained
  for name in ("config.json", "metrics.json", "history.json", "figures/test_overlays.png",
               "figures/curves.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))  # at least one step saved
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  for key in ("test/jaccard", "test/jaccard_thresholded", "test/dice", "test/sensitivity",
              "test/specificity", "test/accuracy"):
    assert 0.0 <= metrics[key] <= 1.0, key
  assert metrics["test/num_images"] == 16
  record = json.load(open(os.path.join(workdir, "config.json")))
  assert record["task"] == "segmentation"
  config = record["config"]
  assert config["run"]["num_steps"] == 4 and config["input"]["dataset"] == "synthetic_lesions/tiny"
  assert config["model"]["features"] == 4 and config["model"]["levels"] == 2
  assert "img/s" in proc.stderr and "ETA" in proc.stderr  # the progress line


def test_evaluate_from_checkpoint_reproduces_metrics(trained):
  workdir, _ = trained
  run("experiments.evaluate", f"--workdir={workdir}", "--split=test")
  train_metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  eval_metrics = json.load(open(os.path.join(workdir, "eval_test.json")))
  for key, value in train_metrics.items():
    assert eval_metrics[key] == value, key  # identical, not approximately equal
  assert os.path.exists(os.path.join(workdir, "figures", "eval_test_overlays.png"))
  # Flip test-time augmentation scores into files of its own, leaving eval_test.json as it was.
  run("experiments.evaluate", f"--workdir={workdir}", "--split=test", "--tta")
  tta_metrics = json.load(open(os.path.join(workdir, "eval_test_tta.json")))
  assert tta_metrics["tta"] is True and tta_metrics["test/num_images"] == 16
  assert 0.0 <= tta_metrics["test/jaccard"] <= 1.0
  assert json.load(open(os.path.join(workdir, "eval_test.json"))) == eval_metrics
  # An ensemble of a run with itself averages identical maps: the run's own scores.
  run("experiments.evaluate", f"--workdir={workdir}", "--split=test", f"--ensemble_with={workdir}")
  ensemble = json.load(open(os.path.join(workdir, "eval_test_ens2.json")))
  assert ensemble["ensemble_with"] == [workdir]
  assert ensemble["test/jaccard"] == pytest.approx(eval_metrics["test/jaccard"], abs=1e-6)


def test_a_mistyped_flag_is_refused(tiny_data_dir, tmp_path):
  bad = run("experiments.train_segmenter", f"--workdir={tmp_path}", "--model.featurs=4", check=False)
  assert bad.returncode != 0 and "model.featurs" in bad.stderr
  assert not os.path.exists(tmp_path / "config.json")


def test_rerun_resumes_from_latest_checkpoint(trained, tiny_data_dir, tiny_dataset):
  workdir, _ = trained
  proc = run("experiments.train_segmenter", f"--workdir={workdir}", f"--dataset={tiny_dataset}",
             f"--data_dir={tiny_data_dir}", "--num_steps=6", *TINY_FLAGS)
  assert "Resumed from" in proc.stderr and "at step 4" in proc.stderr
  assert "step 6/6" in proc.stderr and "step 2/6" not in proc.stderr
  assert "6" in os.listdir(os.path.join(workdir, "checkpoints"))
  # Changing a flag that defines the run is refused instead of silently mixing runs.
  bad = run("experiments.train_segmenter", f"--workdir={workdir}", f"--dataset={tiny_dataset}",
            f"--data_dir={tiny_data_dir}", "--num_steps=6", "--loss=dice", *TINY_FLAGS, check=False)
  assert bad.returncode != 0 and "other flags" in bad.stderr


def test_predict_segments_good_files_and_reports_bad_ones(trained, tmp_path):
  workdir, _ = trained
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  cv2.imwrite(str(images / "a_good.png"), rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
  cv2.imwrite(str(images / "b_good.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
  (images / "c_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
  cv2.imwrite(str(images / "d_gray.png"), rng.integers(0, 255, (48, 48), dtype=np.uint8))
  cv2.imwrite(str(images / "e_rgba.png"), rng.integers(0, 255, (48, 48, 4), dtype=np.uint8))
  cv2.imwrite(str(images / "f_tiny.png"), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
  out = tmp_path / "out"
  # A pixel budget smaller than one image: each chunk holds one image (memory bounded by pixels).
  proc = run("experiments.predict", f"--workdir={workdir}", f"--images={images}/*", f"--out={out}",
             "--chunk_megapixels=0.002")
  assert "1/6 files done" in proc.stderr and "6/6 files done" in proc.stderr
  rows = {os.path.basename(r["file"]): r for r in csv.DictReader(open(out / "predictions.csv"))}
  assert len(rows) == 6
  for name, (h, w) in {"a_good.png": (40, 56), "b_good.jpg": (64, 64)}.items():
    assert rows[name]["status"] == "ok"
    mask = cv2.imread(str(out / (name.split(".")[0] + ".png")), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
    assert os.path.exists(out / (name.split(".")[0] + "_overlay.png"))
    assert int(rows[name]["lesion_pixels"]) == int((mask > 0).sum())
  expected = {"c_corrupt.jpg": "not a decodable image", "d_gray.png": "grayscale",
              "e_rgba.png": "alpha channel", "f_tiny.png": "smaller than the minimum"}
  for name, reason in expected.items():
    assert rows[name]["status"] == "error" and reason in rows[name]["error"], rows[name]
    assert name in rows[name]["error"]  # the message names the file
    assert name in proc.stderr  # and the log says so too
  assert "Predicted 2 of 6 images" in proc.stdout


def test_predict_tta_is_flip_equivariant_and_the_fallback_finds_a_lesion(trained, tmp_path):
  workdir, _ = trained
  rng = np.random.default_rng(1)
  image = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (7, 7), 2)
  cv2.imwrite(str(tmp_path / "a.png"), image)
  cv2.imwrite(str(tmp_path / "b_mirror.png"), image[:, ::-1])
  out = tmp_path / "out"
  run("experiments.predict", f"--workdir={workdir}", f"--images={tmp_path}/*.png", f"--out={out}",
      "--tta", "--tta_scales=32,48", "--fallback")
  a = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
  b = cv2.imread(str(out / "b_mirror.png"), cv2.IMREAD_UNCHANGED)
  assert a.shape == (48, 64) and a.any()  # never empty with the fallback
  np.testing.assert_array_equal(a, b[:, ::-1])  # the mirrored image's mask is the mirrored mask
  bad = run("experiments.predict", f"--workdir={workdir}", f"--images={tmp_path}/a.png", f"--out={tmp_path}/o2",
            "--tta", "--tta_scales=30", check=False)
  assert bad.returncode != 0 and "--tta_scales=[30]" in bad.stderr


@pytest.fixture(scope="module")
def classifier(trained, tiny_data_dir, tiny_dataset, tmp_path_factory):
  segmenter_dir, _ = trained
  workdir = str(tmp_path_factory.mktemp("cls"))
  run("experiments.train_classifier", f"--workdir={workdir}", f"--dataset={tiny_dataset}",
      f"--data_dir={tiny_data_dir}", "--image_size=32", "--batch_size=8", "--num_steps=2",
      "--eval_every=2", "--log_every=1", "--model=lenet5", "--source=crops",
      f"--segmenter_workdir={segmenter_dir}", "--folds=2", "--balanced")
  return workdir


def test_classifier_cross_validation_record(classifier):
  metrics = json.load(open(os.path.join(classifier, "metrics.json")))
  assert metrics["folds"] == 2 and metrics["cv/num_examples"] == 64  # every train image held out once
  for key in ("cv/accuracy", "cv/f1", "cv/misclassification_rate", "cv/sensitivity", "cv/specificity",
              "cv/precision", "cv/roc_auc", "test/accuracy_fold_mean", "train/accuracy_fold_mean"):
    assert key in metrics, key
  assert len(metrics["cv/confusion_matrix"]) == 2
  for fold in (0, 1):
    assert os.path.exists(os.path.join(classifier, f"fold_{fold}", "metrics.json"))
  assert os.path.exists(os.path.join(classifier, "figures", "cv_roc.png"))


def test_predict_adds_measurements_and_class_probabilities(trained, classifier, tmp_path):
  workdir, _ = trained
  rng = np.random.default_rng(1)
  image = np.full((48, 48, 3), (200, 160, 150), np.uint8)
  cv2.circle(image, (24, 24), 10, (60, 40, 30), -1)
  cv2.imwrite(str(tmp_path / "lesion.png"), (image + rng.integers(0, 5, image.shape)).astype(np.uint8))
  out = tmp_path / "out"
  run("experiments.predict", f"--workdir={workdir}", f"--images={tmp_path}/*.png", f"--out={out}",
      f"--classifier_workdir={classifier}")
  row = next(csv.DictReader(open(out / "predictions.csv")))
  assert row["status"] == "ok"
  assert float(row["p_benign"]) + float(row["p_malignant"]) == pytest.approx(1.0, abs=1e-4)
  assert row["predicted"] in ("benign", "malignant")
  for key in ("area", "perimeter", "diameter", "major_axis", "asymmetry_major", "compactness", "num_colours"):
    assert row[key] != "", key
  assert float(row["area"]) == pytest.approx(float(row["lesion_pixels"]))


def test_a_classifier_workdir_evaluates_and_predicts(classifier, tmp_path):
  # evaluate and predict dispatch on the task recorded in config.json: a classifier run works too.
  fold = os.path.join(classifier, "fold_0")
  run("experiments.evaluate", f"--workdir={fold}", "--split=test")
  fold_metrics = json.load(open(os.path.join(fold, "metrics.json")))
  scores = json.load(open(os.path.join(fold, "eval_test.json")))
  assert scores["test/accuracy"] == fold_metrics["test/accuracy"]
  assert scores["test/roc_auc"] == fold_metrics["test/roc_auc"]
  assert os.path.exists(os.path.join(fold, "figures", "eval_test_confusion.png"))
  # Class probabilities average over states as segmentation maps do: a run with itself scores as itself.
  run("experiments.evaluate", f"--workdir={fold}", "--split=test", f"--ensemble_with={fold}")
  ensemble = json.load(open(os.path.join(fold, "eval_test_ens2.json")))
  assert ensemble["test/roc_auc"] == pytest.approx(fold_metrics["test/roc_auc"], abs=1e-6)
  image = np.full((48, 48, 3), (200, 160, 150), np.uint8)
  cv2.circle(image, (24, 24), 10, (60, 40, 30), -1)
  cv2.imwrite(str(tmp_path / "lesion.png"), image)
  proc = run("experiments.predict", f"--workdir={classifier}", f"--images={tmp_path}/*.png",
             f"--out={tmp_path / 'out'}")
  row = next(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
  # Trained on lesion crops: its own segmenter (from its config) made the crop and the mask.
  assert row["predicted"] in ("benign", "malignant") and int(row["lesion_pixels"]) > 0
  assert "Predicted 1 of 1 images" in proc.stdout


def test_bad_flags_are_refused_by_name_before_anything_is_written(trained, tiny_data_dir, tmp_path):
  workdir, _ = trained
  # One refusal through the command line (a one-line error, nothing written); the checks behind the
  # others are the same code path, so they are tested in-process.
  for flags, expected in ((["--image_size=50"], "--input.image_size=50: a U-Net with --model.levels=4 needs a multiple of 16"),
                          (["--holdout=1.5"], "--run.holdout=1.5: must be in [0, 1)"),
                          (["--geometry=crop"], "geometry"),
                          (["--loss=focal"], "--loss='focal'")):
    run_dir = tmp_path / flags[0].split("=")[0].strip("-")
    proc = run("experiments.train_segmenter", f"--workdir={run_dir}", f"--data_dir={tiny_data_dir}",
               "--dataset=synthetic_lesions/tiny", *flags, check=False)
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr  # one line naming the flag, not a stack
    assert not os.path.exists(run_dir / "config.json")  # so the corrected command is not refused
  from lesion_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  from lesion_jax.train import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  for data, splits, expected in (
      (pipeline.InputConfig(dataset="no_such_set", data_dir=tiny_data_dir), [], "`input.dataset`='no_such_set': no such dataset"),
      (pipeline.InputConfig(dataset="synthetic_lesions/tiny", data_dir=tiny_data_dir), [("run.test_split", "tset")],
       "`run.test_split`='tset'")):
    with pytest.raises(config_lib.ConfigError, match=re.escape(expected)):
      segmentation.SegmentationTask(segmentation.SegmenterConfig(input=data)).check(mesh, splits)
  proc = run("experiments.evaluate", f"--workdir={workdir}", "--checkpoint=newest", check=False)
  assert proc.returncode != 0 and "--checkpoint='newest'" in proc.stderr


def test_predict_never_overwrites_inputs_or_another_files_outputs(trained, tmp_path, damaged_jpeg):
  workdir, _ = trained
  folder = tmp_path / "photos"
  folder.mkdir()
  rng = np.random.default_rng(2)
  for name in ("photo.png", "x.jpg", "x_overlay.jpg"):
    cv2.imwrite(str(folder / name), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
  original = (folder / "photo.png").read_bytes()
  (folder / "dir.jpg").mkdir()  # a directory and a broken link matched by the glob
  os.symlink(folder / "gone.jpg", folder / "link.jpg")
  (folder / "damaged.jpg").write_bytes(damaged_jpeg)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  phone = Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))  # stored landscape
  exif = phone.getexif()
  exif[0x0112] = 6  # shown rotated by 90 degrees: portrait
  phone.save(folder / "phone.jpg", exif=exif.tobytes())
  proc = run("experiments.predict", f"--workdir={workdir}", f"--images={folder}/*", f"--out={folder}")
  rows = {os.path.basename(r["file"]): r for r in csv.DictReader(open(folder / "predictions.csv"))}
  assert (folder / "photo.png").read_bytes() == original  # the input is untouched
  assert "would overwrite the input" in rows["photo.png"]["error"]
  assert rows["x.jpg"]["status"] == "ok" and "also written for" in rows["x_overlay.jpg"]["error"]
  assert "is a directory" in rows["dir.jpg"]["error"] and "broken symbolic link" in rows["link.jpg"]["error"]
  assert "corrupt JPEG data" in rows["damaged.jpg"]["error"]
  assert rows["phone.jpg"]["notes"] == "EXIF orientation 6 applied"
  assert cv2.imread(str(folder / "phone.png"), cv2.IMREAD_UNCHANGED).shape == (64, 40)  # as displayed
  assert "Predicted 2 of 7 images" in proc.stdout
  again = run("experiments.predict", f"--workdir={workdir}", f"--images={folder}/x.jpg", f"--out={folder}",
              check=False)
  assert again.returncode != 0 and "--overwrite" in again.stderr
  assert len(list(csv.DictReader(open(folder / "predictions.csv")))) == 7  # the earlier table stands
  unwritable = run("experiments.predict", f"--workdir={workdir}", f"--images={folder}/x.jpg",
                   f"--out={folder / 'x.jpg' / 'out'}", check=False)
  assert unwritable.returncode != 0 and "cannot write there" in unwritable.stderr
  assert "Traceback" not in unwritable.stderr


def test_mask_alexnet_report_tables_from_finished_runs(trained, classifier, tmp_path):
  segmenter, _ = trained
  out = tmp_path / "report"
  proc = run("experiments.mask_alexnet_report", f"--workdir={out}", f"--segmenters=unet:{segmenter}",
             f"--classifiers=lenet:{classifier}")
  report = json.load(open(out / "report.json"))
  seg = json.load(open(os.path.join(segmenter, "metrics.json")))
  confusion = report["segmentation"]["unet"]["pixel_confusion"]
  assert confusion == seg["test/pixel_confusion"] and confusion["lesion_as_lesion"] >= 0
  assert report["segmentation"]["unet"]["jaccard"] == seg["test/jaccard"]
  cv = json.load(open(os.path.join(classifier, "metrics.json")))
  row = report["classification"]["lenet"]
  assert row["folds"] == 2 and row["test/accuracy"] == [cv["test/accuracy_fold_mean"], cv["test/accuracy_fold_std"]]
  text = (out / "report.md").read_text()
  assert "Table I" in text and "Table II" in text and "| lenet (2 folds) |" in text
  assert text in proc.stdout
  missing = run("experiments.mask_alexnet_report", f"--workdir={tmp_path / 'x'}",
                f"--classifiers=raw:{tmp_path / 'nowhere'}", check=False)
  assert missing.returncode != 0 and "--classifiers=raw:" in missing.stderr and "Traceback" not in missing.stderr
  assert not os.path.exists(tmp_path / "x")


def test_pretrained_start_abcd_baseline_and_ensemble(trained, classifier, tiny_data_dir, tiny_dataset, tmp_path):
  segmenter, _ = trained
  data = [f"--dataset={tiny_dataset}", f"--data_dir={tiny_data_dir}"]
  source = os.path.join(classifier, "fold_0")  # a finished LeNet-5 run at 32 px
  tuned = str(tmp_path / "tuned")
  proc = run("experiments.train_classifier", f"--workdir={tuned}", *data, "--image_size=32", "--batch_size=8",
             "--num_steps=2", "--eval_every=2", "--model=lenet5", f"--init_from={source}")
  assert re.search(r"Initial weights from .*fold_0: \d+ leaves copied, kept fresh: none", proc.stderr)
  wrong = run("experiments.train_classifier", f"--workdir={tmp_path / 'wrong'}", *data, "--image_size=32",
              "--model=alexnet", f"--init_from={source}", check=False)
  assert wrong.returncode != 0 and "not the alexnet" in wrong.stderr and not os.path.exists(tmp_path / "wrong")

  baseline = tmp_path / "abcd"
  run("experiments.abcd_classifier", f"--workdir={baseline}", f"--segmenter_workdir={segmenter}", *data,
      "--folds=2", "--crop_size=32", "--fallback", f"--artifact_dir={tmp_path / 'art'}")
  # Its masks went through the segmenter's fallback, stored apart from plain crops.
  stores = glob.glob(str(tmp_path / "art" / "**" / "*-s32-m0.1-fallback"), recursive=True)
  assert len(stores) == 1 and glob.glob(os.path.join(stores[0], "*.json")), stores
  scores = json.load(open(baseline / "metrics.json"))
  assert scores["model"] in scores["candidates_cv_roc_auc"]
  assert scores["cv/roc_auc"] == pytest.approx(scores["candidates_cv_roc_auc"][scores["model"]])
  assert scores["cv/num_examples"] == 64 and scores["test/num_examples"] + scores["test/skipped"] > 0
  assert os.path.exists(baseline / "figures" / "test_roc.png")
  # --masks=kmeans measures the K-means pseudo-masks instead: no segmenter run needed; here with the
  # colour statistics of each image beside its measurements.
  on_kmeans = tmp_path / "abcd_kmeans"
  run("experiments.abcd_classifier", f"--workdir={on_kmeans}", "--masks=kmeans", *data, "--folds=2",
      "--crop_size=32", f"--artifact_dir={tmp_path / 'art'}", "--features=abcd+colour")
  [kstore] = glob.glob(str(tmp_path / "art" / "**" / "lesion_crop" / "kmeans-*"), recursive=True)
  from lesion_jax.artifacts import kmeans, stage, store  # pylint: disable=g-import-not-at-top
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from lesion_jax.eval import measure  # pylint: disable=g-import-not-at-top
  example = next(iter(stage.read_examples(pipeline.get_builder(tiny_dataset, tiny_data_dir), "test",
                                          features=("image",))))
  record = json.load(open(os.path.join(kstore, store.safe_name(example["id"]) + ".json")))
  expect = measure.measure_lesion(kmeans.kmeans_pseudo_mask(example["image"]).mask, example["image"])
  assert record["measurements"]["area"] == pytest.approx(expect["area"])
  both = json.load(open(on_kmeans / "metrics.json"))
  from lesion_jax.eval import abcd, colour_features  # pylint: disable=g-import-not-at-top
  assert both["cv/num_examples"] == 64 and both["features"] == [*abcd.FEATURE_NAMES, *colour_features.FEATURE_NAMES]
  bad = run("experiments.abcd_classifier", f"--workdir={tmp_path / 'nomasks'}", *data, check=False)
  assert bad.returncode != 0 and "--masks=kmeans" in bad.stderr and "Traceback" not in bad.stderr

  ensemble = tmp_path / "ensemble"
  run("experiments.ensemble", f"--workdir={ensemble}", f"--members=tuned:{tuned},abcd:{baseline}")
  members = [json.load(open(os.path.join(d, "predictions.json")))["test/_predictions"] for d in (tuned, baseline)]
  mean = json.load(open(ensemble / "predictions.json"))["test/_predictions"]
  first = mean["ids"][0]
  expect = np.mean([m["probs"][m["ids"].index(first)] for m in members], axis=0)
  np.testing.assert_allclose(mean["probs"][0], expect, rtol=1e-6)
  assert "test/roc_auc" in json.load(open(ensemble / "metrics.json"))
  assert json.load(open(ensemble / "provenance.json"))["invocations"][0]["command"]
  # A classifier evaluated with --tta saves its probabilities; an ensemble member reads them by tag.
  run("experiments.evaluate", f"--workdir={tuned}", "--split=test", "--tta")
  saved = json.load(open(os.path.join(tuned, "eval_test_tta_predictions.json")))["test_tta/_predictions"]
  assert json.load(open(os.path.join(tuned, "eval_test_tta.json")))["test/num_examples"] == len(saved["ids"])
  run("experiments.ensemble", f"--workdir={tmp_path / 'e_tta'}", f"--members=tta:{tuned}@test_tta,abcd:{baseline}")
  mean = json.load(open(tmp_path / "e_tta" / "predictions.json"))["test/_predictions"]
  first = mean["ids"][0]
  expect = (np.asarray(saved["probs"][saved["ids"].index(first)])
            + np.asarray(members[1]["probs"][members[1]["ids"].index(first)])) / 2
  np.testing.assert_allclose(mean["probs"][0], expect, rtol=1e-6)
  # The same workdir keeps another split's ensemble beside it (here the abcd baseline's out-of-fold @cv
  # with the network's Training predictions, joined by id).
  run("experiments.ensemble", f"--workdir={tmp_path / 'e_tta'}", "--split=train", f"--members=tta:{tuned}@train,abcd:{baseline}@cv")
  both = json.load(open(tmp_path / "e_tta" / "metrics.json"))
  assert "test/roc_auc" in both and "train/roc_auc" in both
  assert set(json.load(open(tmp_path / "e_tta" / "config.json"))["config"]["members_by_split"]) == {"test", "train"}
  page = tmp_path / "ensembles.md"
  run("experiments.report", f"--runs=tta and abcd:{tmp_path / 'e_tta'}", f"--out={page}", "--metrics=train/roc_auc,test/roc_auc")
  row = next(line for line in page.read_text().splitlines() if line.startswith("| tta and abcd"))
  assert "(and 1 more: one per split)" in row and "resumed" not in row
  untagged = run("experiments.ensemble", f"--workdir={tmp_path / 'e3'}", f"--members=x:{tuned}@test_flipped",
                 check=False)
  assert untagged.returncode != 0 and "experiments.evaluate" in untagged.stderr and "Traceback" not in untagged.stderr
  missing = run("experiments.ensemble", f"--workdir={tmp_path / 'e2'}", f"--members=x:{tmp_path / 'nowhere'}",
                check=False)
  assert missing.returncode != 0 and "--members=x:" in missing.stderr and "Traceback" not in missing.stderr


def test_colour_baseline_three_way_needs_no_masks_and_records_its_provenance(tiny_data_dir, tiny_dataset, tmp_path):
  from lesion_jax.eval import colour_features  # pylint: disable=g-import-not-at-top
  data = [f"--dataset={tiny_dataset}", f"--data_dir={tiny_data_dir}"]
  baseline = tmp_path / "colour"
  # No --segmenter_workdir, no --masks: colour statistics of the images themselves.
  run("experiments.abcd_classifier", f"--workdir={baseline}", *data, "--features=colour", "--target=label",
      "--folds=2", "--model=logistic")
  scores = json.load(open(baseline / "metrics.json"))
  assert scores["features"] == list(colour_features.FEATURE_NAMES) and scores["model"].startswith("logistic")
  assert scores["cv/num_examples"] == 64 and scores["test/num_examples"] == 16 and scores["test/skipped"] == 0
  # Three classes of synthetic_lesions: ISIC 2017 Part 3's scores, and the calibration error.
  assert scores["test/class_names"] == ["nevus", "melanoma", "seborrheic_keratosis"]
  for key in ("test/melanoma_roc_auc", "test/keratosis_roc_auc", "test/mean_roc_auc", "test/ece", "cv/mean_roc_auc"):
    assert isinstance(scores[key], float), key
  assert set(scores["test/melanoma_specificity_at_sensitivity"]) == {"0.82", "0.89", "0.95"}
  for figure in ("test_roc.png", "test_reliability.png", "test_confusion.png"):
    assert os.path.exists(baseline / "figures" / figure), figure
  # provenance.json, as the train verb writes it: experiments.report makes a row of the run.
  record = json.load(open(baseline / "provenance.json"))
  assert "--features=colour" in record["command"] and record["invocations"][0]["finished"]
  page = tmp_path / "baseline.md"
  run("experiments.report", f"--out={page}", f"--runs=colour:{baseline}",
      "--metrics=test/melanoma_roc_auc,test/keratosis_roc_auc,test/mean_roc_auc,test/balanced_accuracy")
  row = next(line for line in page.read_text().splitlines() if line.startswith("| colour |"))
  assert f"{scores['test/mean_roc_auc']:.4g}" in row and "--features=colour" in row
  bad = run("experiments.abcd_classifier", f"--workdir={tmp_path / 'bad'}", *data, "--features=shape", check=False)
  assert bad.returncode != 0 and "--features='shape'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("module,recipe,extra", [
    ("experiments.train_segmenter", "isic2017_segmenter.flags", ["--model.features=4", "--levels=2"]),
    ("experiments.train_classifier", "isic2017_classifier.flags", []),
])
def test_recipes_run_and_later_flags_override_them(module, recipe, extra, tiny_data_dir, tiny_dataset, tmp_path):
  """README's best measured ISIC configurations ship as absl flagfiles; each parses with its
  experiment's flags, trains a tiny run, and a flag after it wins."""
  path = os.path.join(REPO, "experiments", "recipes", recipe)
  given = dict((line.strip()[2:] + "=True").split("=")[:2] for line in open(path) if line.startswith("--"))
  workdir = tmp_path / "run"
  run(module, f"--flagfile={path}", f"--workdir={workdir}", f"--dataset={tiny_dataset}",
      f"--data_dir={tiny_data_dir}", "--image_size=32", "--batch_size=8", "--num_steps=2", "--eval_every=2",
      "--test_split=test", *extra)
  recorded = json.load(open(workdir / "config.json"))
  flat = {}

  def walk(tree, prefix=""):
    for key, value in tree.items():
      if isinstance(value, dict):
        walk(value, prefix + key + ".")
      else:
        flat.setdefault(key, value)
        flat[prefix + key] = value
  walk(recorded["config"])
  assert flat["image_size"] == 32 and flat["num_steps"] == 2  # overridden after the flagfile
  checked = [name for name in ("geometry", "color_constancy", "loss", "balanced") if name in given]
  assert len(checked) >= 2
  for name in checked:
    assert str(flat[name]) == given[name], name
  if "model" in given:
    assert flat["model.name"] == given["model"]


def test_report_row_of_several_seeds_gives_mean_range_and_summed_wall_time(tmp_path):
  """label:a+b makes one row of two runs of one config (seeds): each number is their mean with its
  range and count, the wall time their sum; a metric only one of them has says so."""
  def fake_run(name, auc, wall, commit, extra=None):
    workdir = tmp_path / name
    workdir.mkdir()
    json.dump({"test/mean_roc_auc": auc, "test/split": "validation", **(extra or {})}, open(workdir / "metrics.json", "w"))
    record = {"config_file": "cfg.py", "overrides": [], "command": f"python -m experiments.train --workdir={workdir}",
              "date": "2026-12-07 12:00 UTC", "commit": commit, "machine": "test", "wall_time_s": wall}
    json.dump({**record, "invocations": [{**record, "finished": True}]}, open(workdir / "provenance.json", "w"))
    return workdir
  a = fake_run("seed0", 0.80, 100.0, "aaa", {"test/ece": 0.1})
  b = fake_run("seed1", 0.84, 50.5, "bbb")
  page = tmp_path / "seeds.md"
  run("experiments.report", f"--out={page}", f"--runs=two seeds:{a}+{b},one:{a}", "--metrics=test/mean_roc_auc,test/ece,test/split")
  rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in page.read_text().splitlines() if line.startswith("| ")}
  seeds, one = rows["two seeds"], rows["one"]
  assert seeds[1] == "0.82 (0.8-0.84, 2 runs)" and seeds[2] == "0.1 (1 run)"
  assert one[1] == "0.8" and one[2] == "0.1" and seeds[3] == one[3] == "validation"  # text the runs share
  command, commit, wall = seeds[5], seeds[7], seeds[9].rstrip(" |")
  assert "the first of 2 runs" in command and commit == "aaa, bbb" and wall == "150.5"
  unrecorded = tmp_path / "unrecorded"  # a run without provenance.json: the row's cost is unknown, not a's + b's
  unrecorded.mkdir()
  json.dump({"test/mean_roc_auc": 0.5}, open(unrecorded / "metrics.json", "w"))
  run("experiments.report", f"--out={page}", f"--runs=three:{a}+{b}+{unrecorded}", "--metrics=test/mean_roc_auc")
  three = next(line.split(" | ") for line in page.read_text().splitlines() if line.startswith("| three"))
  assert three[-1].rstrip(" |") == "—" and three[5] == "aaa, bbb"
  missing = run("experiments.report", f"--out={page}", f"--runs=x:{a}+{tmp_path / 'nowhere'}", check=False)
  assert missing.returncode != 0 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr


def test_ensemble_learned_stack_fits_on_selection_and_scores_it_out_of_fold(tmp_path):
  """--combine=logistic: fitted on --fit_members (the selection split), scored there out of fold and on
  test after a fit on all of it; a workdir keeps one way of combining; the flags' misuse is named."""
  rng = np.random.default_rng(0)
  names = ["nevus", "melanoma", "keratosis"]

  def saved(labels, informative, split):
    logits = informative * np.eye(3)[labels] + rng.normal(0, 1.0 if informative else 3.0, (len(labels), 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"ids": [f"{split}{i}" for i in range(len(labels))], "labels": labels.tolist(), "probs": p.tolist()}

  selection, test = rng.integers(0, 3, 120), rng.integers(0, 3, 90)
  members = {}
  for name, informative in (("good", 1.5), ("noise", 0.0)):
    workdir = tmp_path / name
    workdir.mkdir()
    json.dump({"test/_predictions": saved(test, informative, "test")}, open(workdir / "predictions.json", "w"))
    json.dump({"test/class_names": names}, open(workdir / "metrics.json", "w"))
    json.dump({"selection/_predictions": saved(selection, informative, "selection")},
              open(workdir / "eval_selection_predictions.json", "w"))
    json.dump({"selection/class_names": names}, open(workdir / "eval_selection.json", "w"))
    members[name] = workdir
  on_selection = ",".join(f"{n}:{w}@selection" for n, w in members.items())
  stack = tmp_path / "stack"
  run("experiments.ensemble", f"--workdir={stack}", "--split=selection", "--combine=logistic",
      f"--members={on_selection}", f"--fit_members={on_selection}")
  run("experiments.ensemble", f"--workdir={stack}", "--split=test", "--combine=logistic",
      f"--members={','.join(f'{n}:{w}' for n, w in members.items())}", f"--fit_members={on_selection}")
  scores = json.load(open(stack / "metrics.json"))
  assert scores["selection/out_of_fold"] is True and scores["test/out_of_fold"] is False
  mean = tmp_path / "mean"  # the average of the same members, which the noise member drags down
  run("experiments.ensemble", f"--workdir={mean}", "--split=test", f"--members={','.join(f'{n}:{w}' for n, w in members.items())}")
  assert scores["test/roc_auc"] > json.load(open(mean / "metrics.json"))["test/roc_auc"] + 0.02
  assert json.load(open(stack / "config.json"))["config"]["combine"] == "logistic"
  mixed = run("experiments.ensemble", f"--workdir={stack}", "--split=test", f"--members=good:{members['good']}",
              check=False)
  assert mixed.returncode != 0 and "--combine=logistic ensemble" in mixed.stderr and "Traceback" not in mixed.stderr
  alone = run("experiments.ensemble", f"--workdir={tmp_path / 'x'}", "--combine=logistic",
              f"--members=good:{members['good']}", check=False)
  assert alone.returncode != 0 and "--fit_members" in alone.stderr and "Traceback" not in alone.stderr
  untagged = run("experiments.ensemble", f"--workdir={tmp_path / 'y'}", "--combine=logistic",
                 f"--members=good:{members['good']}", f"--fit_members=good:{members['good']}", check=False)
  assert untagged.returncode != 0 and "name:workdir@<tag>" in untagged.stderr and "Traceback" not in untagged.stderr
