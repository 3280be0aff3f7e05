r"""Train-step throughput of the Lesion Feature Network (pipeline 5's patch classifier), against PyTorch.

  python benchmarks/lfn_step.py [--torch_python=PATH | --no_torch] [--variants=lfn:56:64,lfn_wide:56:64]
                                [--rounds=3] [--torch_threads=0,1] [--no_xla_defaults]
                                [--precision=float32|bfloat16]

The JAX step is the library's own, as the training loop runs it: FeatureNetworkTask's train_step
(steps.make_supervised_train_step with feature_network.weighted_cross_entropy, the paper's class
weights 1, 1, 5, 3, 8, plus accuracy) on a create_train_state(lfn(variant), optax.adam(1e-3)) state,
jitted with the state donated (Adam on both sides, as the other step benchmarks; the LFN's own
config trains with SGD, a negligible part of the step). Batch: image (N, 56, 56, 3) superpixel
patches, label (N,) in 0..4: the default is the pipeline's (patch.size 56, input.batch_size 64).
The PyTorch reference, benchmarks/torch_lfn_step.py, is the same network built in PyTorch (NCHW;
widths passed from lesion_jax.models.lfn.LFN_VARIANTS), the same weighted loss, Adam; both
parameter counts are printed and must agree.

Measured as benchmarks/fcrn_step.py measures (its docstring says why): JAX and PyTorch alternately in
the same run, best of several rounds each; the ratio is JAX images/s over PyTorch's fastest thread
count (>1 = JAX faster); the fraction of this machine's matmul peak; and, unless --no_xla_defaults,
the JAX step with XLA's own CPU defaults in one subprocess.
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
from lesion_jax.models.lfn import LFN_VARIANTS, lfn  # noqa: E402
from lesion_jax.pipelines.lesion_index import feature_network  # noqa: E402
from lesion_jax.train.state import create_train_state  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_lfn_step.py")
NUM_CLASSES = 5  # background + the four ISIC 2017 dermoscopic features


def parse_variants(text: str) -> list[tuple[str, int, int]]:
  """'lfn:56:64,lfn_wide:56:64' -> [(variant, size, batch), ...]."""
  out = []
  for item in filter(None, text.split(",")):
    name, size, batch = (item.split(":") + ["56", "64"])[:3]
    if name not in LFN_VARIANTS:
      raise SystemExit(f"--variants: unknown LFN variant {name!r}; choose from {list(LFN_VARIANTS)}")
    out.append((name, int(size), int(batch)))
  return out


class JaxStep(common.JaxTrainStep):
  """The library's LFN train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, variant: str, size: int, batch_size: int, count_flops: bool = True,
               precision: str = "float32"):
    rng = np.random.default_rng(0)
    batch = common.device_inputs(precision, {
        "image": rng.random((batch_size, size, size, 3), np.float32) * 2 - 1,
        "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)})
    model = lfn(variant, num_classes=NUM_CLASSES, dtype=common.compute_dtype(precision))
    state = create_train_state(model, optax.adam(1e-3), jax.random.key(0), jnp.zeros((1, size, size, 3)))
    step = feature_network.FeatureNetworkTask(feature_network.FeatureNetworkConfig()).train_step()
    super().__init__(step, state, batch, count_flops)


def measure_torch(python: str, variant: str, size: int, batch: int, repeats: int, inner: int,
                  threads: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference."""
  return common.run_torch_reference(
      [python, TORCH_SCRIPT, f"--widths={','.join(map(str, LFN_VARIANTS[variant]))}",
       f"--num_classes={NUM_CLASSES}", f"--batch={batch}", f"--size={size}", f"--repeats={repeats}",
       f"--inner={inner}", f"--threads={threads}"])


def main() -> None:
  parser = common.comparison_parser(__doc__)
  parser.add_argument("--variants", default="lfn:56:64,lfn_wide:56:64",
                      help="Comma-separated VARIANT:SIZE:BATCH (variants: " + ", ".join(LFN_VARIANTS) + ").")
  common.add_round_args(parser)
  common.add_xla_defaults_args(parser)
  args = parser.parse_args()
  if args.xla_defaults_child:  # the subprocess of common.xla_defaults_seconds
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
  defaults = {} if args.no_xla_defaults else common.xla_defaults_seconds(
      __file__, [f"{v}:{size}:{batch}:{inners[v]}" for v, size, batch in variants], args.rounds * args.repeats,
      "variant", args.precision)
  for variant, size, batch in variants:
    step, inner = jax_steps.pop(variant), inners[variant]
    common.compare_step(
        variant, f"{variant} (widths {LFN_VARIANTS[variant]}) batch {batch} {size}px", step, inner, args,
        lambda: measure_torch(torch_python, variant, size, batch, args.repeats, inner, args.torch_threads),
        batch=batch, peak=peak, defaults=defaults, torch_python=torch_python, torch_script=TORCH_SCRIPT)
    del step
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
