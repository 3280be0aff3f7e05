"""benchmarks/classifier_step.py (the ISIC 2017 Task 3 ResNet's train step against a PyTorch twin)
runs its JAX side: --no_torch on a tiny ResNet-18 prints the report's lines with the JAX parameter
count. The PyTorch twin itself (torch_classifier_step.py, and --check's numerics) needs torch, which
this machine lacks: its flags and weight layout are checked here without it."""
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "classifier_step.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu",
           PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))


def _params(model, size):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def test_no_torch_report_lines():
  from lesion_jax.models.classifiers import build_classifier  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, SCRIPT, "--no_torch", "--no_xla_defaults", "--model=resnet18", "--rounds=1",
                         "--repeats=1", "--window_s=0", "--image_size=32", "--width=0.125", "--batch_size=2"],
                        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert re.search(r"^matmul peak \(float32, 2048\^3\): \d+ GFLOP/s$", out, re.M), out
  assert re.search(r"^resnet18 \(stages \(2, 2, 2, 2\), ResNetBlock, width 0.125 = base 8\) batch 2 32px; best of 1 "
                   r"rounds x 1 windows x 1 steps; JAX first call \(compile or cache load\) [\d.]+ s$", out, re.M), out
  assert re.search(r"^  JAX: +[\d.]+ ms/step, +[\d.]+ img/s, [\d.]+ GFLOP/step \(XLA\), \d+ GFLOP/s = \d+% of matmul "
                   r"peak$", out, re.M), out
  assert f"  parameters: JAX {_params(build_classifier('resnet18', 3, 0.125), 32):,}\n" in out, out
  assert re.search(r"^  step memory \(XLA\): ", out, re.M), out
  assert "  ratio JAX/PyTorch: skipped (--no_torch)" in out, out
  assert not re.search(r"^  PyTorch: ", out, re.M) and re.search(r"^wall time \d+ s$", out, re.M), out


def test_twin_flags_and_weight_layout():
  """The twin's flags follow the flax ResNet build_classifier makes (the Task 3 workload by default),
  and the flax variables map onto its state_dict names and layouts."""
  from benchmarks import classifier_step  # pylint: disable=g-import-not-at-top
  assert classifier_step.torch_args("resnet18", 0.5, 128, 32) == [
      "--stage_sizes=2,2,2,2", "--block=basic", "--width=32", "--num_classes=3", "--batch=32", "--size=128"]
  assert classifier_step.torch_args("resnet50", 0.125, 32, 2)[:3] == [
      "--stage_sizes=3,4,6,3", "--block=bottleneck", "--width=8"]
  model = classifier_step.build("resnet50", 0.125)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
  state = classifier_step.torch_state_dict(variables)
  assert state["Conv_0.weight"].shape == (8, 3, 3, 3)  # OIHW; the 3x3 stem under 128 px
  assert state["BottleneckBlock_0.Conv_2.weight"].shape == (32, 8, 1, 1)
  assert {"BottleneckBlock_0.BatchNorm_3.weight", "BottleneckBlock_0.BatchNorm_3.bias",
          "BottleneckBlock_0.BatchNorm_3.running_mean", "BottleneckBlock_0.BatchNorm_3.running_var"} <= set(state)
  assert state["Dense_0.weight"].shape == (3, 256) and state["Dense_0.bias"].shape == (3,)
  assert sum(v.size for k, v in state.items() if not k.endswith(("running_mean", "running_var"))) == \
      _params(model, 32)


def test_lfn_step_no_torch_report_lines():
  """benchmarks/lfn_step.py (the LFN's train step against torch_lfn_step.py) runs its JAX side."""
  from lesion_jax.models.lfn import lfn  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "lfn_step.py"), "--no_torch",
                         "--no_xla_defaults", "--variants=lfn_narrow:16:4", "--rounds=1", "--repeats=1", "--window_s=0"],
                        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert re.search(r"^lfn_narrow \(widths \(8, 16, 32, 64\)\) batch 4 16px; best of 1 rounds", out, re.M), out
  assert f"  parameters: JAX {_params(lfn('lfn_narrow'), 16):,}\n" in out, out
  assert "  ratio JAX/PyTorch: skipped (--no_torch)" in out, out


def test_variant_flags_fill_size_and_batch_from_the_defaults():
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  known = {"lfn": None, "lfn_wide": None}
  assert common.parse_variants("lfn,lfn_wide:32,lfn:16:4", known, 56, 64) == [
      ("lfn", 56, 64), ("lfn_wide", 32, 64), ("lfn", 16, 4)]
  with pytest.raises(SystemExit, match="unknown variant 'lfn_tiny'"):
    common.parse_variants("lfn_tiny", known, 56, 64)
