r"""Train-step throughput of the U-Net, ResNet-18 and LeNet-5, against the PyTorch reference.

  python benchmarks/train_step.py [--torch_python=PATH | --no_torch] [--torch_reference=PATH] [--rounds=3]
                                  [--no_xla_defaults] [--precision=float32|bfloat16]
                                  [--unet=128:8:16] [--classifiers=64:32]

The U-Net is the papers' (and ../shared/bench/torch_unet_step.py's) network: batch 8, 128x128,
base width 16, 4 levels, no normalisation, Adam, BCE with logits. JAX and PyTorch are measured
alternately in the same run (best of several rounds each), because this machine is shared and
absolute times drift; the printed ratio is JAX images/s over PyTorch images/s (>1 = JAX faster).
Also prints the fraction of this machine's measured float32 matmul peak that each step achieves
(FLOPs from XLA's cost analysis). PyTorch is found in this interpreter, or in --torch_python
(`pip install torch==2.13.0` takes the local CPU wheel); without it the ratio line says so.
The U-Net is also timed in a subprocess with XLA's own CPU defaults (LESION_JAX_XLA_DEFAULTS=0,
see lesion_jax/__init__.py), to show what lesion_jax's XLA flag buys (--no_xla_defaults skips it).
--precision runs every step under that policy (lesion_jax/train/precision.py: bfloat16 compute and
input images, float32 parameters and losses); --unet=SIZE:BATCH:WIDTH and --classifiers=SIZE:BATCH
change the workloads (the PyTorch reference runs the U-Net's). Each line also gives the step's
device memory from XLA's memory analysis of the compiled step.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.models.classifiers import build_classifier  # noqa: E402
from lesion_jax.models.unet import UNet  # noqa: E402
from lesion_jax.train import steps  # noqa: E402

# ../shared/bench/ beside the checkout, wherever the checkout is (--torch_reference overrides).
REFERENCE = os.path.join(common.SHARED, "bench", "torch_unet_step.py")


def jax_step(model, batch_size: int, size: int, task: str, precision: str = "float32"):
  """(jitted step, state, batch) for one model (built in `precision`'s compute dtype); the step is
  the library's, as the loop runs it, and the batch's image is sent as the policy sends it."""
  rng = np.random.default_rng(0)
  image = rng.random((batch_size, size, size, 3), np.float32) * 2 - 1
  state = common.adam_state(model, size=size)
  if task == "segmentation":
    batch = {"image": image, "mask": (rng.random((batch_size, size, size, 1)) > 0.5).astype(np.float32)}
    step = steps.make_segmentation_train_step("bce")
  else:
    batch = {"image": image, "label": rng.integers(0, 2, batch_size).astype(np.int32)}
    step = steps.make_classification_train_step()
  jitted = jax.jit(step, donate_argnums=(0,))
  return jitted, state, common.device_inputs(precision, batch)


def measure_jax(model, batch_size: int, size: int, task: str, precision: str = "float32"
                ) -> tuple[float, float, dict[str, int]]:
  """(seconds per step, FLOPs per step, the step's memory: common.compiled_stats)."""
  jitted, state, batch = jax_step(model, batch_size, size, task, precision)
  flops, memory = common.compiled_stats(jitted, state, batch, jax.random.key(1))  # as run: the state donated
  box = [state]

  def call():
    box[0], metrics = jitted(box[0], batch, jax.random.key(1))
    return metrics["loss"]

  return common.best_seconds(call), flops, memory


def measure_torch(python: str, reference: str, batch: int, size: int, width: int) -> float | None:
  proc = subprocess.run([python, reference, str(batch), str(size), str(width), "10"],
                        capture_output=True, text=True, timeout=900)
  match = re.search(r"ms=([\d.]+)", proc.stdout)
  return float(match.group(1)) / 1e3 if match else None


def measure_xla_defaults(unet: str, precision: str) -> float | None:
  """U-Net seconds per step in a fresh process without lesion_jax's XLA:CPU flag."""
  env = dict(os.environ, LESION_JAX_XLA_DEFAULTS="0")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--unet_only", f"--unet={unet}",
                         f"--precision={precision}"], env=env, capture_output=True, text=True, timeout=900)
  match = re.search(r"unet_ms=([\d.]+)", proc.stdout)
  return float(match.group(1)) / 1e3 if match else None


def find_torch(python_flag: str | None) -> str | None:
  candidates = [python_flag] if python_flag else [sys.executable]
  for python in candidates:
    if python and subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
      return python
  return None


