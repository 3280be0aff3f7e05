r"""Train-step throughput of the FCRN (the Lesion Indexing Network's network), against PyTorch.

  python benchmarks/fcrn_step.py [--torch_python=PATH] [--variants=fcrn_small:128:8,fcrn50:128:4]
                                 [--rounds=3]

The JAX step is the library's own, as the training loop runs it: LesionIndexTask's train_step
(steps.make_supervised_train_step with lesion_index.pixel_classes and pixel_softmax_loss, plus its
Jaccard / pixel-accuracy metrics), on a create_train_state(fcrn(variant), optax.adam(1e-3))
state, jitted with the state donated. Batch: image (N, S, S, 3), mask (N, S, S, 1), label (N,).
The PyTorch reference, benchmarks/torch_fcrn_step.py, is the same network built in PyTorch (NCHW;
blocks and width passed from lesion_jax.models.fcrn.FCRN_VARIANTS), per-pixel softmax cross-entropy
against mask * (label + 1), Adam; both parameter counts are printed and must agree.

JAX and PyTorch are measured alternately in the same run (best of several rounds each), because
this machine is shared and absolute times drift; the printed ratio is JAX images/s over PyTorch
images/s (>1 = JAX faster). Also prints the fraction of this machine's measured float32 matmul
peak that the JAX step achieves (FLOPs from XLA's cost analysis; the PyTorch line uses the same
FLOP count). PyTorch is found in this interpreter, or in --torch_python (`pip install
torch==2.13.0` takes the local CPU wheel); without it the ratio line says "skipped".
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from benchmarks.train_step import find_torch  # noqa: E402
from lesion_jax.models.fcrn import FCRN_VARIANTS, fcrn  # noqa: E402
from lesion_jax.tasks import lesion_index  # noqa: E402
from lesion_jax.train.state import create_train_state  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_fcrn_step.py")
NUM_CLASSES = 4  # background + the three diagnoses (melanoma, seborrheic keratosis, nevus)
GROUP_SIZE = 2  # FCRN's default "residual in residual" grouping, passed on to the reference


def parse_variants(text: str) -> list[tuple[str, int, int]]:
  """'fcrn_small:128:8,fcrn50:128:4' -> [(variant, size, batch), ...]."""
  out = []
  for item in filter(None, text.split(",")):
    name, size, batch = (item.split(":") + ["128", "8"])[:3]
    if name not in FCRN_VARIANTS:
      raise SystemExit(f"--variants: unknown FCRN variant {name!r}; choose from {list(FCRN_VARIANTS)}")
    out.append((name, int(size), int(batch)))
  return out


class JaxStep:
  """The library's FCRN train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, variant: str, size: int, batch_size: int):
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.random((batch_size, size, size, 3), np.float32) * 2 - 1)
    self.batch = {"image": image,
                  "mask": jnp.asarray(rng.random((batch_size, size, size, 1)) > 0.5, jnp.float32),
                  "label": jnp.asarray(rng.integers(0, NUM_CLASSES - 1, batch_size), jnp.int32)}
    model = fcrn(variant, num_classes=NUM_CLASSES)
    self.state = create_train_state(model, optax.adam(1e-3), jax.random.key(0), image[:1])
    self.params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.state.params))
    step = lesion_index.LesionIndexTask(lesion_index.LesionIndexConfig()).train_step()
    self.jitted = jax.jit(step, donate_argnums=(0,))
    self.rng = jax.random.key(1)
    start = time.perf_counter()
    self.state, metrics = self.jitted(self.state, self.batch, self.rng)  # compiles
    jax.block_until_ready(metrics)
    self.compile_s = time.perf_counter() - start
    self.flops = common.xla_flops(self.jitted, self.state, self.batch, self.rng)

  def call(self):
    self.state, metrics = self.jitted(self.state, self.batch, self.rng)
    return metrics["loss"]

  def probe_seconds(self) -> float:
    start = time.perf_counter()
    jax.block_until_ready(self.call())
    return time.perf_counter() - start


