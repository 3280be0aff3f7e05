"""Timing helpers shared by the benchmarks: best-of-N wall time, matmul peak, XLA FLOP counts and
step memory, the --precision flag (lesion_jax/train/precision.py's policies); and
the JAX-against-PyTorch scaffolding of fcrn_step.py and inpainter_step.py (finding torch, timing its
reference script in a subprocess, the XLA-defaults subprocess, alternating rounds, the report).
The PyTorch reference scripts cannot import this (their interpreter may lack jax): theirs is
torch_common.py."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable

import lesion_jax

lesion_jax.setup_runtime()  # the XLA:CPU flags and compilation cache the verbs run with

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The `shared/` folder beside the checkout (the PyTorch reference scripts of bench/, the data
# samples): found from this file, so no benchmark names one machine's absolute path.
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared"))


def best_seconds(fn: Callable[[], Any], repeats: int = 5, inner: int = 5) -> float:
  """Best mean time per call over `repeats` rounds of `inner` calls (after one warm-up call).
  The best, not the mean: the machine is shared and only ever slows us down."""
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(inner):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / inner)
  return best


def matmul_peak_gflops(n: int = 2048, dtype: Any = np.float32) -> float:
  """This machine's matmul throughput (GFLOP/s) in `dtype` (a precision policy's compute dtype),
  measured now."""
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32), dtype)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / best_seconds(lambda: f(a), repeats=5, inner=3) / 1e9


def compiled_stats(jitted, *args) -> tuple[float, dict[str, int]]:
  """(FLOPs of one call, its device memory in bytes) from XLA's cost and memory analyses of the
  compiled function: memory {"arguments", "outputs", "temporaries", "aliased"} (aliased: the outputs
  that reuse donated arguments' buffers), {} where the backend gives none."""
  compiled = jitted.lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  names = {"arguments": "argument_size_in_bytes", "outputs": "output_size_in_bytes",
           "temporaries": "temp_size_in_bytes", "aliased": "alias_size_in_bytes"}
  memory = {k: int(getattr(mem, attr, 0) or 0) for k, attr in names.items()} if mem is not None else {}
  return float((cost or {}).get("flops", 0.0)), memory


def xla_flops(jitted, *args) -> float:
  """FLOPs of one call, from XLA's cost analysis of the compiled function."""
  return compiled_stats(jitted, *args)[0]


def memory_line(memory: dict[str, int]) -> str:
  """One line of `compiled_stats`' memory, in MiB."""
  if not memory:
    return "step memory (XLA): not reported by this backend"
  mib = {k: v / 2 ** 20 for k, v in memory.items()}
  total = mib["arguments"] + mib["temporaries"] + mib["outputs"] - mib["aliased"]
  return (f"step memory (XLA): {total:.1f} MiB at most = arguments {mib['arguments']:.1f} + temporaries "
          f"{mib['temporaries']:.1f} + outputs {mib['outputs']:.1f} - {mib['aliased']:.1f} of the outputs in "
          "donated arguments' buffers")


# --- precision ------------------------------------------------------------------------------------

def add_precision_arg(parser: argparse.ArgumentParser) -> None:
  from lesion_jax.train import precision  # pylint: disable=g-import-not-at-top
  parser.add_argument("--precision", default=precision.FLOAT32, choices=precision.POLICIES,
                      help="Precision policy (lesion_jax/train/precision.py), as a run's run.precision: the "
                           "model computes in it and its input images are sent in it; parameters, logits and "
                           "losses stay float32. The matmul peak is measured in it too.")


def device_inputs(policy_name: str, batch: dict[str, np.ndarray], keys: tuple[str, ...] = ("image",)) -> dict:
  """A host batch on the device as a run of `policy_name` sends it: the images at `keys` in the
  policy's input dtype (Task.host_inputs), every other field as it is."""
  from lesion_jax.train import precision  # pylint: disable=g-import-not-at-top
  host = {k: np.asarray(v) for k, v in batch.items()}
  return {k: jnp.asarray(v) for k, v in precision.policy(policy_name, "precision").host_inputs(host, keys).items()}


def compute_dtype(policy_name: str) -> Any:
  from lesion_jax.train import precision  # pylint: disable=g-import-not-at-top
  return precision.policy(policy_name, "precision").compute_dtype


# --- JAX against a PyTorch reference (fcrn_step.py, inpainter_step.py) ---------------------------

def adam_state(model, *inputs, size: int | None = None):
  """A fresh train state of `model` with Adam at 1e-3, what every step benchmark times (the optimiser's
  update is part of a step), initialised on `inputs` or, given `size`, on one zero image of that side."""
  from lesion_jax.train.state import create_train_state  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return create_train_state(model, optax.adam(1e-3), jax.random.key(0),
                            *(inputs or (jnp.zeros((1, size, size, 3)),)))


class JaxTrainStep:
  """A library train step on one fixed batch, jitted with the state donated; compiled (and its FLOPs
  counted) once on construction, then timed round after round. Subclasses build the state and batch;
  `params` is the parameter tree counted (default state.params; a GANState passes both players')."""

  def __init__(self, step: Callable, state, batch: dict, count_flops: bool = True, params: Any = None):
    self.batch = batch
    self.params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params if params is None else params))
    self.jitted = jax.jit(step, donate_argnums=(0,))
    self.rng = jax.random.key(1)
    start = time.perf_counter()
    self.state, metrics = self.jitted(state, self.batch, self.rng)  # compiles
    jax.block_until_ready(metrics)
    self.compile_s = time.perf_counter() - start
    self.flops, self.memory = (compiled_stats(self.jitted, self.state, self.batch, self.rng) if count_flops
                               else (0.0, {}))

  def call(self):
    self.state, metrics = self.jitted(self.state, self.batch, self.rng)
    return metrics["loss"]

  def probe_seconds(self) -> float:
    start = time.perf_counter()
    jax.block_until_ready(self.call())
    return time.perf_counter() - start


