"""PyTorch side of benchmarks/lfn_step.py: the train step of lesion_jax/models/lfn.py's Lesion Feature
Network, rebuilt in PyTorch (NCHW) layer for layer. Needs only torch.

  python torch_lfn_step.py --widths=16,32,64,128 [--num_classes=5] [--batch=64] [--size=56] [--repeats=3]
                           [--inner=5] [--threads=0,1]

Prints one line per thread count of --threads (0: torch's default, one per core):
`torch_lfn_step widths=... batch=B size=S params=P threads=T ms=... img_per_s=...`.

The network, as lfn.py (its docstring and code are the spec): four stages, each a 3x3 conv, a 3x3
conv and a 1x1 conv with `widths[s]` kernels (padding 'same', no bias), each followed by BatchNorm
(epsilon 1e-5, flax momentum 0.9 = torch's 0.1) and ReLU; 2x2 max-pooling before stages 1-3; global
average pooling; a dense layer (with bias) to the classes. Loss: the LFN's class-weighted softmax
cross-entropy, w[label] * CE averaged over the batch (feature_network.weighted_cross_entropy, weights
1, 1, 5, 3, 8); Adam(1e-3), as the JAX side of the benchmark.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common  # benchmarks/torch_common.py, beside this script

CLASS_WEIGHTS = (1.0, 1.0, 5.0, 3.0, 8.0)


class LFN(nn.Module):
  def __init__(self, widths=(16, 32, 64, 128), num_classes=5):
    super().__init__()
    layers, c = [], 3
    self.stages = nn.ModuleList()
    for width in widths:
      layers = []
      for kernel in (3, 3, 1):
        layers += [nn.Conv2d(c, width, kernel, padding=kernel // 2, bias=False),
                   nn.BatchNorm2d(width, eps=1e-5, momentum=0.1), nn.ReLU()]
        c = width
      self.stages.append(nn.Sequential(*layers))
    self.head = nn.Linear(c, num_classes)

  def forward(self, x):
    for s, stage in enumerate(self.stages):
      if s:
        x = F.max_pool2d(x, 2)
      x = stage(x)
    return self.head(x.mean(dim=(2, 3)))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--widths", default="16,32,64,128", help="Kernels per stage, comma-separated.")
  parser.add_argument("--num_classes", type=int, default=5)
  torch_common.add_step_args(parser)
  torch_common.add_params_only_arg(parser)
  args = parser.parse_args()
  widths = tuple(int(w) for w in args.widths.split(","))
  torch.manual_seed(0)
  model = LFN(widths, args.num_classes)
  b, s = args.batch, args.size
  weights = torch.tensor(CLASS_WEIGHTS[:args.num_classes])

  def make_loss():
    image = torch.rand(b, 3, s, s) * 2 - 1
    label = torch.randint(0, args.num_classes, (b,))

    def loss():
      return (weights[label] * F.cross_entropy(model(image), label, reduction="none")).mean()

    return loss

  torch_common.train_and_time(model, f"torch_lfn_step widths={args.widths} batch={b} size={s}", make_loss, args)


if __name__ == "__main__":
  main()
