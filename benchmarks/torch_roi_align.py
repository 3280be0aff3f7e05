"""PyTorch side of benchmarks/roi_align.py: times torchvision.ops.roi_align on the inputs that
script wrote, and saves its result for the value check. Needs only torch, torchvision and numpy.

  python torch_roi_align.py --inputs=IN.npz --outputs=OUT.npz --pass=forward|backward
                            --output_size=7 --spatial_scale=0.25 --sampling_ratio=2 --aligned=1
                            [--repeats=5] [--inner=5] [--threads=0,1]

IN.npz holds features (H, W, C), boxes (R, 4) as pixel [y1, x1, y2, x2] (lesion_jax's order) and
cotangent (R, oh, ow, C). They become torchvision's (1, C, H, W) input and (R, 5) [0, x1, y1, x2, y2]
RoIs. --pass=forward times roi_align under no_grad and saves `out` (R, oh, ow, C); --pass=backward
times roi_align followed by out.backward(cotangent) and saves `grad` (H, W, C), the gradient with
respect to the features. Prints torch_common.time_threads lines,
`torch_roi_align pass=P threads=T ms=... img_per_s=...` (img_per_s: calls per second).
"""
import argparse

import numpy as np
import torch
import torchvision

import torch_common  # benchmarks/torch_common.py, beside this script


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--inputs", required=True)
  parser.add_argument("--outputs", required=True)
  parser.add_argument("--pass", dest="which", choices=("forward", "backward"), default="forward")
  parser.add_argument("--output_size", type=int, default=7)
  parser.add_argument("--spatial_scale", type=float, default=0.25)
  parser.add_argument("--sampling_ratio", type=int, default=2)
  parser.add_argument("--aligned", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--inner", type=int, default=5)
  parser.add_argument("--threads", default="0", help="Comma-separated intra-op thread counts (0: torch's default).")
  args = parser.parse_args()
  args.batch = 1  # one feature map per call: time_threads' img_per_s is calls per second

  data = np.load(args.inputs)
  features = torch.from_numpy(np.ascontiguousarray(data["features"].transpose(2, 0, 1)[None]))
  boxes = torch.from_numpy(data["boxes"][:, [1, 0, 3, 2]])  # [y1, x1, y2, x2] -> [x1, y1, x2, y2]
  rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
  cotangent = torch.from_numpy(np.ascontiguousarray(data["cotangent"].transpose(0, 3, 1, 2)))
  size = (args.output_size, args.output_size)

  def pool(x):
    return torchvision.ops.roi_align(x, rois, size, args.spatial_scale, args.sampling_ratio, bool(args.aligned))

  if args.which == "forward":
    def step():
      with torch.no_grad():
        return pool(features)
    np.savez(args.outputs, out=step().numpy().transpose(0, 2, 3, 1))
  else:
    x = features.clone().requires_grad_(True)

    def step():
      x.grad = None
      out = pool(x)
      out.backward(cotangent)
      return out
    step()
    np.savez(args.outputs, grad=x.grad.numpy()[0].transpose(1, 2, 0))
  torch_common.time_threads(step, f"torch_roi_align pass={args.which}", args)


if __name__ == "__main__":
  main()
