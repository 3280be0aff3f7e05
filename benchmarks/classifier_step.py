r"""Train-step throughput of the ISIC 2017 Task 3 classifier (ResNet-18, and ResNet-50), against PyTorch.

  python benchmarks/classifier_step.py [--torch_python=PATH | --no_torch] [--model=resnet18,resnet50]
                                       [--width=0.5] [--image_size=128] [--batch_size=32] [--rounds=3]
                                       [--torch_threads=0,1] [--torch_padding=flax|torchvision]
                                       [--no_xla_defaults] [--precision=float32|bfloat16]
  python benchmarks/classifier_step.py --check --torch_python=PATH [--model=resnet18,resnet50]
                                       [--width=0.125] [--image_size=32] [--batch_size=2]
                                       [--check_dtype=float32|float64] [--check_rtol=...]

The workload defaults are experiments/configs/classification/resnet_isic2017_task3.py's: its network
(build_classifier(model.name, 3 classes, model.width): ResNet-18 at width 0.5, i.e. base width 32),
its image size (128 px) and batch (32). The JAX step is the library's own, as the training loop runs
it: that config's ClassificationTask.train_step (steps.make_classification_train_step: softmax
cross-entropy against integer labels, no label smoothing, no class weights, plus accuracy), on a
create_train_state(model, optax.adam(1e-3)) state (the run's cosine schedule adds scalar work only),
jitted with the state donated. Batch: image (N, S, S, 3), label (N,) in 0..2.
The PyTorch reference, benchmarks/torch_classifier_step.py, is the same network built in PyTorch
(NCHW; stage sizes, block and base width passed from the flax ResNet that build_classifier
returns), softmax cross-entropy, Adam; both parameter counts are printed and must agree.
Flax's 'SAME' padding pads a stride-2 3x3 conv 0 before and 1 after on even sizes, which a torch
conv cannot: the reference F.pads the inputs of the three stride-2 3x3 convs (the first blocks of
stages 2-4; and the 3x3 stem's from 64 to 127 px) first (--torch_padding=flax, the same function);
--torch_padding=torchvision times it with torchvision's symmetric padding instead (same FLOPs, no
copies, windows shifted by a pixel).

JAX and PyTorch are measured alternately in the same run (best of several rounds each), because
this machine is shared and absolute times drift; the printed ratio is JAX images/s over PyTorch
images/s (>1 = JAX faster). Also prints the fraction of this machine's measured matmul peak that
the JAX step achieves (FLOPs from XLA's cost analysis; the PyTorch line uses the same FLOP count),
and the step's memory. PyTorch is found in this interpreter, or in --torch_python (`pip install
torch==2.13.0` takes the local CPU wheel); without it the ratio line says "skipped". PyTorch is
timed at its default thread count and at one thread (--torch_threads) with OMP_WAIT_POLICY=PASSIVE
unless set, and the JAX step also with XLA's own CPU defaults (LESION_JAX_XLA_DEFAULTS=0) in one
subprocess started before the rounds, exactly as benchmarks/fcrn_step.py (whose docstring says why).
Per model it prints, after the setup lines (jax, matmul peak, PyTorch):

  resnet18 (stages (2, 2, 2, 2), ResNetBlock, width 0.5 = base 32) batch 32 128px; best of 3 rounds
      x 3 windows x N steps; JAX first call (compile or cache load) ... s        (one line)
    JAX:     ... ms/step, ... img/s, ... GFLOP/step (XLA), ... GFLOP/s = ..% of matmul peak
    JAX, XLA's default CPU convolutions (LESION_JAX_XLA_DEFAULTS=0): ...
    PyTorch: ... ms/step, ... img/s, ... (2 threads) / (1 thread)
    parameters: JAX P, PyTorch P (same)
    step memory (XLA): ...
    ratio JAX/PyTorch images/s, resnet18: R (against PyTorch's fastest)

--check compares the two networks' numerics instead of timing them (every --model, at the given
size: the defaults above are for timing, a check wants e.g. --image_size=32 --width=0.125
--batch_size=2, or --image_size=128 for the 7x7 stem and max-pool the timed workload takes; under
128 px it is the 3x3 stem): the JAX model is initialised, its BatchNorm scales, offsets and running
statistics and its head's bias are randomised (the zero-initialised last scale of each residual
branch would hide the branch), the weights are copied into the PyTorch twin by name (--check_in),
and it prints both parameter counts, the eval-mode logits' largest difference over the largest
|logit|, and each side's train-mode loss of one train step and of a second one after one Adam
update (both from the batch's own BatchNorm statistics); exits 1 when a relative difference exceeds
--check_rtol. --check_dtype=float64 runs both sides in float64 (jax_enable_x64; the flax ResNet
still returns float32 logits), which separates a different function from float32 rounding: there
the differences were 1e-8 to 2e-7 of the logits and losses (ResNet-18 and -50, width 0.125, batch
2, at 32, 64 and 128 px; default tolerance 1e-5), while in float32 (default tolerance 1e-3) Adam's
first update, ~lr * sign(gradient), amplifies rounding to ~2e-4 in ResNet-50's second loss at 32
px. A one-pixel shift of the max-pool window gave 0.7 of the logits and 2.5e-2 of the loss. (The running
variances after a step are not compared: flax keeps the biased batch variance, torch the unbiased.)

  python benchmarks/classifier_step.py --check --check_dtype=float64 --torch_python=PATH \
      --image_size=128 --width=0.125 --batch_size=2
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from experiments.common import load_config_file  # noqa: E402
from lesion_jax.models import classifiers  # noqa: E402
from lesion_jax.tasks import classification  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_classifier_step.py")
CONFIG = os.path.join(common.REPO, "experiments", "configs", "classification", "resnet_isic2017_task3.py")
NUM_CLASSES = 3  # ISIC 2017 Part 3: melanoma, seborrheic keratosis, nevus
RESNETS = ("resnet18", "resnet50")
BLOCKS = {classifiers.ResNetBlock: "basic", classifiers.BottleneckBlock: "bottleneck"}


def task3_config(model: str, width: float, size: int, batch: int) -> classification.ClassifierConfig:
  """resnet_isic2017_task3.py's config with this network and workload."""
  config = load_config_file(CONFIG)
  return dataclasses.replace(
      config, model=dataclasses.replace(config.model, name=model, width=width),
      input=dataclasses.replace(config.input, image_size=size, batch_size=batch))


