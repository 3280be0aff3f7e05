r"""Train-step throughput of the FCRN (the Lesion Indexing Network's network), against PyTorch.

  python benchmarks/fcrn_step.py [--torch_python=PATH | --no_torch] [--variants=fcrn_small:128:8,fcrn50:128:4]
                                 [--rounds=3] [--torch_threads=0,1] [--no_xla_defaults]
                                 [--precision=float32|bfloat16]

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

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.models.fcrn import FCRN_VARIANTS, fcrn  # noqa: E402
from lesion_jax.pipelines.lesion_index import task as lesion_index  # noqa: E402
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


class JaxStep(common.JaxTrainStep):
  """The library's FCRN train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, variant: str, size: int, batch_size: int, count_flops: bool = True,
               precision: str = "float32"):
    rng = np.random.default_rng(0)
    batch = common.device_inputs(precision, {
        "image": rng.random((batch_size, size, size, 3), np.float32) * 2 - 1,
        "mask": (rng.random((batch_size, size, size, 1)) > 0.5).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES - 1, batch_size).astype(np.int32)})
    model = fcrn(variant, num_classes=NUM_CLASSES, dtype=common.compute_dtype(precision))
    state = create_train_state(model, optax.adam(1e-3), jax.random.key(0), jnp.zeros((1, size, size, 3)))
    step = lesion_index.LesionIndexTask(lesion_index.LesionIndexConfig()).train_step()
    super().__init__(step, state, batch, count_flops)


def measure_torch(python: str, variant: str, size: int, batch: int, repeats: int, inner: int,
                  threads: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference,
  timed in a subprocess at each of the comma-separated `threads` (0: torch's default)."""
  blocks, width = FCRN_VARIANTS[variant]
  return common.run_torch_reference(
      [python, TORCH_SCRIPT, f"--blocks={','.join(map(str, blocks))}", f"--width={width}",
       f"--num_classes={NUM_CLASSES}", f"--group_size={GROUP_SIZE}", f"--batch={batch}",
       f"--size={size}", f"--repeats={repeats}", f"--inner={inner}", f"--threads={threads}"])


def measure_xla_defaults(variants: list[tuple[str, int, int, int]], repeats: int, precision: str) -> dict[str, float]:
  """{variant: seconds per step} of the same JAX steps in one fresh process without lesion_jax's
  XLA:CPU flag; `variants` holds (variant, size, batch, steps per timed window)."""
  return common.xla_defaults_seconds(__file__, [":".join(map(str, v)) for v in variants], repeats, "variant",
                                     precision)


def main() -> None:
  parser = common.comparison_parser(__doc__)
  parser.add_argument("--variants", default="fcrn_small:128:8,fcrn50:128:4",
                      help="Comma-separated VARIANT:SIZE:BATCH (variants: " + ", ".join(FCRN_VARIANTS) + ").")
  common.add_round_args(parser)
  common.add_xla_defaults_args(parser)
  args = parser.parse_args()
  if args.xla_defaults_child:  # the subprocess of measure_xla_defaults
    for item in args.xla_defaults_child.split(","):
      variant, size, batch, inner = item.split(":")
      step = JaxStep(variant, int(size), int(batch), count_flops=False, precision=args.precision)
      print(f"xla_defaults variant={variant} ms={common.best_seconds(step.call, args.repeats, int(inner)) * 1e3:.2f}",
            flush=True)
      del step
    return
  variants = parse_variants(args.variants)
  start = time.perf_counter()
  peak, torch_python = common.print_setup(args.torch_python, no_torch=args.no_torch, precision=args.precision)

  jax_steps, inners = {}, {}
  for variant, size, batch in variants:
    jax_steps[variant] = JaxStep(variant, size, batch, precision=args.precision)
    inners[variant] = common.window_steps(jax_steps[variant], args.window_s)
  # One fresh process for all variants (its start-up, model init and compile cost ~20 s a variant
  # on 2 cores), timed over as many windows as the alternating rounds below.
  defaults = {} if args.no_xla_defaults else measure_xla_defaults(
      [(v, size, batch, inners[v]) for v, size, batch in variants], args.rounds * args.repeats, args.precision)

  for variant, size, batch in variants:
    blocks, width = FCRN_VARIANTS[variant]
    step, inner = jax_steps.pop(variant), inners[variant]
    common.compare_step(
        variant, f"{variant} (blocks {blocks}, width {width}) batch {batch} {size}px", step, inner, args,
        lambda: measure_torch(torch_python, variant, size, batch, args.repeats, inner, args.torch_threads),
        batch=batch, peak=peak, defaults=defaults, torch_python=torch_python, torch_script=TORCH_SCRIPT)
    del step
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
