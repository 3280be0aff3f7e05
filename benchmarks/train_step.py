r"""Train-step throughput of the U-Net, ResNet-18 and LeNet-5, against the PyTorch reference.

  python benchmarks/train_step.py [--torch_python=PATH] [--torch_reference=PATH] [--rounds=3]

The U-Net is the papers' (and ../shared/bench/torch_unet_step.py's) network: batch 8, 128x128,
base width 16, 4 levels, no normalisation, Adam, BCE with logits. JAX and PyTorch are measured
alternately in the same run (best of several rounds each), because this machine is shared and
absolute times drift; the printed ratio is JAX images/s over PyTorch images/s (>1 = JAX faster).
Also prints the fraction of this machine's measured float32 matmul peak that each step achieves
(FLOPs from XLA's cost analysis). PyTorch is found in this interpreter, or in --torch_python
(`pip install torch==2.13.0` takes the local CPU wheel); without it the ratio line says so.
The U-Net is also timed in a subprocess with XLA's own CPU defaults (LESION_JAX_XLA_DEFAULTS=0,
see lesion_jax/__init__.py), to show what lesion_jax's XLA flag buys.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.models.classifiers import build_classifier  # noqa: E402
from lesion_jax.models.unet import UNet  # noqa: E402
from lesion_jax.train import steps  # noqa: E402
from lesion_jax.train.state import create_train_state  # noqa: E402

# ../shared/bench/ beside the checkout, wherever the checkout is (--torch_reference overrides).
REFERENCE = os.path.join(common.SHARED, "bench", "torch_unet_step.py")


def jax_step(model, batch_size: int, size: int, task: str):
  """(jitted step, state, batch) for one model; the step is the library's, as the loop runs it."""
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((batch_size, size, size, 3), np.float32) * 2 - 1)
  state = create_train_state(model, optax.adam(1e-3), jax.random.key(0), image[:1])
  if task == "segmentation":
    batch = {"image": image, "mask": jnp.asarray(rng.random((batch_size, size, size, 1)) > 0.5, jnp.float32)}
    step = steps.make_segmentation_train_step("bce")
  else:
    batch = {"image": image, "label": jnp.asarray(rng.integers(0, 2, batch_size), jnp.int32)}
    step = steps.make_classification_train_step()
  jitted = jax.jit(step, donate_argnums=(0,))
  return jitted, state, batch


def measure_jax(model, batch_size: int, size: int, task: str) -> tuple[float, float]:
  """(seconds per step, FLOPs per step)."""
  jitted, state, batch = jax_step(model, batch_size, size, task)
  flops = common.xla_flops(jax.jit(jitted.__wrapped__ if hasattr(jitted, "__wrapped__") else jitted),
                           state, batch, jax.random.key(1))
  box = [state]

  def call():
    box[0], metrics = jitted(box[0], batch, jax.random.key(1))
    return metrics["loss"]

  return common.best_seconds(call), flops


def measure_torch(python: str, reference: str, batch: int, size: int, width: int) -> float | None:
  proc = subprocess.run([python, reference, str(batch), str(size), str(width), "10"],
                        capture_output=True, text=True, timeout=900)
  match = re.search(r"ms=([\d.]+)", proc.stdout)
  return float(match.group(1)) / 1e3 if match else None


def measure_xla_defaults() -> float | None:
  """U-Net seconds per step in a fresh process without lesion_jax's XLA:CPU flag."""
  env = dict(os.environ, LESION_JAX_XLA_DEFAULTS="0")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--unet_only"], env=env,
                        capture_output=True, text=True, timeout=900)
  match = re.search(r"unet_ms=([\d.]+)", proc.stdout)
  return float(match.group(1)) / 1e3 if match else None


def find_torch(python_flag: str | None) -> str | None:
  candidates = [python_flag] if python_flag else [sys.executable]
  for python in candidates:
    if python and subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
      return python
  return None


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON"),
                      help="Python interpreter that has torch (default: this one).")
  parser.add_argument("--torch_reference", default=REFERENCE,
                      help="The PyTorch U-Net reference script (default: "
                           f"{os.path.relpath(REFERENCE)}, i.e. shared/bench/ beside the checkout).")
  parser.add_argument("--rounds", type=int, default=3, help="Alternating JAX/PyTorch rounds.")
  parser.add_argument("--unet_only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  batch, size, width = 8, 128, 16
  if args.unet_only:  # the subprocess of measure_xla_defaults
    seconds, _ = measure_jax(UNet(features=width, levels=4, norm="none"), batch, size, "segmentation")
    print(f"unet_ms={seconds * 1e3:.2f}")
    return
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; "
        f"{os.cpu_count()} CPU cores")
  peak = common.matmul_peak_gflops()
  print(f"matmul peak (float32, 2048^3): {peak:.0f} GFLOP/s")

  reference = args.torch_reference if os.path.exists(args.torch_reference) else None
  torch_python = find_torch(args.torch_python)
  unets = {"depth_to_space": UNet(features=width, levels=4, norm="none", upsample="depth_to_space"),
           "transpose": UNet(features=width, levels=4, norm="none", upsample="transpose")}
  jax_best = {k: float("inf") for k in unets}
  flops = {}
  torch_best = float("inf")
  defaults_best = float("inf")
  for _ in range(args.rounds):
    for name, model in unets.items():
      seconds, flops[name] = measure_jax(model, batch, size, "segmentation")
      jax_best[name] = min(jax_best[name], seconds)
    if torch_python and reference:
      t = measure_torch(torch_python, reference, batch, size, width)
      torch_best = min(torch_best, t) if t else torch_best
    d = measure_xla_defaults()
    defaults_best = min(defaults_best, d) if d else defaults_best
  for name in unets:
    s = jax_best[name]
    print(f"U-Net ({name} up-sampling) batch {batch} {size}px width {width}: {s * 1e3:.1f} ms/step, "
          f"{batch / s:.1f} img/s, {flops[name] / s / 1e9:.0f} GFLOP/s = {flops[name] / s / 1e9 / peak:.0%} of matmul peak")
  if defaults_best < float("inf"):
    print(f"U-Net (depth_to_space) with XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0): "
          f"{defaults_best * 1e3:.1f} ms/step, {batch / defaults_best:.1f} img/s")
  if torch_best < float("inf"):
    print(f"PyTorch reference U-Net: {torch_best * 1e3:.1f} ms/step, {batch / torch_best:.1f} img/s")
    for name in unets:
      print(f"ratio JAX/PyTorch images/s, U-Net {name}: {torch_best / jax_best[name]:.2f}")
    if defaults_best < float("inf"):
      print(f"ratio JAX/PyTorch images/s, U-Net depth_to_space with XLA's default CPU convolutions: "
            f"{torch_best / defaults_best:.2f}")
  else:
    why = (f"no reference script at {args.torch_reference} (--torch_reference)" if not reference
           else "torch is not installed")
    print(f"ratio JAX/PyTorch: skipped ({why}; pip install torch==2.13.0, or pass --torch_python)")

  for name, size_c, batch_c in (("resnet18", 64, 32), ("lenet5", 64, 32)):
    model = build_classifier(name, 2, width=0.25 if name == "resnet18" else 1.0)
    s, f = measure_jax(model, batch_c, size_c, "classification")
    print(f"{name}{' (width 0.25)' if name == 'resnet18' else ''} batch {batch_c} {size_c}px: "
          f"{s * 1e3:.1f} ms/step, {batch_c / s:.0f} img/s, {f / s / 1e9:.0f} GFLOP/s = {f / s / 1e9 / peak:.0%} of peak")


if __name__ == "__main__":
  main()
