"""A classifier's calibration (`calibrate`): the temperature fitted on its selection split after
training, the scores and figure it adds, and the calibrated probabilities of predict; on the tiny
synthetic set (a few LeNet-5 steps: what is checked is where the temperature comes from and goes,
not how good it is)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax import metrics
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.tasks import classification, runner
from lesion_jax.train import sharding


@pytest.fixture(scope="module")
def config(tiny_data_dir, tiny_dataset):
  data = pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8)
  # Selection on a quarter of the train split (run.holdout): the reported test split picks nothing.
  return classification.ClassifierConfig(input=data, label_key="label",
                                         run=RunConfig(num_steps=4, eval_every=2, log_every=2, holdout=0.25))


@pytest.fixture(scope="module")
def calibrated_run(config, tmp_path_factory):
  """A run trained without calibration, then the same run with `calibrate` (a change that resumes:
  nothing is retrained, the temperature is fitted and the final splits rescored)."""
  workdir = str(tmp_path_factory.mktemp("calibrated"))
  plain = runner.run(classification.ClassificationTask(config), workdir)
  calibrated = runner.run(classification.ClassificationTask(dataclasses.replace(config, calibrate=True)), workdir)
  return workdir, plain, calibrated


def test_the_temperature_is_fitted_on_the_selection_split_and_rescored_on_test(calibrated_run):
  workdir, plain, scores = calibrated_run
  assert "test/ece_calibrated" not in plain and isinstance(plain["test/ece"], float)
  record = json.load(open(os.path.join(workdir, classification.CALIBRATION_FILE)))
  recorded = json.load(open(os.path.join(workdir, "config.json")))["config"]
  assert recorded["calibrate"] and record["split"] == recorded["run"]["val_split"]
  assert record["split"].startswith("train[") and record["num_examples"] == 16  # a quarter of 64
  # One temperature per predict function, each minimising the NLL of its own selection probabilities.
  assert set(record["predictors"]) == {"predict", "tta"}
  for fitted in record["predictors"].values():
    assert fitted["nll_calibrated"] <= fitted["nll"] and fitted["temperature"] > 0
  assert record["predictors"]["tta"]["nll"] != record["predictors"]["predict"]["nll"]  # other probabilities
  assert scores["test/temperature"] == record["predictors"]["predict"]["temperature"]
  # Nothing retrained: the network's own scores are the uncalibrated run's.
  assert scores["test/accuracy"] == plain["test/accuracy"] and scores["test/ece"] == plain["test/ece"]
  # test/ece_calibrated is the ECE of the test probabilities at the fitted temperature.
  test = json.load(open(os.path.join(workdir, "predictions.json")))["test/_predictions"]
  probs = np.asarray(test["probs"])
  temperature = record["predictors"]["predict"]["temperature"]
  expected = metrics.expected_calibration_error(test["labels"], metrics.apply_temperature(probs, temperature))
  assert scores["test/ece_calibrated"] == pytest.approx(expected, abs=1e-6)
  assert os.path.exists(os.path.join(workdir, "figures", "test_reliability.png"))


def test_predict_gives_the_calibrated_probabilities(calibrated_run):
  workdir, _, scores = calibrated_run
  task, state = runner.predictor(workdir)
  record = json.load(open(os.path.join(workdir, classification.CALIBRATION_FILE)))
  temperature, tta_temperature = (record["predictors"][k]["temperature"] for k in ("predict", "tta"))
  assert task.temperature == temperature
  # Restored (as evaluate restores it), the run scores what its training run reported.
  again, _ = runner.evaluate(task, state, "test")
  assert again["test/ece_calibrated"] == pytest.approx(scores["test/ece_calibrated"], abs=1e-6)
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
  records = task.predict_images(state, images)
  raw = np.stack(task.classify_images(state, images, sharding.make_mesh()))
  np.testing.assert_allclose(np.stack([r["probabilities"] for r in records]),
                             metrics.apply_temperature(raw, temperature), atol=1e-6)
  # Test-time augmentation (evaluate / predict --tta) averages over 8 views, then calibrates with the
  # temperature fitted on the selection split's TTA probabilities, not the plain predictions'.
  tta_task, _ = runner.predictor(workdir, predict="tta")
  assert tta_task.temperature == tta_temperature and tta_task.calibrated_for == "tta"
  tta = tta_task.predict_images(state, images, predict="tta")
  raw_tta = np.stack(task.classify_images(state, images, sharding.make_mesh(), predict="tta"))
  np.testing.assert_allclose(np.stack([r["probabilities"] for r in tta]),
                             metrics.apply_temperature(raw_tta, tta_temperature), atol=1e-6)
  with pytest.raises(ValueError, match="fitted for 'predict' predictions, not 'tta'"):
    task.predict_images(state, images, predict="tta")
  turned = [np.ascontiguousarray(np.rot90(im)) for im in images]  # a photo's orientation no longer matters
  np.testing.assert_allclose(np.stack(task.classify_images(state, turned, sharding.make_mesh(), predict="tta")),
                             raw_tta, atol=1e-5)
  # Another checkpoint than the one it was fitted for predicts with the network's own probabilities.
  step = json.load(open(os.path.join(workdir, classification.CALIBRATION_FILE)))["step"]
  assert task.with_post_hoc(workdir, step).temperature == temperature
  assert runner.load(workdir).with_post_hoc(workdir, step - 2).temperature is None
  # An evaluation-time override keeps the temperature (what the run learnt, not a setting).
  assert task.with_overrides(image_artifacts=None).temperature == temperature
  assert tta_task.with_overrides(image_artifacts=None).calibrated_for == "tta"


def test_evaluate_with_tta_scores_at_the_tta_temperature(calibrated_run):
  workdir, _, _ = calibrated_run
  record = json.load(open(os.path.join(workdir, classification.CALIBRATION_FILE)))
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", "--split=selection",
                         "--tta"], capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  scores = json.load(open(os.path.join(workdir, "eval_selection_tta.json")))
  assert scores["selection/temperature"] == record["predictors"]["tta"]["temperature"]
  # On the split it was fitted on, the ECE at that temperature is the record's.
  assert scores["selection/ece_calibrated"] == pytest.approx(record["predictors"]["tta"]["ece_calibrated"], abs=1e-6)


def test_a_record_from_before_tta_had_its_own_temperature_calibrates_plain_predictions_only(calibrated_run, tmp_path):
  workdir, _, _ = calibrated_run
  record = json.load(open(os.path.join(workdir, classification.CALIBRATION_FILE)))
  old = {"split": record["split"], "step": record["step"], "num_examples": record["num_examples"],
         **record["predictors"]["predict"]}  # the single-temperature layout
  json.dump(old, open(tmp_path / classification.CALIBRATION_FILE, "w"))
  task = runner.load(workdir)
  assert task.with_post_hoc(str(tmp_path)).temperature == old["temperature"]
  assert task.with_post_hoc(str(tmp_path), predict="tta").temperature is None  # uncalibrated, with a warning


def test_calibrate_needs_a_selection_split_of_its_own(config, tmp_path):
  mesh = sharding.make_mesh()

  def refusal(**changes):
    task = classification.ClassificationTask(config_lib.replace(config, {"calibrate": True, "run.holdout": 0.0,
                                                                         **changes}))
    with pytest.raises(config_lib.ConfigError) as e:
      runner.run(task, str(tmp_path / "refused"), mesh=mesh)
    assert not os.path.exists(tmp_path / "refused")  # refused before anything is written
    return str(e.value)

  assert "`run.val_split`='test' is the reported split" in refusal(**{"run.val_split": "test"})
  assert "`calibrate` needs a selection split" in refusal(**{"run.val_split": ""})
  assert "`folds`=2" in refusal(folds=2)
  # A calibrated run whose calibration.json is gone is refused, not silently uncalibrated.
  task = classification.ClassificationTask(dataclasses.replace(config, calibrate=True))
  with pytest.raises(config_lib.ConfigError, match="calibration.json is missing"):
    task.with_post_hoc(str(tmp_path))