def comparison_parser(doc: str) -> argparse.ArgumentParser:
  """The parser of a JAX-against-PyTorch benchmark, with --torch_python, --no_torch and --precision;
  the script adds its workload flag, then add_round_args, its own flags, then add_xla_defaults_args."""
  parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_torch_args(parser)
  add_precision_arg(parser)
  return parser


def add_torch_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON"),
                      help="Python interpreter that has torch (default: this one).")
  parser.add_argument("--no_torch", action="store_true",
                      help="Time the JAX step only (e.g. on an accelerator, where the CPU PyTorch reference "
                           "says nothing).")


def add_round_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--rounds", type=int, default=3, help="Alternating JAX/PyTorch rounds.")
  parser.add_argument("--repeats", type=int, default=3, help="Timed windows per round (best kept).")
  parser.add_argument("--window_s", type=float, default=1.0,
                      help="Aim for timed windows of about this long: steps per window = "
                           "clip(window_s / step time, 1, 5), the same for JAX and PyTorch.")
  parser.add_argument("--torch_threads", default="0,1",
                      help="PyTorch intra-op thread counts to time, comma-separated (0: torch's default, "
                           "one per core); the ratio is against the fastest.")


def add_xla_defaults_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--no_xla_defaults", action="store_true",
                      help="Skip the timing with XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0).")
  parser.add_argument("--xla_defaults_child", help=argparse.SUPPRESS)


def window_steps(step: JaxTrainStep, window_s: float) -> int:
  """Steps per timed window: clip(window_s / one step's time, 1, 5)."""
  return int(np.clip(round(window_s / step.probe_seconds()), 1, 5))


def find_torch(python_flag: str | None) -> str | None:
  """The interpreter (--torch_python, else this one) if it imports torch, else None."""
  python = python_flag or sys.executable
  try:
    ok = subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=300).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    ok = False
  return python if ok else None