def measure_torch(python: str, variant: str, size: int, batch: int, repeats: int, inner: int
                  ) -> tuple[float | None, int | None, str]:
  """(seconds per step, parameter count, error text) of the PyTorch reference, in a subprocess."""
  blocks, width = FCRN_VARIANTS[variant]
  cmd = [python, TORCH_SCRIPT, f"--blocks={','.join(map(str, blocks))}", f"--width={width}",
         f"--num_classes={NUM_CLASSES}", f"--group_size={GROUP_SIZE}", f"--batch={batch}",
         f"--size={size}", f"--repeats={repeats}", f"--inner={inner}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
  ms = re.search(r"\bms=([\d.]+)", proc.stdout)
  params = re.search(r"params=(\d+)", proc.stdout)
  error = "" if ms else (proc.stderr.strip() or proc.stdout.strip())[-300:]
  return (float(ms.group(1)) / 1e3 if ms else None), (int(params.group(1)) if params else None), error


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON"),
                      help="Python interpreter that has torch (default: this one).")
  parser.add_argument("--variants", default="fcrn_small:128:8,fcrn50:128:4",
                      help="Comma-separated VARIANT:SIZE:BATCH (variants: " + ", ".join(FCRN_VARIANTS) + ").")
  parser.add_argument("--rounds", type=int, default=3, help="Alternating JAX/PyTorch rounds.")
  parser.add_argument("--repeats", type=int, default=3, help="Timed windows per round (best kept).")
  parser.add_argument("--window_s", type=float, default=1.0,
                      help="Aim for timed windows of about this long: steps per window = "
                           "clip(window_s / step time, 1, 5), the same for JAX and PyTorch.")
  args = parser.parse_args()
  variants = parse_variants(args.variants)

  print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; "
        f"{os.cpu_count()} CPU cores; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  peak = common.matmul_peak_gflops()
  print(f"matmul peak (float32, 2048^3): {peak:.0f} GFLOP/s")
  torch_python = find_torch(args.torch_python)
  if torch_python:
    version = subprocess.run([torch_python, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
                             capture_output=True, text=True).stdout.split()
    print(f"PyTorch {version[0]} ({version[1]} threads) from {torch_python}")

  for variant, size, batch in variants:
    blocks, width = FCRN_VARIANTS[variant]
    step = JaxStep(variant, size, batch)
    inner = int(np.clip(round(args.window_s / step.probe_seconds()), 1, 5))
    jax_best, torch_best, torch_params, torch_error = float("inf"), float("inf"), None, ""
    for _ in range(args.rounds):
      jax_best = min(jax_best, common.best_seconds(step.call, repeats=args.repeats, inner=inner))
      if torch_python:
        seconds, params, error = measure_torch(torch_python, variant, size, batch, args.repeats, inner)
        torch_params, torch_error = params or torch_params, error
        if seconds:
          torch_best = min(torch_best, seconds)
    gflops = step.flops / jax_best / 1e9
    print(f"\n{variant} (blocks {blocks}, width {width}) batch {batch} {size}px; best of {args.rounds} rounds "
          f"x {args.repeats} windows x {inner} steps; JAX compile {step.compile_s:.1f} s")
    print(f"  JAX:     {jax_best * 1e3:8.1f} ms/step, {batch / jax_best:7.2f} img/s, "
          f"{step.flops / 1e9:.1f} GFLOP/step (XLA), {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of matmul peak")
    if torch_best < float("inf"):
      t_gflops = step.flops / torch_best / 1e9
      print(f"  PyTorch: {torch_best * 1e3:8.1f} ms/step, {batch / torch_best:7.2f} img/s, "
            f"{t_gflops:.0f} GFLOP/s at JAX's FLOP count = {t_gflops / peak:.0%} of matmul peak")
    if torch_params is not None:
      same = "same" if torch_params == step.params else "MISMATCH: the reference is not the same network"
      print(f"  parameters: JAX {step.params:,}, PyTorch {torch_params:,} ({same})")
    else:
      print(f"  parameters: JAX {step.params:,}")
    if torch_best < float("inf"):
      print(f"  ratio JAX/PyTorch images/s, {variant}: {torch_best / jax_best:.2f}")
    elif torch_python:
      print(f"  ratio JAX/PyTorch: skipped ({TORCH_SCRIPT} failed: {torch_error})")
    else:
      print("  ratio JAX/PyTorch: skipped (torch is not installed; pip install torch==2.13.0, "
            "or pass --torch_python)")
    del step


if __name__ == "__main__":
  main()
