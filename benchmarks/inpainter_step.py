r"""Train-step throughput of the partial-convolution inpainter (PConvUNet), against PyTorch.

  python benchmarks/inpainter_step.py [--torch_python=PATH] [--configs=32:5:128:8] [--rounds=3]
                                      [--torch_threads=0,1] [--torch_mask_conv=channel_sum]
                                      [--no_xla_defaults]

The JAX step is the library's own: steps.make_inpainting_train_step(InpaintingLossWeights(),
feature_fn=None) (L_valid + 6 L_hole + 0.1 L_tv, no perceptual/style terms: they need a feature
network) on a create_train_state(PConvUNet(features, levels), optax.adam(1e-3)) state, jitted with
the state donated. A config is FEATURES:LEVELS:SIZE:BATCH; the default, 32:5:128:8, is the model's
default (features=32, levels=5: widths 32, 64, 128, 256, 256, a 4x4 bottleneck at 128 px) at
batch 8. Batch: target (N, S, S, 3) in [-1, 1], mask (N, S, S, 1) with a block and a line of holes
per image (the step's cost does not depend on where the holes are).
The PyTorch reference, benchmarks/torch_inpainter_step.py, is the same network in PyTorch (NCHW)
with NVIDIA's PartialConv2d (multi_channel=True) semantics, the same loss, Adam; both parameter
counts are printed and must agree. By default its mask sums use the same algorithm as
layers.PartialConv (channel sum, then a 1 -> 1 channel all-ones conv); --torch_mask_conv=nvidia
times NVIDIA's literal C_in -> C_out all-ones convolution instead (same outputs, more work).

As benchmarks/fcrn_step.py (see its docstring for the reasons): JAX and PyTorch are measured
alternately in the same run, best of rounds; the ratio is JAX images/s over the fastest PyTorch
thread count's (>1 = JAX faster); OMP_WAIT_POLICY=PASSIVE for PyTorch unless set; the JAX step is
also timed in one subprocess with XLA's own CPU defaults (LESION_JAX_XLA_DEFAULTS=0), unless
--no_xla_defaults. FLOPs are XLA's cost analysis of the JAX step (the PyTorch line uses the same
count).
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
from lesion_jax.models.inpainting import PConvUNet  # noqa: E402
from lesion_jax.train import losses, steps  # noqa: E402
from lesion_jax.train.state import create_train_state  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_inpainter_step.py")


def parse_configs(text: str) -> list[tuple[int, int, int, int]]:
  """'32:5:128:8,...' -> [(features, levels, size, batch), ...]."""
  out = []
  for item in filter(None, text.split(",")):
    parts = item.split(":")
    if len(parts) != 4:
      raise SystemExit(f"--configs: {item!r} is not FEATURES:LEVELS:SIZE:BATCH")
    out.append(tuple(int(p) for p in parts))
  return out


def hole_masks(batch: int, size: int, seed: int = 0) -> np.ndarray:
  """(N, S, S, 1) masks, 1 = valid: a block and a line of holes per image."""
  rng = np.random.default_rng(seed)
  mask = np.ones((batch, size, size, 1), np.float32)
  for b in range(batch):
    top, left = rng.integers(0, size // 2, 2)
    mask[b, top:top + size // 4, left:left + size // 3] = 0.0
    mask[b, size // 2 + b % 4, :] = 0.0
  return mask


class JaxStep:
  """The library's inpainting train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, features: int, levels: int, size: int, batch_size: int, count_flops: bool = True):
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.random((batch_size, size, size, 3), np.float32) * 2 - 1)
    mask = jnp.asarray(hole_masks(batch_size, size))
    self.batch = {"target": target, "mask": mask}
    model = PConvUNet(features=features, levels=levels)
    self.state = create_train_state(model, optax.adam(1e-3), jax.random.key(0), target[:1], mask[:1])
    self.params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.state.params))
    step = steps.make_inpainting_train_step(losses.InpaintingLossWeights(), feature_fn=None)
    self.jitted = jax.jit(step, donate_argnums=(0,))
    self.rng = jax.random.key(1)
    start = time.perf_counter()
    self.state, metrics = self.jitted(self.state, self.batch, self.rng)  # compiles
    jax.block_until_ready(metrics)
    self.compile_s = time.perf_counter() - start
    self.flops = common.xla_flops(self.jitted, self.state, self.batch, self.rng) if count_flops else 0.0

  def call(self):
    self.state, metrics = self.jitted(self.state, self.batch, self.rng)
    return metrics["loss"]

  def probe_seconds(self) -> float:
    start = time.perf_counter()
    jax.block_until_ready(self.call())
    return time.perf_counter() - start


