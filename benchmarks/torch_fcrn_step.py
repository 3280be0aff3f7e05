"""PyTorch side of benchmarks/fcrn_step.py: the train step of lesion_jax/models/fcrn.py's FCRN (the
Lesion Indexing Network's network), rebuilt in PyTorch (NCHW) layer for layer. Needs only torch.

  python torch_fcrn_step.py --blocks=1,1,1,1 --width=8 [--batch=8] [--size=128] [--repeats=3] [--inner=5]
                            [--threads=0,1]

Prints one line per thread count of --threads (0: torch's default, one per core):
`torch_fcrn_step blocks=... width=... batch=B size=S params=P threads=T ms=... img_per_s=...`
(ms: the best mean over `repeats` rounds of `inner` steps, after two warm-up steps for the first
thread count and one for each further one).

The network, as fcrn.py (its docstring and code are the spec):
  stem: 7x7 stride-2 conv to 2*width (no bias), BatchNorm, ReLU, 2x2 max-pool;
  4 stages of bottleneck blocks (1x1, 3x3 with the stride, 1x1 to 4x the block width, BatchNorm
  after each, no conv biases; a 1x1 projection + BatchNorm shortcut where width or stride change);
  stage s has block width width*2**s and stride 2 except stage 0; "residual in residual": after
  the first block of a stage, blocks 1.. are grouped and an outer identity shortcut closes a group
  after block b whenever b % group_size == 0 or b is the stage's last block;
  head: 1x1 score convs (with bias) on stages 1..3 to num_classes, bilinear resize (half-pixel,
  as jax.image.resize) to stage 1's stride-8 grid, summed; three learned 2x up-samplings as
  layers.Upsample2x("depth_to_space"): a 1x1 conv (with bias) to 4x channels then a pixel shuffle,
  to 4*num_classes, 4*num_classes and num_classes channels.
  (The pixel shuffle's channel order differs from depth_to_space's, (c, i, j) against (i, j, c):
  a fixed permutation of the 1x1 conv's output channels, so the same function class and cost.)
Loss: per-pixel softmax cross-entropy against targets = mask * (label + 1), mean over pixels and
images; Adam(1e-3). Inputs are padded to a multiple of 32 by edge replication as in fcrn.py (the
benchmark's 128 px needs none).
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common  # benchmarks/torch_common.py, beside this script


def bn(c):
  return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # flax BatchNorm(momentum=0.9), epsilon 1e-5


class Bottleneck(nn.Module):
  def __init__(self, c_in, width, stride):
    super().__init__()
    self.conv0, self.norm0 = nn.Conv2d(c_in, width, 1, bias=False), bn(width)
    self.conv1, self.norm1 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False), bn(width)
    self.conv2, self.norm2 = nn.Conv2d(width, 4 * width, 1, bias=False), bn(4 * width)
    self.shortcut = None
    if c_in != 4 * width or stride != 1:
      self.shortcut = nn.Sequential(nn.Conv2d(c_in, 4 * width, 1, stride, bias=False), bn(4 * width))

  def forward(self, x):
    y = F.relu(self.norm0(self.conv0(x)))
    y = F.relu(self.norm1(self.conv1(y)))
    y = self.norm2(self.conv2(y))
    if self.shortcut is not None:
      x = self.shortcut(x)
    return F.relu(x + y)


class Upsample2x(nn.Module):
  """layers.Upsample2x('depth_to_space'): 1x1 conv to 4*c_out channels, then a 2x pixel shuffle."""

  def __init__(self, c_in, c_out):
    super().__init__()
    self.up = nn.Conv2d(c_in, 4 * c_out, 1)
    self.shuffle = nn.PixelShuffle(2)

  def forward(self, x):
    return self.shuffle(self.up(x))


class FCRN(nn.Module):
  def __init__(self, blocks=(1, 1, 1, 1), width=8, num_classes=4, group_size=2):
    super().__init__()
    if len(blocks) != 4:
      raise ValueError(f"FCRN has 4 stages, got blocks={blocks}")
    self.blocks, self.group_size = tuple(blocks), group_size
    self.stem = nn.Conv2d(3, 2 * width, 7, 2, padding=3, bias=False)
    self.stem_norm = bn(2 * width)
    self.stages = nn.ModuleList()
    c = 2 * width
    for s, count in enumerate(blocks):
      w = width * 2 ** s
      stage = nn.ModuleList()
      for b in range(count):
        stage.append(Bottleneck(c, w, 2 if s > 0 and b == 0 else 1))
        c = 4 * w
      self.stages.append(stage)
    self.scores = nn.ModuleList([nn.Conv2d(4 * width * 2 ** s, num_classes, 1) for s in (1, 2, 3)])
    self.deconvs = nn.ModuleList([Upsample2x(num_classes if i == 0 else 4 * num_classes,
                                             num_classes if i == 2 else 4 * num_classes) for i in range(3)])

  def forward(self, x):
    h, w = x.shape[2:]
    ph, pw = -h % 32, -w % 32
    if ph or pw:
      x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    x = F.max_pool2d(F.relu(self.stem_norm(self.stem(x))), 2)
    features = []
    for stage in self.stages:
      x = stage[0](x)  # the first block changes width and stride and stands alone
      group_input = x
      for b in range(1, len(stage)):
        x = stage[b](x)
        if self.group_size > 1 and (b % self.group_size == 0 or b == len(stage) - 1):
          x = x + group_input
          group_input = x
      features.append(x)
    target = features[1].shape[2:]  # stride 8
    scores = 0.0
    for conv, f in zip(self.scores, features[1:]):
      y = conv(f)
      if y.shape[2:] != target:
        y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
      scores = scores + y
    for deconv in self.deconvs:
      scores = deconv(scores)
    return scores[:, :, :h, :w]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--blocks", default="1,1,1,1", help="Blocks per stage, comma-separated.")
  parser.add_argument("--width", type=int, default=8, help="Bottleneck width of the first stage.")
  parser.add_argument("--num_classes", type=int, default=4)
  parser.add_argument("--group_size", type=int, default=2)
  torch_common.add_step_args(parser)
  torch_common.add_params_only_arg(parser)
  args = parser.parse_args()
  blocks = tuple(int(b) for b in args.blocks.split(","))
  torch.manual_seed(0)
  model = FCRN(blocks, args.width, args.num_classes, args.group_size)
  b, s = args.batch, args.size

  def make_loss():
    image = torch.rand(b, 3, s, s) * 2 - 1
    mask = (torch.rand(b, 1, s, s) > 0.5).float()
    label = torch.randint(0, args.num_classes - 1, (b,))

    def loss():
      target = (mask[:, 0] * (label[:, None, None] + 1)).long()  # 0 background, 1 + label in the lesion
      return F.cross_entropy(model(image), target)

    return loss

  torch_common.train_and_time(model, f"torch_fcrn_step blocks={args.blocks} width={args.width} batch={b} size={s}",
                              make_loss, args)


if __name__ == "__main__":
  main()
