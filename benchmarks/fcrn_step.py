r"""Train-step throughput of the FCRN (the Lesion Indexing Network's network), against PyTorch.

  python benchmarks/fcrn_step.py [--torch_python=PATH] [--variants=fcrn_small:128:8,fcrn50:128:4]
                                 [--rounds=3] [--torch_threads=0,1] [--no_xla_defaults]

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

PyTorch is timed at its default thread count (one per core) and at one thread (--torch_threads),
with OMP_WAIT_POLICY=PASSIVE unless set: on this shared 2-core machine, with training jobs
running, spinning OpenMP threads made the 2-thread step up to 20x slower, and one thread was often
the fastest. The ratio is against the fastest PyTorch configuration. The JAX step is also timed in
a subprocess with XLA's own CPU defaults (LESION_JAX_XLA_DEFAULTS=0, see lesion_jax/__init__.py;
--no_xla_defaults skips it), as benchmarks/train_step.py does for the U-Net; that process is started
once, before the alternating rounds (a start costs ~20 s a variant here), and keeps its best of
rounds x repeats windows.
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

  def __init__(self, variant: str, size: int, batch_size: int, count_flops: bool = True):
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


def measure_torch(python: str, variant: str, size: int, batch: int, repeats: int, inner: int,
                  threads: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference,
  timed in a subprocess at each of the comma-separated `threads` (0: torch's default)."""
  blocks, width = FCRN_VARIANTS[variant]
  cmd = [python, TORCH_SCRIPT, f"--blocks={','.join(map(str, blocks))}", f"--width={width}",
         f"--num_classes={NUM_CLASSES}", f"--group_size={GROUP_SIZE}", f"--batch={batch}",
         f"--size={size}", f"--repeats={repeats}", f"--inner={inner}", f"--threads={threads}"]
  # OpenMP threads that spin while they wait collapse when the cores are shared (a 2-thread fcrn_small
  # step went from ~0.15 s to ~3 s with other jobs running): let them sleep unless told otherwise.
  env = dict(os.environ)
  env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
  seconds = {int(t): float(ms) / 1e3 for t, ms in re.findall(r"threads=(\d+) ms=([\d.]+)", proc.stdout)}
  params = re.search(r"params=(\d+)", proc.stdout)
  error = "" if seconds else (proc.stderr.strip() or proc.stdout.strip())[-300:]
  return seconds, (int(params.group(1)) if params else None), error


def measure_xla_defaults(variants: list[tuple[str, int, int, int]], repeats: int) -> dict[str, float]:
  """{variant: seconds per step} of the same JAX steps in one fresh process without lesion_jax's
  XLA:CPU flag; `variants` holds (variant, size, batch, steps per timed window)."""
  env = dict(os.environ, LESION_JAX_XLA_DEFAULTS="0")
  env.pop("XLA_FLAGS", None)
  spec = ",".join(":".join(map(str, v)) for v in variants)
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--repeats={repeats}",
                         f"--xla_defaults_child={spec}"], env=env, capture_output=True, text=True, timeout=1800)
  return {v: float(ms) / 1e3 for v, ms in re.findall(r"xla_defaults variant=(\S+) ms=([\d.]+)", proc.stdout)}


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
  parser.add_argument("--torch_threads", default="0,1",
                      help="PyTorch intra-op thread counts to time, comma-separated (0: torch's default, "
                           "one per core); the ratio is against the fastest.")
  parser.add_argument("--no_xla_defaults", action="store_true",
                      help="Skip the timing with XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0).")
  parser.add_argument("--xla_defaults_child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.xla_defaults_child:  # the subprocess of measure_xla_defaults
    for item in args.xla_defaults_child.split(","):
      variant, size, batch, inner = item.split(":")
      step = JaxStep(variant, int(size), int(batch), count_flops=False)
      print(f"xla_defaults variant={variant} ms={common.best_seconds(step.call, args.repeats, int(inner)) * 1e3:.2f}",
            flush=True)
      del step
    return
  variants = parse_variants(args.variants)
  start = time.perf_counter()

  print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; "
        f"{os.cpu_count()} CPU cores; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  peak = common.matmul_peak_gflops()
  print(f"matmul peak (float32, 2048^3): {peak:.0f} GFLOP/s")
  torch_python = find_torch(args.torch_python)
  if torch_python:
    version = subprocess.run([torch_python, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
                             capture_output=True, text=True).stdout.split()
    print(f"PyTorch {version[0]} ({version[1]} threads) from {torch_python}")

  jax_steps, inners = {}, {}
  for variant, size, batch in variants:
    jax_steps[variant] = JaxStep(variant, size, batch)
    inners[variant] = int(np.clip(round(args.window_s / jax_steps[variant].probe_seconds()), 1, 5))
  # One fresh process for all variants (its start-up, model init and compile cost ~20 s a variant
  # on 2 cores), timed over as many windows as the alternating rounds below.
  defaults = {} if args.no_xla_defaults else measure_xla_defaults(
      [(v, size, batch, inners[v]) for v, size, batch in variants], args.rounds * args.repeats)

  for variant, size, batch in variants:
    blocks, width = FCRN_VARIANTS[variant]
    step, inner = jax_steps.pop(variant), inners[variant]
    defaults_best = defaults.get(variant, float("inf"))
    jax_best, torch_by_threads, torch_params, torch_error = float("inf"), {}, None, ""
    for _ in range(args.rounds):
      jax_best = min(jax_best, common.best_seconds(step.call, repeats=args.repeats, inner=inner))
      if torch_python:
        seconds, params, error = measure_torch(torch_python, variant, size, batch, args.repeats, inner,
                                               args.torch_threads)
        torch_params, torch_error = params or torch_params, error
        for threads, t in seconds.items():
          torch_by_threads[threads] = min(torch_by_threads.get(threads, float("inf")), t)
    torch_best = min(torch_by_threads.values(), default=float("inf"))
    gflops = step.flops / jax_best / 1e9
    print(f"\n{variant} (blocks {blocks}, width {width}) batch {batch} {size}px; best of {args.rounds} rounds "
          f"x {args.repeats} windows x {inner} steps; JAX first call (compile or cache load) {step.compile_s:.1f} s")
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
      print(f"  ratio JAX/PyTorch images/s, {variant}: {torch_best / jax_best:.2f} (against PyTorch's fastest)")
      if defaults_best < float("inf"):
        print(f"  ratio JAX/PyTorch images/s, {variant} with XLA's default CPU convolutions: "
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