def find_torch(python_flag: str | None) -> str | None:
  """The interpreter (--torch_python, else this one) if it imports torch, else None."""
  python = python_flag or sys.executable
  try:
    ok = subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=300).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    ok = False
  return python if ok else None


def config_name(config: tuple[int, int, int, int]) -> str:
  return ":".join(map(str, config))


def measure_torch(python: str, config: tuple[int, int, int, int], repeats: int, inner: int, threads: str,
                  mask_conv: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference,
  timed in a subprocess at each of the comma-separated `threads` (0: torch's default)."""
  features, levels, size, batch = config
  cmd = [python, TORCH_SCRIPT, f"--features={features}", f"--levels={levels}", f"--batch={batch}",
         f"--size={size}", f"--repeats={repeats}", f"--inner={inner}", f"--threads={threads}",
         f"--mask_conv={mask_conv}"]
  env = dict(os.environ)
  env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads collapse on shared cores
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
  seconds = {int(t): float(ms) / 1e3 for t, ms in re.findall(r"threads=(\d+) ms=([\d.]+)", proc.stdout)}
  params = re.search(r"params=(\d+)", proc.stdout)
  error = "" if seconds else (proc.stderr.strip() or proc.stdout.strip())[-300:]
  return seconds, (int(params.group(1)) if params else None), error


def measure_xla_defaults(configs: list[tuple[tuple[int, int, int, int], int]], repeats: int) -> dict[str, float]:
  """{config name: seconds per step} of the same JAX steps in one fresh process without lesion_jax's
  XLA:CPU flag; `configs` holds (config, steps per timed window)."""
  env = dict(os.environ, LESION_JAX_XLA_DEFAULTS="0")
  env.pop("XLA_FLAGS", None)
  spec = ",".join(f"{config_name(c)}:{inner}" for c, inner in configs)
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--repeats={repeats}",
                         f"--xla_defaults_child={spec}"], env=env, capture_output=True, text=True, timeout=1800)
  return {c: float(ms) / 1e3 for c, ms in re.findall(r"xla_defaults config=(\S+) ms=([\d.]+)", proc.stdout)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON"),
                      help="Python interpreter that has torch (default: this one).")
  parser.add_argument("--configs", default="32:5:128:8",
                      help="Comma-separated FEATURES:LEVELS:SIZE:BATCH of PConvUNet.")
  parser.add_argument("--rounds", type=int, default=3, help="Alternating JAX/PyTorch rounds.")
  parser.add_argument("--repeats", type=int, default=3, help="Timed windows per round (best kept).")
  parser.add_argument("--window_s", type=float, default=1.0,
                      help="Aim for timed windows of about this long: steps per window = "
                           "clip(window_s / step time, 1, 5), the same for JAX and PyTorch.")
  parser.add_argument("--torch_threads", default="0,1",
                      help="PyTorch intra-op thread counts to time, comma-separated (0: torch's default, "
                           "one per core); the ratio is against the fastest.")
  parser.add_argument("--torch_mask_conv", default="channel_sum", choices=("channel_sum", "nvidia"),
                      help="How the PyTorch reference computes the mask sums (see torch_inpainter_step.py).")
  parser.add_argument("--no_xla_defaults", action="store_true",
                      help="Skip the timing with XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0).")
  parser.add_argument("--xla_defaults_child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.xla_defaults_child:  # the subprocess of measure_xla_defaults
    for item in args.xla_defaults_child.split(","):
      *config, inner = (int(p) for p in item.split(":"))
      step = JaxStep(*config, count_flops=False)
      print(f"xla_defaults config={config_name(config)} "
            f"ms={common.best_seconds(step.call, args.repeats, inner) * 1e3:.2f}", flush=True)
      del step
    return
  configs = parse_configs(args.configs)
  start = time.perf_counter()

  print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; "
        f"{os.cpu_count()} CPU cores; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  peak = common.matmul_peak_gflops()
  print(f"matmul peak (float32, 2048^3): {peak:.0f} GFLOP/s")
  torch_python = find_torch(args.torch_python)
  if torch_python:
    version = subprocess.run([torch_python, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
                             capture_output=True, text=True).stdout.split()
    print(f"PyTorch {version[0]} ({version[1]} threads) from {torch_python}; mask sums: {args.torch_mask_conv}")

  jax_steps, inners = {}, {}
  for config in configs:
    name = config_name(config)
    jax_steps[name] = JaxStep(*config)
    inners[name] = int(np.clip(round(args.window_s / jax_steps[name].probe_seconds()), 1, 5))
  defaults = {} if args.no_xla_defaults else measure_xla_defaults(
      [(c, inners[config_name(c)]) for c in configs], args.rounds * args.repeats)

  for config in configs:
    features, levels, size, batch = config
    name = config_name(config)
    step, inner = jax_steps.pop(name), inners[name]
    defaults_best = defaults.get(name, float("inf"))
    jax_best, torch_by_threads, torch_params, torch_error = float("inf"), {}, None, ""
    for _ in range(args.rounds):
      jax_best = min(jax_best, common.best_seconds(step.call, repeats=args.repeats, inner=inner))
      if torch_python:
        seconds, params, error = measure_torch(torch_python, config, args.repeats, inner, args.torch_threads,
                                               args.torch_mask_conv)
        torch_params, torch_error = params or torch_params, error
        for threads, t in seconds.items():
          torch_by_threads[threads] = min(torch_by_threads.get(threads, float("inf")), t)
    torch_best = min(torch_by_threads.values(), default=float("inf"))
    gflops = step.flops / jax_best / 1e9
    print(f"\nPConvUNet(features={features}, levels={levels}) batch {batch} {size}px; best of {args.rounds} "
          f"rounds x {args.repeats} windows x {inner} steps; JAX first call (compile or cache load) "
          f"{step.compile_s:.1f} s")
    print(f"  JAX:     {jax_best * 1e3:8.1f} ms/step, {batch / jax_best:7.2f} img/s, "
          f"{step.flops / 1e9:.1f} GFLOP/step (XLA), {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of matmul peak")
    if defaults_best < float("inf"):
      d_gflops = step.flops / defaults_best / 1e9
      print(f"  JAX, XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0): {defaults_best * 1e3:.1f} ms/step, "
            f"{batch / defaults_best:.2f} img/s, {d_gflops:.0f} GFLOP/s = {d_gflops / peak:.0%} of matmul peak")
    for threads, t in sorted(torch_by_threads.items(), reverse=True):
      t_gflops = step.flops / t / 1e9
      print(f"  PyTorch: {t * 1e3:8.1f} ms/step, {batch / t:7.2f} img/s, {t_gflops:.0f} GFLOP/s at JAX's "
            f"FLOP count = {t_gflops / peak:.0%} of matmul peak ({threads} thread{'s' * (threads > 1)}"
            f"{', fastest' if t == torch_best and len(torch_by_threads) > 1 else ''})")
    if torch_params is not None:
      same = "same" if torch_params == step.params else "MISMATCH: the reference is not the same network"
      print(f"  parameters: JAX {step.params:,}, PyTorch {torch_params:,} ({same})")
    else:
      print(f"  parameters: JAX {step.params:,}")
    if torch_best < float("inf"):
      print(f"  ratio JAX/PyTorch images/s, {name}: {torch_best / jax_best:.2f} (against PyTorch's fastest)")
      if defaults_best < float("inf"):
        print(f"  ratio JAX/PyTorch images/s, {name} with XLA's default CPU convolutions: "
              f"{torch_best / defaults_best:.2f}")
    elif torch_python:
      print(f"  ratio JAX/PyTorch: skipped ({TORCH_SCRIPT} failed: {torch_error})")
    else:
      where = f"--torch_python={args.torch_python} does not import torch" if args.torch_python else \
          "torch is not installed in this interpreter"
      print(f"  ratio JAX/PyTorch: skipped ({where}; pip install torch==2.13.0, or pass --torch_python)")
    del step
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
