"""PyTorch side of benchmarks/classifier_step.py: the train step of lesion_jax/models/classifiers.py's
ResNet (ResNet-18 / ResNet-50 as build_classifier makes them, the ISIC 2017 Task 3 classifier),
rebuilt in PyTorch (NCHW) layer for layer. Needs only torch (and numpy for --check_in).

  python torch_classifier_step.py --stage_sizes=2,2,2,2 --block=basic --width=32 [--num_classes=3]
                                  [--batch=32] [--size=128] [--repeats=3] [--inner=5] [--threads=0,1]
                                  [--padding=flax|torchvision] [--params_only]
  python torch_classifier_step.py ... --check_in=IN.npz --check_out=OUT.npz   (classifier_step.py --check)

Prints one line per thread count of --threads (0: torch's default, one per core):
`torch_classifier_step stage_sizes=... block=... width=W batch=B size=S params=P threads=T ms=... img_per_s=...`
(ms: the best mean over `repeats` rounds of `inner` steps, after two warm-up steps for the first
thread count and one for each further one).

The network, as classifiers.ResNet with torchvision_padding=False (its code is the spec):
  stem, inputs of 128 px and up: 7x7 stride-2 conv padded 3 on every side, BatchNorm, ReLU, 3x3
  stride-2 max-pool with flax's 'SAME' padding; under 128 px: a 3x3 'SAME' conv (stride 2 from 64 px,
  1 below), BatchNorm, ReLU, no max-pool;
  stages i = 0..3 of `stage_sizes[i]` blocks of width width * 2**i, stride 2 on the first block of
  stages 1..3; basic block (ResNet-18): 3x3 conv with the stride, BatchNorm, ReLU, 3x3 conv,
  BatchNorm (scale initialised to zero); bottleneck (ResNet-50, stride on the 3x3 as in v1.5):
  1x1, 3x3 with the stride, 1x1 to 4x the width, BatchNorm after each (the last one's scale zero);
  a 1x1 projection with the stride + BatchNorm on the shortcut where the shape changes; ReLU after
  the sum. No conv biases; BatchNorm epsilon 1e-5, momentum 0.1 (flax's 0.9);
  head: mean over H, W, then a dense layer (with bias) to num_classes.
  'SAME' padding is flax's: (k - 1) // 2-ish, but a stride-2 3x3 conv or max-pool on an even size
  pads 0 before and 1 after, which a torch conv cannot express: --padding=flax (the default, the
  same function) pads those inputs with F.pad first (the max-pool uses ceil_mode instead, no copy);
  --padding=torchvision pads k // 2 on every side as torchvision does (the same cost without the
  F.pad copies, the windows shifted by one pixel; not the same function, so --check refuses it).
  Module names are flax's (Conv_0, BatchNorm_0, ResNetBlock_0, ..., Dense_0), so --check maps
  weights by name.
Loss: softmax cross-entropy against integer labels, mean over images; Adam(1e-3).

--check_in: load the state_dict and the batch (__image__ NCHW, __label__) that classifier_step.py
--check wrote from the JAX model, then write to --check_out the eval-mode logits, the loss of one
train step and the loss of a second one (after one Adam update), as the JAX side computed them.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common  # benchmarks/torch_common.py, beside this script


def same_pads(size, kernel, stride):
  """(before, after) padding of flax's 'SAME' along one axis of `size`."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class Conv(nn.Conv2d):
  """A conv without bias, padded as flax's padding='SAME' (`padding`='flax'), as torchvision pads
  ('torchvision': k // 2 on every side) or by a fixed amount (an int: the stem's explicit 3)."""

  def __init__(self, c_in, c_out, k, stride=1, padding="flax"):
    fixed = padding if isinstance(padding, int) else k // 2 if padding == "torchvision" else 0
    super().__init__(c_in, c_out, k, stride, padding=fixed, bias=False)
    self.same = padding == "flax"

  def forward(self, x):
    if not self.same:
      return super().forward(x)
    k, s = self.kernel_size[0], self.stride[0]
    (top, bottom), (left, right) = same_pads(x.shape[2], k, s), same_pads(x.shape[3], k, s)
    if top == bottom and left == right:
      return F.conv2d(x, self.weight, None, self.stride, (top, left))
    return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, None, self.stride)


def max_pool_3x3_2(x, padding):
  """nn.max_pool(x, (3, 3), (2, 2), padding='SAME') (flax), or torchvision's padding 1."""
  if padding == "torchvision":
    return F.max_pool2d(x, 3, 2, padding=1)
  # flax pads with -inf; on an even size 'SAME' is 0 before and 1 after, which ceil_mode gives (the
  # last window hangs one past the end, ignored).
  (top, bottom), (left, right) = same_pads(x.shape[2], 3, 2), same_pads(x.shape[3], 3, 2)
  if top == bottom and left == right:
    return F.max_pool2d(x, 3, 2, padding=(top, left))
  if bottom == top + 1 and right == left + 1:
    return F.max_pool2d(x, 3, 2, padding=(top, left), ceil_mode=True)
  return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), 3, 2)


def bn(c, zero_scale=False):
  norm = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # flax BatchNorm(momentum=0.9), epsilon 1e-5
  if zero_scale:
    nn.init.zeros_(norm.weight)
  return norm


class ResNetBlock(nn.Module):
  """classifiers.ResNetBlock (ResNet-18's basic block)."""
  expansion = 1

  def __init__(self, c_in, filters, stride, padding):
    super().__init__()
    self.Conv_0, self.BatchNorm_0 = Conv(c_in, filters, 3, stride, padding), bn(filters)
    self.Conv_1, self.BatchNorm_1 = Conv(filters, filters, 3, 1, padding), bn(filters, zero_scale=True)
    self.project = c_in != filters or stride != 1
    if self.project:
      self.Conv_2, self.BatchNorm_2 = Conv(c_in, filters, 1, stride, padding), bn(filters)

  def forward(self, x):
    y = F.relu(self.BatchNorm_0(self.Conv_0(x)))
    y = self.BatchNorm_1(self.Conv_1(y))
    if self.project:
      x = self.BatchNorm_2(self.Conv_2(x))
    return F.relu(x + y)


