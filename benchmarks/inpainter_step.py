r"""Train-step throughput of the partial-convolution inpainter (PConvUNet), against PyTorch.

  python benchmarks/inpainter_step.py [--torch_python=PATH | --no_torch] [--configs=32:5:128:8] [--rounds=3]
                                      [--torch_threads=0,1] [--torch_mask_conv=channel_sum]
                                      [--no_xla_defaults] [--precision=float32|bfloat16]

The JAX step is the library's own: pipelines/purification/steps.py
make_train_step(InpaintingLossWeights(), feature_fn=None) (L_valid + 6 L_hole + 0.1 L_tv, no
perceptual/style terms: they need a feature network) on a create_train_state(PConvUNet(features,
levels), optax.adam(1e-3)) state, jitted with the state donated. A config is
FEATURES:LEVELS:SIZE:BATCH; the default, 32:5:128:8, is the model's default (features=32,
levels=5: widths 32, 64, 128, 256, 256, a 4x4 bottleneck at 128 px) at batch 8. Batch: target
(N, S, S, 3) in [-1, 1], mask (N, S, S, 1) with a block and a line of holes
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

import os
import sys
import time

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.models.inpainting import PConvUNet  # noqa: E402
from lesion_jax.pipelines.purification import losses, steps  # noqa: E402

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


class JaxStep(common.JaxTrainStep):
  """The library's inpainting train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, features: int, levels: int, size: int, batch_size: int, count_flops: bool = True,
               precision: str = "float32"):
    rng = np.random.default_rng(0)
    # Float32 in every policy: the target is also the input (InpaintingTask.input_keys is empty).
    target = jnp.asarray(rng.random((batch_size, size, size, 3), np.float32) * 2 - 1)
    mask = jnp.asarray(hole_masks(batch_size, size))
    model = PConvUNet(features=features, levels=levels, dtype=common.compute_dtype(precision))
    state = common.adam_state(model, target[:1], mask[:1])
    step = steps.make_train_step(losses.InpaintingLossWeights(), feature_fn=None)
    super().__init__(step, state, {"target": target, "mask": mask}, count_flops)


def config_name(config: tuple[int, int, int, int]) -> str:
  return ":".join(map(str, config))


def measure_torch(python: str, config: tuple[int, int, int, int], repeats: int, inner: int, threads: str,
                  mask_conv: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference,
  timed in a subprocess at each of the comma-separated `threads` (0: torch's default)."""
  features, levels, size, batch = config
  return common.run_torch_reference(
      [python, TORCH_SCRIPT, f"--features={features}", f"--levels={levels}", f"--batch={batch}",
       f"--size={size}", f"--repeats={repeats}", f"--inner={inner}", f"--threads={threads}",
       f"--mask_conv={mask_conv}"])


def measure_xla_defaults(configs: list[tuple[tuple[int, int, int, int], int]], repeats: int,
                         precision: str) -> dict[str, float]:
  """{config name: seconds per step} of the same JAX steps in one fresh process without lesion_jax's
  XLA:CPU flag; `configs` holds (config, steps per timed window)."""
  return common.xla_defaults_seconds(__file__, [f"{config_name(c)}:{inner}" for c, inner in configs], repeats,
                                     "config", precision)


def main() -> None:
  parser = common.comparison_parser(__doc__)
  parser.add_argument("--configs", default="32:5:128:8",
                      help="Comma-separated FEATURES:LEVELS:SIZE:BATCH of PConvUNet.")
  common.add_round_args(parser)
  parser.add_argument("--torch_mask_conv", default="channel_sum", choices=("channel_sum", "nvidia"),
                      help="How the PyTorch reference computes the mask sums (see torch_inpainter_step.py).")
  common.add_xla_defaults_args(parser)
  args = parser.parse_args()
  if args.xla_defaults_child:  # the subprocess of measure_xla_defaults
    for item in args.xla_defaults_child.split(","):
      *config, inner = (int(p) for p in item.split(":"))
      step = JaxStep(*config, count_flops=False, precision=args.precision)
      print(f"xla_defaults config={config_name(config)} "
            f"ms={common.best_seconds(step.call, args.repeats, inner) * 1e3:.2f}", flush=True)
      del step
    return
  configs = parse_configs(args.configs)
  start = time.perf_counter()
  peak, torch_python = common.print_setup(args.torch_python, f"; mask sums: {args.torch_mask_conv}",
                                          no_torch=args.no_torch, precision=args.precision)

  jax_steps, inners = {}, {}
  for config in configs:
    name = config_name(config)
    jax_steps[name] = JaxStep(*config, precision=args.precision)
    inners[name] = common.window_steps(jax_steps[name], args.window_s)
  defaults = {} if args.no_xla_defaults else measure_xla_defaults(
      [(c, inners[config_name(c)]) for c in configs], args.rounds * args.repeats, args.precision)

  for config in configs:
    features, levels, size, batch = config
    name = config_name(config)
    step, inner = jax_steps.pop(name), inners[name]
    common.compare_step(
        name, f"PConvUNet(features={features}, levels={levels}) batch {batch} {size}px", step, inner, args,
        lambda: measure_torch(torch_python, config, args.repeats, inner, args.torch_threads, args.torch_mask_conv),
        batch=batch, peak=peak, defaults=defaults, torch_python=torch_python, torch_script=TORCH_SCRIPT)
    del step
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
