r"""RoIAlign: lesion_jax.detection.roi_align against torchvision.ops.roi_align, forward and
forward + backward, on the same inputs, with a check that the values agree.

  python benchmarks/roi_align.py [--torch_python=PATH] [--height=32] [--width=32] [--channels=64]
                                 [--rois=512] [--output_size=7] [--sampling_ratio=2]
                                 [--spatial_scale=0.25] [--no_aligned] [--rounds=2] [--torch_threads=0,1]

Defaults: the Mask R-CNN box head at 128 px input on FPN level P2 (stride 4: a 32x32x64 map), 512
RoIs, 7x7 bins, sampling ratio 2, aligned=True. RoIs are random boxes of 8 to 96 px clipped to the
image. The JAX side is jax.jit(roi_align) (forward) and jax.jit of the forward plus its VJP with
respect to the features (forward + backward; both results returned, so neither is dropped), timed
as common.best_seconds does. The PyTorch side is benchmarks/torch_roi_align.py in a subprocess of
--torch_python (e.g. a venv with torch and torchvision): torchvision.ops.roi_align on the same
inputs (passed through a temporary .npz, features as NCHW, boxes as [0, x1, y1, x2, y2]) under
no_grad, and followed by out.backward(cotangent), at each thread count of --torch_threads (with
OMP_WAIT_POLICY=PASSIVE unless set, as run_torch_reference does). JAX and PyTorch are measured in
alternating rounds (best of each), because this machine is shared. Prints ms per call, the ratio
PyTorch time / JAX time (>1 = JAX faster, against PyTorch's fastest thread count), and the max
abs difference of the outputs and of the feature gradients. Without torch the reference is skipped.
At the defaults they differ by ~1e-5 (values up to ~4): under jit XLA:CPU fuses the sample
coordinates' a + b * c into FMAs (one rounding instead of two), moving samples by ~1e-6 feature
pixels; un-jitted, lesion_jax and torchvision agree to ~5e-7.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.detection import roi_align as roi_lib  # noqa: E402  (imports lesion_jax: its XLA:CPU flags)

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_roi_align.py")


def make_inputs(args: argparse.Namespace) -> dict[str, np.ndarray]:
  """features (H, W, C), boxes (R, 4) pixel [y1, x1, y2, x2] in the image of H / spatial_scale
  rows, cotangent (R, oh, ow, C) for the backward pass; float32, seed 0."""
  rng = np.random.default_rng(0)
  image_h, image_w = args.height / args.spatial_scale, args.width / args.spatial_scale
  centre = rng.uniform(0, 1, (args.rois, 2)) * [image_h, image_w]
  size = rng.uniform(8, 96, (args.rois, 2))
  boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
  boxes = np.clip(boxes, 0, [image_h, image_w, image_h, image_w])
  o = args.output_size
  return {"features": rng.normal(size=(args.height, args.width, args.channels)).astype(np.float32),
          "boxes": boxes.astype(np.float32),
          "cotangent": rng.normal(size=(args.rois, o, o, args.channels)).astype(np.float32)}


def main() -> None:
  parser = common.comparison_parser(__doc__)
  parser.add_argument("--height", type=int, default=32)
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--rois", type=int, default=512)
  parser.add_argument("--output_size", type=int, default=7)
  parser.add_argument("--sampling_ratio", type=int, default=2)
  parser.add_argument("--spatial_scale", type=float, default=0.25)
  parser.add_argument("--no_aligned", action="store_true", help="aligned=False (default: aligned=True).")
  parser.add_argument("--rounds", type=int, default=2, help="Alternating JAX/PyTorch rounds.")
  parser.add_argument("--repeats", type=int, default=5, help="Timed windows per round (best kept).")
  parser.add_argument("--inner", type=int, default=5, help="Calls per timed window.")
  parser.add_argument("--torch_threads", default="0,1",
                      help="PyTorch intra-op thread counts to time, comma-separated (0: torch's default).")
  args = parser.parse_args()
  aligned = not args.no_aligned
  _, torch_python = common.print_setup(args.torch_python)
  o = args.output_size
  print(f"features {args.height}x{args.width}x{args.channels}, {args.rois} RoIs, {o}x{o} bins, sampling ratio "
        f"{args.sampling_ratio}, spatial scale {args.spatial_scale}, aligned={aligned}; best of {args.rounds} "
        f"rounds x {args.repeats} windows x {args.inner} calls")

  inputs = make_inputs(args)
  features, boxes, cotangent = (jnp.asarray(inputs[k]) for k in ("features", "boxes", "cotangent"))
  pool = functools.partial(roi_lib.roi_align, output_size=(o, o), spatial_scale=args.spatial_scale,
                           sampling_ratio=args.sampling_ratio, aligned=aligned)
  forward = jax.jit(pool)

  @jax.jit
  def forward_backward(features, boxes, cotangent):
    out, vjp = jax.vjp(lambda f: pool(f, boxes), features)
    return out, vjp(cotangent)[0]

  jax_out, jax_grad = forward_backward(features, boxes, cotangent)
  calls = {"forward": lambda: forward(features, boxes),
           "backward": lambda: forward_backward(features, boxes, cotangent)}

  with tempfile.TemporaryDirectory() as tmp:
    in_path = os.path.join(tmp, "inputs.npz")
    np.savez(in_path, **inputs)

    def torch_cmd(which: str) -> list[str]:
      return [torch_python, TORCH_SCRIPT, f"--inputs={in_path}", f"--outputs={os.path.join(tmp, which + '.npz')}",
              f"--pass={which}", f"--output_size={o}", f"--spatial_scale={args.spatial_scale}",
              f"--sampling_ratio={args.sampling_ratio}", f"--aligned={int(aligned)}", f"--repeats={args.repeats}",
              f"--inner={args.inner}", f"--threads={args.torch_threads}"]

    measured = {}
    for which, call in calls.items():
      measured[which] = common.alternate_rounds(
          args.rounds, args.repeats, args.inner, call,
          (lambda: common.run_torch_reference(torch_cmd(which))) if torch_python else None)
    torch_results = {which: dict(np.load(os.path.join(tmp, which + ".npz")))
                     for which in calls if os.path.exists(os.path.join(tmp, which + ".npz"))}

  for which, name in (("forward", "forward"), ("backward", "forward + backward")):
    m = measured[which]
    line = f"{name:18s}: JAX {m.jax_s * 1e3:8.2f} ms"
    for threads, t in sorted(m.torch_s.items(), reverse=True):
      line += f", PyTorch {t * 1e3:8.2f} ms ({threads} thread{'s' * (threads > 1)})"
    if m.torch_s:
      line += f"; ratio PyTorch time / JAX time: {m.torch_best / m.jax_s:.2f}"
    print(line)
  if "forward" in torch_results:
    print(f"max abs difference, output: {np.abs(np.asarray(jax_out) - torch_results['forward']['out']).max():.2e} "
          f"(output max abs {np.abs(torch_results['forward']['out']).max():.2f})")
  if "backward" in torch_results:
    print(f"max abs difference, feature gradient: "
          f"{np.abs(np.asarray(jax_grad) - torch_results['backward']['grad']).max():.2e} "
          f"(gradient max abs {np.abs(torch_results['backward']['grad']).max():.2f})")
  if not torch_python:
    where = f"--torch_python={args.torch_python} does not import torch" if args.torch_python else \
        "torch is not installed in this interpreter; pass --torch_python"
    print(f"PyTorch reference: skipped ({where})")
  elif not torch_results:
    print(f"PyTorch reference: skipped ({TORCH_SCRIPT} failed: {measured['forward'].torch_error})")


if __name__ == "__main__":
  main()
