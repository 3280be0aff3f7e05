r"""Train-step throughput of the DCGAN (data generation), against PyTorch.

  python benchmarks/gan_step.py [--torch_python=PATH | --no_torch] [--image_size=64] [--batch_size=64]
                                [--features=64] [--classes=1] [--steps=3] [--repeats=3] [--warmup=2]
                                [--rounds=2] [--torch_threads=0] [--no_xla_defaults]
                                [--precision=float32|bfloat16]

The JAX step is the library's own, as GANTask trains it (de-coupled): pipelines/gan/steps.py
make_train_step (latent_dim, real_label, extra_generator_steps: GANConfig's defaults 10, 0.9, 2) on
a state.create_state(dcgan.Generator, dcgan.Discriminator) state with GANConfig's optimiser
(Adam(2e-4, b1 0.5), constant) for both players, jitted with the state donated. One step is one
joint round: a discriminator update on the B real images and B generated ones, then 3 generator
updates on fresh latents. Batch: image (B, C, S, S, 3), uniform in [-1, 1].
The PyTorch reference, benchmarks/torch_gan_step.py, is the same DCGAN for one class model built
in PyTorch (NCHW), the same round, the same Adams; both parameter counts are printed and must agree.

Images/s counts B x C real images per round (B per class model; --batch_size is B). The training
loop's img/s counts its global batch, B, per round: the same at C = 1, C times less at C > 1.
--classes=1,3 also times 3 de-coupled class models: one JAX step over all three against 3 PyTorch
models trained one after the other each round (the scaling line compares each C with C = 1).

As benchmarks/fcrn_step.py and inpainter_step.py (see fcrn_step.py's docstring for the reasons):
JAX and PyTorch are measured alternately in the same run (--rounds; PyTorch in a fresh subprocess
each round, with OMP_WAIT_POLICY=PASSIVE unless set); the ratio is JAX images/s over the fastest
PyTorch thread count's (>1 = JAX faster). PyTorch runs at its default thread count (one per
core, as XLA:CPU) unless --torch_threads says otherwise (e.g. 0,1). Each side's time is the
median over all its timed windows (--repeats windows of --steps rounds per round, after --warmup
untimed rounds: JAX's before its first round, PyTorch's in each subprocess). The JAX step is also timed in
one subprocess with XLA's own CPU defaults (LESION_JAX_XLA_DEFAULTS=0) unless --no_xla_defaults.
FLOPs are XLA's cost analysis of the JAX step (the PyTorch line uses the same count).
PyTorch is found in this interpreter, or in --torch_python (or $TORCH_PYTHON); without it the
ratio line says "skipped".

Cost: with the sub-pixel transposed convolution, per-class private submodules and unrolled
generator updates (see README, Design), one 32 px step at batch 32, features 32 takes ~0.15 s on
2 cores; before them it took 3 s (64 px, features 64: ~55 s).
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.models import dcgan  # noqa: E402
from lesion_jax.pipelines.gan import steps  # noqa: E402
from lesion_jax.pipelines.gan.state import create_state  # noqa: E402
from lesion_jax.pipelines.gan.task import GANConfig  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_gan_step.py")
TASK = GANConfig()  # the task's defaults: optimiser, real label, latent length, extra generator steps


class JaxStep(common.JaxTrainStep):
  """The GAN's make_train_step on one fixed batch of C class models; compiled once, timed round after round."""

  def __init__(self, size: int, batch_size: int, features: int, classes: int, latent_dim: int,
               extra_generator_steps: int, count_flops: bool = True, precision: str = "float32"):
    batch = common.device_inputs(precision, {
        "image": np.random.default_rng(0).random((batch_size, classes, size, size, 3), np.float32) * 2 - 1})
    dtype = common.compute_dtype(precision)
    generator = dcgan.Generator(size, features, classes, dtype=dtype)
    discriminator = dcgan.Discriminator(size, features, classes, dtype=dtype)
    tx = TASK.optimizer.build(TASK.run.num_steps)
    state = create_state(generator, discriminator, tx, tx, jax.random.key(0),
                         jnp.zeros((1, classes, latent_dim)), jnp.zeros((1, classes, size, size, 3)))
    step = steps.make_train_step(latent_dim, TASK.real_label, extra_generator_steps, TASK.feature_matching)
    super().__init__(step, state, batch, count_flops,
                     params=(state.generator.params, state.discriminator.params))


def window_seconds(call, warmup: int, steps_per_window: int, windows: int) -> list[float]:
  """Mean seconds per step of each of `windows` windows of `steps_per_window` calls, after `warmup`."""
  out = None
  for _ in range(warmup):
    out = call()
  jax.block_until_ready(out)
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps_per_window):
      out = call()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / steps_per_window)
  return times


