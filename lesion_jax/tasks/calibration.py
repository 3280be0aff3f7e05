"""A classifier run's calibration record (`calibrate`): the softmax temperatures fitted on its
selection split after training, one per predict function (plain, TTA), kept in
<workdir>/calibration.json with the checkpoint step they were fitted for, and read back for that
checkpoint and predict function (ClassificationTask.fit_post_hoc / with_post_hoc)."""
from __future__ import annotations

import os
from typing import Any

from absl import logging
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.eval import metrics

CALIBRATION_FILE = "calibration.json"


def fit(workdir: str, predictions: dict[str, tuple[np.ndarray, np.ndarray]], split: str, step: int
        ) -> dict[str, Any]:
  """Fits one temperature per predict function (`predictions`: {name: (labels, probs) of `split`}):
  the one minimising the NLL of its probabilities (metrics.fit_temperature); writes the record
  (split, step, and per predict function its temperature and the split's NLL and ECE before and
  after) and returns it. Each predict function has its own because averaging test-time views
  already softens the probabilities: the plain predictions' temperature over-softens them."""
  record: dict[str, Any] = {"split": split, "step": int(step), "predictors": {}}
  shown = split if len(split) <= 60 else "the selection split"  # a holdout's slices
  for name, (labels, probs) in predictions.items():
    temperature = metrics.fit_temperature(labels, probs)
    calibrated = metrics.apply_temperature(probs, temperature)
    record["num_examples"] = int(labels.shape[0])
    record["predictors"][name] = {
        "temperature": temperature,
        "nll": metrics.negative_log_likelihood(labels, probs),
        "nll_calibrated": metrics.negative_log_likelihood(labels, calibrated),
        "ece": metrics.expected_calibration_error(labels, probs),
        "ece_calibrated": metrics.expected_calibration_error(labels, calibrated)}
    logging.info("Calibration of %r on %s (%d images): temperature %.3f, ECE %.4f -> %.4f", name, shown,
                 labels.shape[0], temperature, record["predictors"][name]["ece"],
                 record["predictors"][name]["ece_calibrated"])
  io.write_json(os.path.join(workdir, CALIBRATION_FILE), record)
  return record


def temperature_for(workdir: str, which: Any = "best", predict: str = "predict") -> float | None:
  """The temperature fitted for checkpoint `which` ("best" or its step) and predict function
  `predict`; None, with a warning, for another checkpoint, or a predict function the record has
  none for (it predicts with the network's own probabilities). A missing record means the
  calibrated run did not finish: refused."""
  path = os.path.join(workdir, CALIBRATION_FILE)
  if not os.path.exists(path):
    raise config_lib.ConfigError(f"`calibrate`: {path} is missing (the run stopped before its temperature was "
                                 "fitted): run train again with the same config to finish it")
  record = io.read_json(path)
  # A record from before each predict function had its own holds the plain predictions' only.
  predictors = record.get("predictors") or {"predict": record}
  if which not in ("best", record["step"]):
    logging.warning("%s: the temperatures were fitted for step %d, not checkpoint %s: probabilities uncalibrated",
                    workdir, record["step"], which)
    return None
  if predict not in predictors:
    logging.warning("%s: no temperature was fitted for %r predictions (run train again with the same config to "
                    "fit one): probabilities uncalibrated", workdir, predict)
    return None
  return float(predictors[predict]["temperature"])
