"""Data parallelism: the same steps on 1 and on 8 (fake CPU) devices give the same losses and
parameters, and a checkpoint saved on 8 devices restores on 1. Runs in a subprocess because
the device count is fixed when JAX starts."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def result(tiny_data_dir, tmp_path_factory):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "tests.sharding_check", tiny_data_dir,
                         str(tmp_path_factory.mktemp("sharding"))], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


def test_segmenter_same_on_1_and_8_devices(result):
  assert result["devices"] == 8 and result["seg_sharded_on"] == 8
  assert result["seg_loss_1"] == pytest.approx(result["seg_loss_8"], rel=1e-4, abs=1e-5)
  assert result["seg_param_change"] > 1e-2  # the steps moved the parameters, so a diff would show
  assert result["seg_param_diff"] < 1e-4
  assert result["seg_batch_stats_diff"] < 1e-4  # BatchNorm statistics over the global batch
  assert result["seg_val_1"] == pytest.approx(result["seg_val_8"], abs=1e-3)


def test_classifier_same_on_1_and_8_devices(result):
  assert result["cls_loss_1"] == pytest.approx(result["cls_loss_8"], rel=1e-4, abs=1e-5)
  assert result["cls_param_change"] > 1e-2
  assert result["cls_param_diff"] < 1e-4
  assert result["cls_batch_stats_diff"] < 1e-4


def test_checkpoint_from_8_devices_restores_on_1(result):
  assert result["restored_on"] == 1 and result["restore_8_to_1_diff"] == 0.0


def test_batch_that_does_not_split_is_refused_clearly(result):
  assert "divisible by the number of devices (8)" in result["batch_error"]
