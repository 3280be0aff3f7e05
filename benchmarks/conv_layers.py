r"""Where the U-Net step's convolution time goes: every 3x3 convolution of the benchmark U-Net
(batch 8, 128x128, width 16, 4 levels), timed alone as forward, input gradient and weight gradient,
in JAX (the XLA:CPU kernels `import lesion_jax` selects) and in PyTorch (oneDNN), same run.

  python benchmarks/conv_layers.py [--torch_python=PATH]

Each JAX column is a separately jitted `lax.conv_general_dilated` or its VJP; a weight gradient
includes the layout copies XLA:CPU adds around it. Without torch the PyTorch columns are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lesion_jax  # noqa: E402,F401  (XLA:CPU flags, as in training)
from benchmarks import common  # noqa: E402
from benchmarks.train_step import find_torch  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_conv_layers.py")


def unet_conv_layers(size: int = 128, width: int = 16, levels: int = 4) -> list[tuple[int, int, int]]:
  """(spatial size, in channels, out channels) of every 3x3 conv of `models.unet.UNet`."""
  layers, c_in = [], 3
  for i in range(levels + 1):  # encoder levels, then the bottleneck
    c = width * 2 ** i
    layers += [(size >> i, c_in, c), (size >> i, c, c)]
    c_in = c
  for i in reversed(range(levels)):  # decoder: conv over [up-sampled, skip] concatenated
    c = width * 2 ** i
    layers += [(size >> i, 2 * c, c), (size >> i, c, c)]
  return layers


def jax_conv_ms(batch: int, size: int, c_in: int, c_out: int) -> list[float]:
  """[forward, input gradient, weight gradient] milliseconds of one SAME 3x3 conv."""
  rng = np.random.default_rng(0)
  x = jax.numpy.asarray(rng.random((batch, size, size, c_in), np.float32))
  w = jax.numpy.asarray(rng.random((3, 3, c_in, c_out), np.float32))
  dy = jax.numpy.asarray(rng.random((batch, size, size, c_out), np.float32))

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  forward = jax.jit(conv)
  grad_x = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[0])
  grad_w = jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[1])
  return [common.best_seconds(f, repeats=3, inner=5) * 1e3
          for f in (lambda: forward(x, w), lambda: grad_x(x, w, dy), lambda: grad_w(x, w, dy))]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON"),
                      help="Python interpreter that has torch (default: this one).")
  args = parser.parse_args()
  batch, layers = 8, unet_conv_layers()
  torch_python = find_torch(args.torch_python)
  torch_ms, skipped = None, "; PyTorch skipped (torch not found)"
  if torch_python:
    proc = subprocess.run([torch_python, TORCH_SCRIPT, str(batch), json.dumps(layers)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode == 0:
      torch_ms, skipped = json.loads(proc.stdout.strip().splitlines()[-1]), ""
    else:
      skipped = f"; PyTorch skipped ({TORCH_SCRIPT} failed: {proc.stderr.strip()[-300:]})"
  print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; batch {batch}; "
        f"milliseconds, best of 3x5 calls{skipped}")
  head = "size  c_in->c_out |   jax fwd  d_input d_weight"
  print(head + ("  |  torch fwd  d_input d_weight" if torch_ms else ""))
  totals = np.zeros((2, 3))
  for i, (size, c_in, c_out) in enumerate(layers):
    ms = jax_conv_ms(batch, size, c_in, c_out)
    if c_in == 3:  # the first conv needs no input gradient, in either framework's train step
      ms[1] = 0.0
    totals[0] += ms
    line = f"{size:4d} {c_in:5d}->{c_out:<5d} | {ms[0]:9.1f} {ms[1]:8.1f} {ms[2]:8.1f}"
    if torch_ms:
      t = list(torch_ms[i])
      t[1] = 0.0 if c_in == 3 else t[1]
      totals[1] += t
      line += f"  | {t[0]:10.1f} {t[1]:8.1f} {t[2]:8.1f}"
    print(line, flush=True)
  print(f"total            | {totals[0, 0]:9.1f} {totals[0, 1]:8.1f} {totals[0, 2]:8.1f}   (sum {totals[0].sum():.1f})")
  if torch_ms:
    print(f"PyTorch total    | {totals[1, 0]:9.1f} {totals[1, 1]:8.1f} {totals[1, 2]:8.1f}   (sum {totals[1].sum():.1f})")
    ratio = totals[1] / totals[0]
    print(f"ratio PyTorch time / JAX time (>1 = JAX faster): forward {ratio[0]:.2f}, input gradient "
          f"{ratio[1]:.2f}, weight gradient {ratio[2]:.2f}, all {totals[1].sum() / totals[0].sum():.2f}")


if __name__ == "__main__":
  main()