def torch_windows(python: str, args, classes: int) -> tuple[dict[int, list[float]], int | None, str]:
  """({thread count: window seconds}, parameter count, error text) of one torch_gan_step.py run."""
  env = dict(os.environ)
  env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see common.run_torch_reference
  cmd = [python, TORCH_SCRIPT, f"--size={args.image_size}", f"--batch={args.batch_size}",
         f"--features={args.features}", f"--classes={classes}", f"--latent_dim={args.latent_dim}",
         f"--extra_generator_steps={args.extra_generator_steps}", f"--warmup={args.warmup}",
         f"--repeats={args.repeats}", f"--inner={args.steps}", f"--threads={args.torch_threads}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
  windows = {int(t): [float(w) / 1e3 for w in ws.split(",")]
             for t, ws in re.findall(r"threads=(\d+) ms=[\d.]+ windows_ms=([\d.,]+)", proc.stdout)}
  params = re.search(r"params=(\d+)", proc.stdout)
  error = "" if windows else (proc.stderr.strip() or proc.stdout.strip())[-300:]
  return windows, (int(params.group(1)) if params else None), error


def child_item(args, classes: int) -> str:
  return ":".join(map(str, (args.image_size, args.batch_size, args.features, classes, args.latent_dim,
                            args.extra_generator_steps, args.warmup, args.steps)))


def main() -> None:
  parser = common.comparison_parser(__doc__)
  parser.add_argument("--image_size", type=int, default=64, help="S: 4 * 2**n (8 .. 256).")
  parser.add_argument("--batch_size", type=int, default=64, help="B: real (and generated) images per class model.")
  parser.add_argument("--features", type=int, default=64,
                      help="Generator and discriminator features (DCGANModelConfig's generator_features, "
                           "discriminator_features).")
  parser.add_argument("--classes", default="1",
                      help="Comma-separated numbers of de-coupled class models C, each timed (e.g. 1,3).")
  parser.add_argument("--latent_dim", type=int, default=TASK.model.latent_dim)
  parser.add_argument("--extra_generator_steps", type=int, default=TASK.extra_generator_steps)
  parser.add_argument("--steps", type=int, default=3, help="Rounds (steps) per timed window.")
  parser.add_argument("--repeats", type=int, default=3, help="Timed windows per round and side.")
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before each side's windows.")
  parser.add_argument("--rounds", type=int, default=2, help="Alternating JAX/PyTorch rounds.")
  parser.add_argument("--torch_threads", default="0",
                      help="PyTorch intra-op thread counts to time, comma-separated (0: torch's default, one "
                           "per core, as XLA:CPU); the ratio is against the fastest.")
  common.add_xla_defaults_args(parser)
  args = parser.parse_args()
  if args.xla_defaults_child:  # the subprocess of common.xla_defaults_seconds
    for item in args.xla_defaults_child.split(","):
      size, batch, features, classes, latent, extra, warmup, steps_per_window = map(int, item.split(":"))
      step = JaxStep(size, batch, features, classes, latent, extra, count_flops=False, precision=args.precision)
      seconds = window_seconds(step.call, warmup, steps_per_window, args.repeats)
      print(f"xla_defaults config={item} ms={statistics.median(seconds) * 1e3:.2f}", flush=True)
      del step
    return
  class_counts = [int(c) for c in args.classes.split(",") if c]
  start = time.perf_counter()
  peak, torch_python = common.print_setup(args.torch_python, no_torch=args.no_torch, precision=args.precision)
  defaults = {} if args.no_xla_defaults else common.xla_defaults_seconds(
      __file__, [child_item(args, c) for c in class_counts], args.rounds * args.repeats, "config", args.precision)

  jax_per_image = {}
  for classes in class_counts:
    step = JaxStep(args.image_size, args.batch_size, args.features, classes, args.latent_dim,
                   args.extra_generator_steps, precision=args.precision)
    jax_s, torch_s, measured = [], {}, common.Rounds()
    for r in range(args.rounds):  # JAX's warm-up once (same process), PyTorch's in each subprocess
      jax_s += window_seconds(step.call, args.warmup if r == 0 else 0, args.steps, args.repeats)
      if torch_python:
        windows, params, error = torch_windows(torch_python, args, classes)
        measured.torch_params, measured.torch_error = params or measured.torch_params, error
        for threads, seconds in windows.items():
          torch_s.setdefault(threads, []).extend(seconds)
    measured.jax_s = statistics.median(jax_s)
    measured.torch_s = {t: statistics.median(s) for t, s in torch_s.items()}
    images = args.batch_size * classes
    jax_per_image[classes] = measured.jax_s / images
    print(f"\nDCGAN x {classes} de-coupled class model{'s' * (classes > 1)} (features {args.features}, latent "
          f"{args.latent_dim}), {args.image_size}px, batch {args.batch_size} per class = {images} images/step; "
          f"step = 1 D + {1 + args.extra_generator_steps} G updates; median of {args.rounds} rounds x "
          f"{args.repeats} windows x {args.steps} steps (after {args.warmup} warm-up steps); "
          f"JAX first call (compile or cache load) {step.compile_s:.1f} s")
    spread = [f"JAX {min(jax_s) * 1e3:.0f}-{max(jax_s) * 1e3:.0f}"] + [
        f"PyTorch {t} thread{'s' * (t > 1)} {min(s) * 1e3:.0f}-{max(s) * 1e3:.0f}" for t, s in sorted(torch_s.items())]
    print(f"  window range (ms/step): {', '.join(spread)}")
    common.report_comparison(f"C={classes}", measured, batch=images, flops=step.flops, params=step.params,
                             peak=peak, defaults_s=defaults.get(child_item(args, classes), float("inf")),
                             torch_python=torch_python, torch_python_flag=args.torch_python,
                             torch_script=TORCH_SCRIPT, memory=step.memory, no_torch=args.no_torch)
    if classes != 1 and 1 in jax_per_image:
      print(f"  JAX scaling: the {classes}-class step takes {jax_per_image[classes] / jax_per_image[1]:.2f}x "
            f"the C=1 step's time per image ({classes * jax_per_image[classes] / jax_per_image[1]:.2f}x its "
            "time per step)")
    del step
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
