"""A classifier run's calibration record (`calibrate`): the softmax temperature fitted on its
selection split after training, kept in <workdir>/calibration.json with the checkpoint step it
was fitted for, and read back for that checkpoint (ClassificationTask.fit_post_hoc / with_post_hoc)."""
from __future__ import annotations

import os
from typing import Any

from absl import logging
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.eval import metrics

CALIBRATION_FILE = "calibration.json"


def fit(workdir: str, labels: np.ndarray, probs: np.ndarray, split: str, step: int) -> dict[str, Any]:
  """Fits the temperature minimising the NLL of `probs` (metrics.fit_temperature), writes the record
  (temperature, split, step, the split's NLL and ECE before and after) and returns it."""
  temperature = metrics.fit_temperature(labels, probs)
  calibrated = metrics.apply_temperature(probs, temperature)
  record = {"temperature": temperature, "split": split, "step": int(step), "num_examples": int(labels.shape[0]),
            "nll": metrics.negative_log_likelihood(labels, probs),
            "nll_calibrated": metrics.negative_log_likelihood(labels, calibrated),
            "ece": metrics.expected_calibration_error(labels, probs),
            "ece_calibrated": metrics.expected_calibration_error(labels, calibrated)}
  io.write_json(os.path.join(workdir, CALIBRATION_FILE), record)
  shown = split if len(split) <= 60 else f"the selection split ({labels.shape[0]} images)"  # a holdout's slices
  logging.info("Calibration on %s: temperature %.3f, ECE %.4f -> %.4f", shown, temperature,
               record["ece"], record["ece_calibrated"])
  return record


def temperature_for(workdir: str, which: Any = "best") -> float | None:
  """The temperature fitted for checkpoint `which` ("best" or its step); None, with a warning, for
  another checkpoint (it predicts with the network's own probabilities). A missing record means the
  calibrated run did not finish: refused."""
  path = os.path.join(workdir, CALIBRATION_FILE)
  if not os.path.exists(path):
    raise config_lib.ConfigError(f"`calibrate`: {path} is missing (the run stopped before its temperature was "
                                 "fitted): run train again with the same config to finish it")
  record = io.read_json(path)
  if which not in ("best", record["step"]):
    logging.warning("%s: temperature %.3f was fitted for step %d, not checkpoint %s: probabilities uncalibrated",
                    workdir, record["temperature"], record["step"], which)
    return None
  return float(record["temperature"])