def parse_ints(text: str, names: str) -> list[int]:
  """'128:8:16' -> [128, 8, 16], one integer per colon-separated name of `names`."""
  parts = text.split(":")
  if len(parts) != len(names.split(":")) or not all(p.isdigit() for p in parts):
    raise SystemExit(f"{text!r}: give {names}")
  return [int(p) for p in parts]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_torch_args(parser)
  parser.add_argument("--torch_reference", default=REFERENCE,
                      help="The PyTorch U-Net reference script (default: "
                           f"{os.path.relpath(REFERENCE)}, i.e. shared/bench/ beside the checkout).")
  parser.add_argument("--rounds", type=int, default=3, help="Alternating JAX/PyTorch rounds.")
  parser.add_argument("--unet", default="128:8:16", help="The U-Net's SIZE:BATCH:WIDTH (4 levels, no normalisation).")
  parser.add_argument("--classifiers", default="64:32", help="ResNet-18's and LeNet-5's SIZE:BATCH.")
  parser.add_argument("--no_xla_defaults", action="store_true",
                      help="Skip the U-Net timing with XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0).")
  common.add_precision_arg(parser)
  parser.add_argument("--unet_only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  size, batch, width = parse_ints(args.unet, "SIZE:BATCH:WIDTH")
  size_c, batch_c = parse_ints(args.classifiers, "SIZE:BATCH")
  dtype = common.compute_dtype(args.precision)
  if args.unet_only:  # the subprocess of measure_xla_defaults
    seconds, _, _ = measure_jax(UNet(features=width, levels=4, norm="none", dtype=dtype), batch, size,
                                "segmentation", args.precision)
    print(f"unet_ms={seconds * 1e3:.2f}")
    return
  device = jax.devices()[0]
  print(f"jax {jax.__version__} on {device.platform} x{len(jax.devices())} ({device.device_kind}); "
        f"{os.cpu_count()} CPU cores; precision {args.precision}")
  peak = common.matmul_peak_gflops(dtype=dtype)
  print(f"matmul peak ({dtype}, 2048^3): {peak:.0f} GFLOP/s")

  reference = args.torch_reference if os.path.exists(args.torch_reference) else None
  torch_python = None if args.no_torch else find_torch(args.torch_python)
  unets = {"depth_to_space": UNet(features=width, levels=4, norm="none", upsample="depth_to_space", dtype=dtype),
           "transpose": UNet(features=width, levels=4, norm="none", upsample="transpose", dtype=dtype)}
  jax_best = {k: float("inf") for k in unets}
  flops, memory = {}, {}
  torch_best = float("inf")
  defaults_best = float("inf")
  for _ in range(args.rounds):
    for name, model in unets.items():
      seconds, flops[name], memory[name] = measure_jax(model, batch, size, "segmentation", args.precision)
      jax_best[name] = min(jax_best[name], seconds)
    if torch_python and reference:
      t = measure_torch(torch_python, reference, batch, size, width)
      torch_best = min(torch_best, t) if t else torch_best
    d = None if args.no_xla_defaults else measure_xla_defaults(args.unet, args.precision)
    defaults_best = min(defaults_best, d) if d else defaults_best
  for name in unets:
    s = jax_best[name]
    print(f"U-Net ({name} up-sampling) batch {batch} {size}px width {width}: {s * 1e3:.1f} ms/step, "
          f"{batch / s:.1f} img/s, {flops[name] / s / 1e9:.0f} GFLOP/s = {flops[name] / s / 1e9 / peak:.0%} of matmul peak")
    print(f"  {common.memory_line(memory[name])}")
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
  elif args.no_torch:
    print("ratio JAX/PyTorch: skipped (--no_torch)")
  else:
    why = (f"no reference script at {args.torch_reference} (--torch_reference)" if not reference
           else "torch is not installed")
    print(f"ratio JAX/PyTorch: skipped ({why}; pip install torch==2.13.0, or pass --torch_python)")

  for name in ("resnet18", "lenet5"):
    model = build_classifier(name, 2, width=0.25 if name == "resnet18" else 1.0, dtype=dtype)
    s, f, m = measure_jax(model, batch_c, size_c, "classification", args.precision)
    print(f"{name}{' (width 0.25)' if name == 'resnet18' else ''} batch {batch_c} {size_c}px: "
          f"{s * 1e3:.1f} ms/step, {batch_c / s:.0f} img/s, {f / s / 1e9:.0f} GFLOP/s = {f / s / 1e9 / peak:.0%} of peak")
    print(f"  {common.memory_line(m)}")


if __name__ == "__main__":
  main()