class BottleneckBlock(nn.Module):
  """classifiers.BottleneckBlock (ResNet-50's; the stride on the 3x3 conv)."""
  expansion = 4

  def __init__(self, c_in, filters, stride, padding):
    super().__init__()
    self.Conv_0, self.BatchNorm_0 = Conv(c_in, filters, 1, 1, padding), bn(filters)
    self.Conv_1, self.BatchNorm_1 = Conv(filters, filters, 3, stride, padding), bn(filters)
    self.Conv_2, self.BatchNorm_2 = Conv(filters, 4 * filters, 1, 1, padding), bn(4 * filters, zero_scale=True)
    self.project = c_in != 4 * filters or stride != 1
    if self.project:
      self.Conv_3, self.BatchNorm_3 = Conv(c_in, 4 * filters, 1, stride, padding), bn(4 * filters)

  def forward(self, x):
    y = F.relu(self.BatchNorm_0(self.Conv_0(x)))
    y = F.relu(self.BatchNorm_1(self.Conv_1(y)))
    y = self.BatchNorm_2(self.Conv_2(y))
    if self.project:
      x = self.BatchNorm_3(self.Conv_3(x))
    return F.relu(x + y)


BLOCKS = {"basic": ResNetBlock, "bottleneck": BottleneckBlock}


class ResNet(nn.Module):
  def __init__(self, stage_sizes=(2, 2, 2, 2), block="basic", width=64, num_classes=3, size=128, padding="flax"):
    super().__init__()
    self.padding = padding
    # classifiers.ResNet picks the stem from the input size; the layers are the same at every size.
    self.imagenet_stem = size >= 128
    if self.imagenet_stem:
      self.Conv_0 = Conv(3, width, 7, 2, padding=3)
    else:
      self.Conv_0 = Conv(3, width, 3, 2 if size >= 64 else 1, padding)
    self.BatchNorm_0 = bn(width)
    cls, c, index = BLOCKS[block], width, 0
    for i, n in enumerate(stage_sizes):
      for j in range(n):
        setattr(self, f"{cls.__name__}_{index}", cls(c, width * 2 ** i, 2 if i > 0 and j == 0 else 1, padding))
        c, index = width * 2 ** i * cls.expansion, index + 1
    self.blocks = [f"{cls.__name__}_{k}" for k in range(index)]
    self.Dense_0 = nn.Linear(c, num_classes)

  def forward(self, x):
    x = F.relu(self.BatchNorm_0(self.Conv_0(x)))
    if self.imagenet_stem:
      x = max_pool_3x3_2(x, self.padding)
    for name in self.blocks:
      x = getattr(self, name)(x)
    return self.Dense_0(x.mean((2, 3)))


def check(model, args):
  """--check_in -> --check_out: eval logits, then the losses of two train steps (Adam(1e-3))."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with np.load(args.check_in) as data:
    arrays = {k: torch.from_numpy(data[k]) for k in data.files}
  image, label = arrays.pop("__image__"), arrays.pop("__label__").long()
  model.to(image.dtype)  # float32, or float64 (classifier_step.py --check_dtype)
  missing, unexpected = model.load_state_dict(arrays, strict=False)
  if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
    raise SystemExit(f"--check_in does not fit this network: missing {missing}, unexpected {unexpected}")
  model.eval()
  with torch.no_grad():
    logits = model(image).numpy()
  model.train()
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  losses = []
  for _ in range(2):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(image), label)
    loss.backward()
    opt.step()
    losses.append(loss.item())
  np.savez(args.check_out, logits=logits, losses=np.asarray(losses))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--stage_sizes", default="2,2,2,2", help="Blocks per stage, comma-separated.")
  parser.add_argument("--block", default="basic", choices=sorted(BLOCKS), help="basic (ResNet-18), bottleneck (50).")
  parser.add_argument("--width", type=int, default=32, help="Base width (classifiers: max(8, int(64 * width))).")
  parser.add_argument("--num_classes", type=int, default=3)
  parser.add_argument("--padding", default="flax", choices=("flax", "torchvision"))
  parser.add_argument("--check_in", help="classifier_step.py --check's weights and batch (.npz).")
  parser.add_argument("--check_out", help="Where --check_in's logits and losses go (.npz).")
  torch_common.add_step_args(parser)
  torch_common.add_params_only_arg(parser)
  args = parser.parse_args()
  stage_sizes = tuple(int(b) for b in args.stage_sizes.split(","))
  torch.manual_seed(0)
  model = ResNet(stage_sizes, args.block, args.width, args.num_classes, args.size, args.padding)
  b, s = args.batch, args.size
  describe = (f"torch_classifier_step stage_sizes={args.stage_sizes} block={args.block} width={args.width} "
              f"batch={b} size={s}")
  if args.check_in:
    if args.padding != "flax":
      raise SystemExit("--check_in compares the same function: --padding=flax")
    print(f"{describe} params={sum(p.numel() for p in model.parameters())}")
    check(model, args)
    return

  def make_loss():
    image = torch.rand(b, 3, s, s) * 2 - 1
    label = torch.randint(0, args.num_classes, (b,))
    return lambda: F.cross_entropy(model(image), label)

  torch_common.train_and_time(model, describe, make_loss, args)


if __name__ == "__main__":
  main()