def print_setup(python_flag: str | None, torch_note: str = "", no_torch: bool = False,
                precision: str = "float32") -> tuple[float, str | None]:
  """Prints the JAX, matmul-peak (in `precision`'s compute dtype) and (if found, unless `no_torch`)
  PyTorch lines; returns (peak GFLOP/s, torch python)."""
  device = jax.devices()[0]
  print(f"jax {jax.__version__} on {device.platform} x{len(jax.devices())} ({device.device_kind}); "
        f"{os.cpu_count()} CPU cores; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; precision {precision}")
  peak = matmul_peak_gflops(dtype=compute_dtype(precision))
  print(f"matmul peak ({compute_dtype(precision)}, 2048^3): {peak:.0f} GFLOP/s")
  torch_python = None if no_torch else find_torch(python_flag)
  if torch_python:
    version = subprocess.run([torch_python, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
                             capture_output=True, text=True).stdout.split()
    print(f"PyTorch {version[0]} ({version[1]} threads) from {torch_python}{torch_note}")
  return peak, torch_python


def run_torch_reference(cmd: list[str]) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) from a PyTorch reference script's
  `... params=P threads=T ms=...` lines (benchmarks/torch_common.time_threads), run as `cmd`."""
  # OpenMP threads that spin while they wait collapse when the cores are shared (a 2-thread fcrn_small
  # step went from ~0.15 s to ~3 s with other jobs running): let them sleep unless told otherwise.
  env = dict(os.environ)
  env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
  seconds = {int(t): float(ms) / 1e3 for t, ms in re.findall(r"threads=(\d+) ms=([\d.]+)", proc.stdout)}
  params = re.search(r"params=(\d+)", proc.stdout)
  error = "" if seconds else (proc.stderr.strip() or proc.stdout.strip())[-300:]
  return seconds, (int(params.group(1)) if params else None), error


def xla_defaults_seconds(script: str, items: list[str], repeats: int, key: str,
                         precision: str = "float32") -> dict[str, float]:
  """{name: seconds per step} of `script`'s JAX steps (in `precision`), timed in one fresh `script
  --xla_defaults_child=ITEM,...` process without lesion_jax's XLA:CPU flag (LESION_JAX_XLA_DEFAULTS=0,
  no XLA_FLAGS), which prints one `xla_defaults KEY=NAME ms=...` line per item."""
  env = dict(os.environ, LESION_JAX_XLA_DEFAULTS="0")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, os.path.abspath(script), f"--repeats={repeats}", f"--precision={precision}",
                         f"--xla_defaults_child={','.join(items)}"], env=env, capture_output=True, text=True,
                        timeout=1800)
  return {n: float(ms) / 1e3 for n, ms in re.findall(rf"xla_defaults {key}=(\S+) ms=([\d.]+)", proc.stdout)}


@dataclasses.dataclass
class Rounds:
  """Best times of alternating JAX / PyTorch rounds."""
  jax_s: float = float("inf")
  torch_s: dict[int, float] = dataclasses.field(default_factory=dict)  # {thread count: seconds per step}
  torch_params: int | None = None
  torch_error: str = ""

  @property
  def torch_best(self) -> float:
    return min(self.torch_s.values(), default=float("inf"))


def alternate_rounds(rounds: int, repeats: int, inner: int, jax_call: Callable[[], Any],
                     measure_torch: Callable[[], tuple[dict[int, float], int | None, str]] | None) -> Rounds:
  """`rounds` times: best_seconds(jax_call), then (unless None) measure_torch(), as run_torch_reference
  returns; keeps the best of each (per PyTorch thread count)."""
  out = Rounds()
  for _ in range(rounds):
    out.jax_s = min(out.jax_s, best_seconds(jax_call, repeats=repeats, inner=inner))
    if measure_torch is not None:
      seconds, params, error = measure_torch()
      out.torch_params, out.torch_error = params or out.torch_params, error
      for threads, t in seconds.items():
        out.torch_s[threads] = min(out.torch_s.get(threads, float("inf")), t)
  return out


def compare_step(name: str, header: str, step: Any, inner: int, args: Any, measure_torch: Callable[[], Any] | None,
                 *, batch: int, peak: float, defaults: dict[str, float], torch_python: str | None,
                 torch_script: str, suffix: str = "") -> None:
  """One workload of a JAX-against-PyTorch step benchmark: alternate_rounds of `step` (a
  jax_step_stats result: call, compile_s, flops, params, memory) and `measure_torch` (None without
  PyTorch), the header line (`header`, the rounds, the compile time, `suffix`), then report_comparison."""
  measured = alternate_rounds(args.rounds, args.repeats, inner, step.call, measure_torch if torch_python else None)
  print(f"\n{header}; best of {args.rounds} rounds x {args.repeats} windows x {inner} steps; JAX first call "
        f"(compile or cache load) {step.compile_s:.1f} s{suffix}")
  report_comparison(name, measured, batch=batch, flops=step.flops, params=step.params, peak=peak,
                    defaults_s=defaults.get(name, float("inf")), torch_python=torch_python,
                    torch_python_flag=args.torch_python, torch_script=torch_script, memory=step.memory,
                    no_torch=args.no_torch)


def parse_variants(text: str, known: Any, default_size: int, default_batch: int, flag: str = "--variants"
                   ) -> list[tuple[str, int, int]]:
  """'a:128:8,b' -> [(variant, size, batch), ...]: a network variant of `known` with its image size and
  batch (defaults where left out); an unknown variant exits naming `flag` and the choices."""
  out = []
  for item in filter(None, text.split(",")):
    parts = item.split(":")
    name, size, batch = (parts + [str(default_size), str(default_batch)][len(parts) - 1:])[:3]
    if name not in known:
      raise SystemExit(f"{flag}: unknown variant {name!r}; choose from {list(known)}")
    out.append((name, int(size), int(batch)))
  return out


def variant_benchmark_main(doc: str, script: str, known: Any, default_variants: str,
                           build: Callable[..., JaxTrainStep], describe: Callable[[str, int, int], str],
                           measure_torch: Callable[[str, str, int, int, int, int, str], Any], torch_script: str) -> None:
  """main() of a benchmark whose workloads are network variants (fcrn_step.py, lfn_step.py): the
  comparison flags with --variants=VARIANT:SIZE:BATCH,... (`known` variants; sizes and batches left
  out take `default_variants`' first), then: `build(variant, size, batch, count_flops=, precision=)`
  makes the JAX step; in the subprocess of xla_defaults_seconds (--xla_defaults_child) it only times
  those steps. Otherwise: the setup lines, every JAX step compiled, XLA's defaults timed once in one
  process (unless --no_xla_defaults), then compare_step per variant against `measure_torch(python,
  variant, size, batch, repeats, inner, threads)`, headed by `describe(variant, size, batch)`."""
  parser = comparison_parser(doc)
  parser.add_argument("--variants", default=default_variants,
                      help="Comma-separated VARIANT:SIZE:BATCH (variants: " + ", ".join(known) + ").")
  add_round_args(parser)
  add_xla_defaults_args(parser)
  args = parser.parse_args()
  _, default_size, default_batch = default_variants.split(",")[0].split(":")
  variants = parse_variants(args.variants, known, int(default_size), int(default_batch))
  if args.xla_defaults_child:
    for item in args.xla_defaults_child.split(","):
      variant, size, batch, inner = item.split(":")
      step = build(variant, int(size), int(batch), count_flops=False, precision=args.precision)
      print(f"xla_defaults variant={variant} ms={best_seconds(step.call, args.repeats, int(inner)) * 1e3:.2f}",
            flush=True)
      del step
    return
  start = time.perf_counter()
  peak, torch_python = print_setup(args.torch_python, no_torch=args.no_torch, precision=args.precision)
  steps, inners = {}, {}
  for variant, size, batch in variants:
    steps[variant] = build(variant, size, batch, precision=args.precision)
    inners[variant] = window_steps(steps[variant], args.window_s)
  # One fresh process for all variants (its start-up, model init and compile cost ~20 s a variant on
  # 2 cores), timed over as many windows as the alternating rounds below.
  defaults = {} if args.no_xla_defaults else xla_defaults_seconds(
      script, [f"{v}:{size}:{batch}:{inners[v]}" for v, size, batch in variants], args.rounds * args.repeats,
      "variant", args.precision)
  for variant, size, batch in variants:
    step, inner = steps.pop(variant), inners[variant]
    compare_step(variant, describe(variant, size, batch), step, inner, args,
                 lambda: measure_torch(torch_python, variant, size, batch, args.repeats, inner, args.torch_threads),
                 batch=batch, peak=peak, defaults=defaults, torch_python=torch_python, torch_script=torch_script)
    del step
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


def report_comparison(name: str, measured: Rounds, *, batch: int, flops: float, params: int, peak: float,
                      defaults_s: float, torch_python: str | None, torch_python_flag: str | None,
                      torch_script: str, memory: dict[str, int] | None = None, no_torch: bool = False) -> None:
  """Prints a config's JAX line, XLA-defaults line (if defaults_s is finite), one PyTorch line per
  thread count, the parameter counts, the step's memory (`compiled_stats`, where given) and the
  JAX/PyTorch ratios (or why they were skipped)."""
  jax_s, torch_best = measured.jax_s, measured.torch_best
  gflops = flops / jax_s / 1e9
  print(f"  JAX:     {jax_s * 1e3:8.1f} ms/step, {batch / jax_s:7.2f} img/s, "
        f"{flops / 1e9:.1f} GFLOP/step (XLA), {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of matmul peak")
  if defaults_s < float("inf"):
    d_gflops = flops / defaults_s / 1e9
    print(f"  JAX, XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0): {defaults_s * 1e3:.1f} ms/step, "
          f"{batch / defaults_s:.2f} img/s, {d_gflops:.0f} GFLOP/s = {d_gflops / peak:.0%} of matmul peak")
  for threads, t in sorted(measured.torch_s.items(), reverse=True):
    t_gflops = flops / t / 1e9
    print(f"  PyTorch: {t * 1e3:8.1f} ms/step, {batch / t:7.2f} img/s, {t_gflops:.0f} GFLOP/s at JAX's "
          f"FLOP count = {t_gflops / peak:.0%} of matmul peak ({threads} thread{'s' * (threads > 1)}"
          f"{', fastest' if t == torch_best and len(measured.torch_s) > 1 else ''})")
  if measured.torch_params is not None:
    same = "same" if measured.torch_params == params else "MISMATCH: the reference is not the same network"
    print(f"  parameters: JAX {params:,}, PyTorch {measured.torch_params:,} ({same})")
  else:
    print(f"  parameters: JAX {params:,}")
  if memory is not None:
    print(f"  {memory_line(memory)}")
  if torch_best < float("inf"):
    print(f"  ratio JAX/PyTorch images/s, {name}: {torch_best / jax_s:.2f} (against PyTorch's fastest)")
    if defaults_s < float("inf"):
      print(f"  ratio JAX/PyTorch images/s, {name} with XLA's default CPU convolutions: "
            f"{torch_best / defaults_s:.2f}")
  elif no_torch:
    print("  ratio JAX/PyTorch: skipped (--no_torch)")
  elif torch_python:
    print(f"  ratio JAX/PyTorch: skipped ({torch_script} failed: {measured.torch_error})")
  else:
    where = f"--torch_python={torch_python_flag} does not import torch" if torch_python_flag else \
        "torch is not installed in this interpreter"
    print(f"  ratio JAX/PyTorch: skipped ({where}; pip install torch==2.13.0, or pass --torch_python)")