def build(model: str, width: float, precision: str = "float32") -> classifiers.ResNet:
  return classifiers.build_classifier(model, NUM_CLASSES, width, dtype=common.compute_dtype(precision))


def host_batch(size: int, batch_size: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {"image": rng.random((batch_size, size, size, 3), np.float32) * 2 - 1,
          "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)}


class JaxStep(common.JaxTrainStep):
  """The library's classifier train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, model: str, width: float, size: int, batch_size: int, count_flops: bool = True,
               precision: str = "float32"):
    batch = common.device_inputs(precision, host_batch(size, batch_size))
    state = common.adam_state(build(model, width, precision), size=size)
    step = classification.ClassificationTask(task3_config(model, width, size, batch_size)).train_step()
    super().__init__(step, state, batch, count_flops)


def torch_args(model: str, width: float, size: int, batch: int) -> list[str]:
  """The reference's network and batch flags, from the flax ResNet build_classifier makes."""
  net = build(model, width)
  return [f"--stage_sizes={','.join(map(str, net.stage_sizes))}", f"--block={BLOCKS[net.block]}",
          f"--width={net.width}", f"--num_classes={NUM_CLASSES}", f"--batch={batch}", f"--size={size}"]


def measure_torch(python: str, model: str, width: float, size: int, batch: int, repeats: int, inner: int,
                  threads: str, padding: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference,
  timed in a subprocess at each of the comma-separated `threads` (0: torch's default)."""
  return common.run_torch_reference(
      [python, TORCH_SCRIPT, *torch_args(model, width, size, batch), f"--repeats={repeats}", f"--inner={inner}",
       f"--threads={threads}", f"--padding={padding}"])


def measure_xla_defaults(models: list[tuple[str, int]], width: float, size: int, batch: int, repeats: int,
                         precision: str) -> dict[str, float]:
  """{model: seconds per step} of the same JAX steps in one fresh process without lesion_jax's
  XLA:CPU flag; `models` holds (model, steps per timed window)."""
  return common.xla_defaults_seconds(__file__, [f"{m}:{width}:{size}:{batch}:{inner}" for m, inner in models],
                                     repeats, "model", precision)


# --- --check -------------------------------------------------------------------------------------

def torch_state_dict(variables: dict) -> dict[str, np.ndarray]:
  """The flax ResNet's variables as torch_classifier_step.ResNet's state_dict (its modules carry
  flax's names): conv kernels HWIO -> OIHW, dense kernels transposed, BatchNorm scale/bias/mean/var
  -> weight/bias/running_mean/running_var."""
  names = {("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
           ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
  out = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables[collection])[0]:
      keys = [p.key for p in path]
      value = np.asarray(leaf)
      if keys[-1] == "kernel":
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
      out[".".join(keys[:-1] + [names[collection, keys[-1]]])] = np.ascontiguousarray(value)
  return out


def randomized(variables: dict, seed: int = 0) -> dict:
  """`variables` with every BatchNorm scale, offset, running mean and variance and the head's bias
  drawn at random (scales in [0.5, 1.5], offsets and means N(0, 0.1), variances in [0.5, 1.5])."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    if name in ("bias", "mean"):
      return jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(draw, variables)


def check_model(python: str, model: str, width: float, size: int, batch_size: int, dtype: str, rtol: float,
                workdir: str) -> bool:
  """Prints the JAX-against-PyTorch numerics of `model` on one batch, both in `dtype` (float32 or
  float64: jax_enable_x64 on, the model built and its variables cast to float64); True if within
  `rtol`."""
  net = classifiers.build_classifier(model, NUM_CLASSES, width, dtype=jnp.dtype(dtype))
  state = common.adam_state(net, size=size)
  variables = jax.tree.map(lambda x: x.astype(dtype),
                           randomized({"params": state.params, "batch_stats": state.batch_stats}))
  state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                        opt_state=state.tx.init(variables["params"]))
  batch = host_batch(size, batch_size)
  batch["image"] = batch["image"].astype(dtype)
  logits = np.asarray(jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, batch["image"]))
  step = jax.jit(classification.ClassificationTask(task3_config(model, width, size, batch_size)).train_step())
  jax_losses = []
  for _ in range(2):
    state, metrics = step(state, batch, jax.random.key(1))
    jax_losses.append(float(metrics["loss"]))
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))

  path_in, path_out = os.path.join(workdir, f"{model}_in.npz"), os.path.join(workdir, f"{model}_out.npz")
  np.savez(path_in, __image__=np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)), __label__=batch["label"],
           **torch_state_dict(variables))
  proc = subprocess.run([python, TORCH_SCRIPT, *torch_args(model, width, size, batch_size), f"--check_in={path_in}",
                         f"--check_out={path_out}"], capture_output=True, text=True, timeout=1800)
  print(f"\n{model} (stages {net.stage_sizes}, {net.block.__name__}, width {width:g} = base {net.width}) "
        f"batch {batch_size} {size}px, {dtype}")
  if proc.returncode:
    print(f"  {TORCH_SCRIPT} --check_in failed (rc {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return False
  torch_params = int(proc.stdout.split("params=")[1].split()[0])
  with np.load(path_out) as data:
    torch_logits, torch_losses = data["logits"], data["losses"]
  same = "same" if torch_params == params else "MISMATCH: the reference is not the same network"
  print(f"  parameters: JAX {params:,}, PyTorch {torch_params:,} ({same})")
  diff = float(np.abs(logits - torch_logits).max())
  rel = diff / float(np.abs(logits).max())
  print(f"  eval logits: max |JAX - PyTorch| = {diff:.3g} = {rel:.2g} of max |logit| ({np.abs(logits).max():.3g})")
  ok = torch_params == params and rel <= rtol
  for i, (a, b) in enumerate(zip(jax_losses, torch_losses)):
    rel_loss = abs(a - b) / abs(a)
    ok &= rel_loss <= rtol
    print(f"  loss of train step {i + 1}{' (after one Adam update)' if i else ''}: JAX {a:.7f}, PyTorch {b:.7f}, "
          f"relative difference {rel_loss:.2g}")
  print(f"  {'ok' if ok else 'FAILED'}: relative differences {'within' if ok else 'above'} --check_rtol={rtol:g}")
  return ok


def main() -> None:
  parser = common.comparison_parser(__doc__)
  defaults = load_config_file(CONFIG)
  parser.add_argument("--model", default=",".join(RESNETS),
                      help=f"Comma-separated: {', '.join(RESNETS)} (the Task 3 config trains {defaults.model.name}).")
  parser.add_argument("--width", type=float, default=defaults.model.width,
                      help="Channel multiplier: ResNet base width max(8, int(64 * width)).")
  parser.add_argument("--image_size", type=int, default=defaults.input.image_size)
  parser.add_argument("--batch_size", type=int, default=defaults.input.batch_size)
  common.add_round_args(parser)
  parser.add_argument("--torch_padding", default="flax", choices=("flax", "torchvision"),
                      help="The reference's padding (torch_classifier_step.py --padding): flax's 'SAME' exactly "
                           "(F.pad before the stride-2 3x3 convs) or torchvision's symmetric k // 2.")
  parser.add_argument("--check", action="store_true", help="Compare numerics with the PyTorch twin, no timing.")
  parser.add_argument("--check_dtype", default="float32", choices=("float32", "float64"),
                      help="--check: both sides compute in this (float64 turns on jax_enable_x64; the flax "
                           "ResNet and the train step still round the logits to float32).")
  parser.add_argument("--check_rtol", type=float, default=None,
                      help="--check: largest relative difference of the logits and losses (default: 1e-3 in "
                           "float32, where Adam's first update amplifies rounding; 1e-5 in float64).")
  common.add_xla_defaults_args(parser)
  args = parser.parse_args()
  if args.xla_defaults_child:  # the subprocess of measure_xla_defaults
    for item in args.xla_defaults_child.split(","):
      model, width, size, batch, inner = item.split(":")
      step = JaxStep(model, float(width), int(size), int(batch), count_flops=False, precision=args.precision)
      print(f"xla_defaults model={model} ms={common.best_seconds(step.call, args.repeats, int(inner)) * 1e3:.2f}",
            flush=True)
      del step
    return
  models = list(filter(None, args.model.split(",")))
  if unknown := [m for m in models if m not in RESNETS]:
    raise SystemExit(f"--model: {unknown} not among {list(RESNETS)}")
  if args.check:
    torch_python = common.find_torch(args.torch_python)
    if not torch_python:
      raise SystemExit("--check needs torch: pass --torch_python (pip install torch==2.13.0)")
    if args.check_dtype == "float64":
      jax.config.update("jax_enable_x64", True)
    rtol = args.check_rtol if args.check_rtol is not None else {"float32": 1e-3, "float64": 1e-5}[args.check_dtype]
    with tempfile.TemporaryDirectory() as workdir:
      results = [check_model(torch_python, m, args.width, args.image_size, args.batch_size, args.check_dtype, rtol,
                             workdir) for m in models]
    sys.exit(0 if all(results) else 1)
  size, batch = args.image_size, args.batch_size
  start = time.perf_counter()
  peak, torch_python = common.print_setup(args.torch_python, no_torch=args.no_torch, precision=args.precision)

  jax_steps, inners = {}, {}
  for model in models:
    jax_steps[model] = JaxStep(model, args.width, size, batch, precision=args.precision)
    inners[model] = common.window_steps(jax_steps[model], args.window_s)
  # One fresh process for all models, timed over as many windows as the alternating rounds below.
  defaults = {} if args.no_xla_defaults else measure_xla_defaults(
      [(m, inners[m]) for m in models], args.width, size, batch, args.rounds * args.repeats, args.precision)

  for model in models:
    step, inner = jax_steps.pop(model), inners[model]
    net = build(model, args.width)
    padding = "" if args.torch_padding == "flax" else f"; PyTorch with --torch_padding={args.torch_padding}"
    common.compare_step(
        model, f"{model} (stages {net.stage_sizes}, {net.block.__name__}, width {args.width:g} = base {net.width}) "
        f"batch {batch} {size}px", step, inner, args,
        lambda: measure_torch(torch_python, model, args.width, size, batch, args.repeats, inner, args.torch_threads,
                              args.torch_padding),
        batch=batch, peak=peak, defaults=defaults, torch_python=torch_python, torch_script=TORCH_SCRIPT, suffix=padding)
    del step
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
