r"""Numerical check of lesion_jax.pretrained against real torchvision: same weights, same logits?

  python benchmarks/check_torchvision_resnet.py --torch_python=/work/tvenv/bin/python \
      [--arch=resnet50,resnet18] [--size=224] [--batch=2]

For each architecture, in --torch_python (an interpreter with torch and torchvision; default this
one): a randomly initialised torchvision.models.<arch>() in eval mode, its BatchNorm affine
parameters and running statistics randomised too (so that every BatchNorm entry matters), runs a
fixed normal input; the state_dict, input and logits go to a .npz in --workdir (a temporary folder
unless given). Then, in this interpreter, lesion_jax.pretrained.load_torchvision_resnet loads that
.npz into the Flax ResNet (build_classifier(arch, 1000, torchvision_padding=True), eval mode) and
the script prints the maximum absolute difference of the logits (and relative to their largest
magnitude), next to the same for the default padding (torchvision_padding=False) on the same
weights, to show what the option fixes. Exits 1 if a torchvision_padding difference exceeds --rtol
times the largest |logit| (the random BatchNorm statistics make ResNet-50's logits reach the
hundreds, so float32 rounding alone gives absolute differences near 1e-3 there).
The torch side imports no jax, the jax side no torch.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_side(arch: str, size: int, batch: int, out: str, seed: int, residual_gamma: float) -> None:
  """Runs in --torch_python: writes `out` with the state_dict (its keys), `__input__` (NCHW) and
  `__logits__`."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = getattr(torchvision.models, arch)()
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
    for module in model.modules():  # the residual branch's last BatchNorm
      if isinstance(module, torchvision.models.resnet.Bottleneck):
        module.bn3.weight.mul_(residual_gamma)
      elif isinstance(module, torchvision.models.resnet.BasicBlock):
        module.bn2.weight.mul_(residual_gamma)
  model.eval()
  x = np.random.default_rng(seed).normal(size=(batch, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    logits = model(torch.from_numpy(x)).numpy()
  arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
  np.savez(out, __input__=x, __logits__=logits, **arrays)
  print(f"torch {torch.__version__} torchvision {torchvision.__version__}: {arch} {len(arrays)} "
        f"state_dict entries, logits {logits.shape}, |logits| max {np.abs(logits).max():.3f}", flush=True)


def jax_side(arch: str, path: str) -> dict[bool, float]:
  """Max abs logit difference of the Flax ResNet against torchvision's over the largest |logit|,
  for each padding mode (key: torchvision_padding)."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from lesion_jax import pretrained  # pylint: disable=g-import-not-at-top
  from lesion_jax.models.classifiers import build_classifier  # pylint: disable=g-import-not-at-top
  with np.load(path) as data:
    x = np.ascontiguousarray(data["__input__"].transpose(0, 2, 3, 1))  # NCHW -> NHWC
    reference = data["__logits__"]
  diffs = {}
  for torchvision_padding in (True, False):
    model = build_classifier(arch, 1000, torchvision_padding=torchvision_padding)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), jnp.asarray(x))
    # The file also holds __input__ and __logits__, which the loader rejects as extra keys: load a
    # copy with the state_dict alone, as a user's file would be.
    variables, report = pretrained.load_torchvision_resnet(_state_dict_only(path), shapes, head="load",
                                                           return_report=True)
    start = time.perf_counter()
    logits = np.asarray(jax.jit(functools.partial(model.apply, train=False))(variables, x))
    seconds = time.perf_counter() - start
    diff = float(np.abs(logits - reference).max())
    diffs[torchvision_padding] = diff / float(np.abs(reference).max())
    print(f"jax {jax.__version__} {arch} torchvision_padding={torchvision_padding}: {len(report.loaded)} keys "
          f"loaded, {len(report.ignored)} ignored; max |logits - torchvision| = {diff:.3g} "
          f"({diff / np.abs(reference).max():.3g} of max |logit|); forward+compile {seconds:.1f} s", flush=True)
  return diffs


def _state_dict_only(path: str) -> str:
  out = path.replace(".npz", ".state_dict.npz")
  if not os.path.exists(out):
    with np.load(path) as data:
      np.savez(out, **{k: data[k] for k in data.files if not k.startswith("__")})
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", sys.executable),
                      help="Python interpreter with torch and torchvision (default: this one).")
  parser.add_argument("--arch", default="resnet50,resnet18", help="Comma-separated: resnet50, resnet18.")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--rtol", type=float, default=1e-5, help="Largest acceptable max abs difference over "
                      "the largest |logit|.")
  parser.add_argument("--residual_gamma", type=float, default=1.0, help="Scales the BatchNorm weights that end "
                      "each residual branch (trained ResNets have small ones; at 0.2 ResNet-50's random logits stay "
                      "below 1 rather than reaching the hundreds).")
  parser.add_argument("--workdir", default=None, help="Keep the .npz files here (default: a temporary folder).")
  parser.add_argument("--torch_side", default=None, help=argparse.SUPPRESS)  # the subprocess: the .npz to write
  args = parser.parse_args()
  if args.torch_side:
    torch_side(args.arch, args.size, args.batch, args.torch_side, args.seed, args.residual_gamma)
    return
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or tmp
    os.makedirs(workdir, exist_ok=True)
    failed = False
    for arch in args.arch.split(","):
      path = os.path.join(workdir, f"{arch}_{args.size}px_seed{args.seed}_gamma{args.residual_gamma}.npz")
      proc = subprocess.run([args.torch_python, os.path.abspath(__file__), f"--torch_side={path}", f"--arch={arch}",
                             f"--size={args.size}", f"--batch={args.batch}", f"--seed={args.seed}",
                             f"--residual_gamma={args.residual_gamma}"],
                            capture_output=True, text=True, timeout=1800)
      if proc.returncode:
        sys.exit(f"the torch side failed in {args.torch_python} (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
      print(proc.stdout.strip(), flush=True)
      diffs = jax_side(arch, path)
      failed |= not diffs[True] <= args.rtol
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
  main()
