"""PyTorch side of benchmarks/inpainter_step.py: the train step of lesion_jax/models/inpainting.py's
PConvUNet (Liu et al. 2018) rebuilt in PyTorch (NCHW) layer for layer. Needs only torch.

  python torch_inpainter_step.py [--features=32] [--levels=5] [--batch=8] [--size=128] [--repeats=3]
                                 [--inner=5] [--threads=0,1] [--mask_conv=channel_sum|nvidia]

Prints one line per thread count of --threads (0: torch's default, one per core):
`torch_inpainter_step features=F levels=L batch=B size=S mask_conv=... params=P threads=T ms=...
img_per_s=...` (ms: the best mean over `repeats` rounds of `inner` steps, after two warm-up steps
for the first thread count and one for each further one).

PartialConv2d is NVIDIA's partialconv2d.py (multi_channel=True, return_mask=True): y =
((conv(x*m) + b) - b) * sum(1)/sum(m) + b where sum(m) > 0, else 0; new mask = clamp(sum(m), 0, 1).
--mask_conv picks how sum(m) is computed:
  channel_sum (default, what lesion_jax.models.layers.PartialConv does): the mask summed over
    channels, then a 1 -> 1 channel all-ones convolution; masks carry one channel, a decoder layer's
    input mask is the concatenation of its two inputs' masks expanded to their widths.
  nvidia: NVIDIA's own, an all-ones C_in -> C_out convolution of the full mask, whose output has
    C_out identical channels (it costs as much as the layer's own forward convolution).
Both give the same outputs.

The network, as lesion_jax/models/inpainting.py (its docstring and code are the spec): encoder layer l = 1..levels,
a stride-2 partial conv (7x7, then 5x5, 5x5, then 3x3; padding k//2) to
features*min(2**(l-1), 8) channels, BatchNorm except layer 1, ReLU; decoder layer l = levels..1,
nearest 2x up-sampling of features and mask, concatenation with encoder layer l-1's (for l = 1 the
input image and mask), a 3x3 partial conv (padding 1) to encoder layer l-1's width (3 for l = 1),
BatchNorm and LeakyReLU(0.2) except layer 1. Only enc1 and dec1 have conv biases.
Loss: lesion_jax.pipelines.purification.losses.loss_per_example without feature network: L_valid +
6 L_hole + 0.1 L_tv (TV of the composite over the 1-pixel (3x3) dilation of the hole region, / C*H*W),
on the model's input target * mask; Adam(1e-3).
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common  # benchmarks/torch_common.py, beside this script


class PartialConv2d(nn.Conv2d):
  """NVIDIA's PartialConv2d(multi_channel=True, return_mask=True); see the module docstring."""

  def __init__(self, c_in, c_out, k, stride=1, bias=True, mask_conv="channel_sum"):
    super().__init__(c_in, c_out, k, stride, padding=k // 2, bias=bias)
    self.mask_conv = mask_conv
    shape = (c_out, c_in, k, k) if mask_conv == "nvidia" else (1, 1, k, k)
    self.register_buffer("mask_kernel", torch.ones(shape), persistent=False)

  def forward(self, x, mask):
    with torch.no_grad():
      if self.mask_conv == "nvidia":
        mask = mask.expand(-1, x.shape[1], -1, -1)
        counts = mask
      else:
        counts = mask if mask.shape[1] == 1 else mask.sum(1, keepdim=True)
      window = self.kernel_size[0] * self.kernel_size[1] * mask.shape[1]
      valid = F.conv2d(counts, self.mask_kernel, None, self.stride, self.padding)
      new_mask = torch.clamp(valid, 0, 1)
      ratio = window / (valid + 1e-8) * new_mask
    y = F.conv2d(x * mask, self.weight, None, self.stride, self.padding) * ratio
    if self.bias is not None:
      y = (y + self.bias.view(1, -1, 1, 1)) * new_mask
    return y, new_mask


def bn(c):
  return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # flax BatchNorm(momentum=0.9), epsilon 1e-5


class PConvUNet(nn.Module):
  def __init__(self, features=32, levels=5, channels=3, mask_conv="channel_sum"):
    super().__init__()
    self.levels, self.mask_conv = levels, mask_conv
    width = [channels] + [features * min(2 ** (l - 1), 8) for l in range(1, levels + 1)]
    self.enc, self.enc_bn = nn.ModuleList(), nn.ModuleList()
    for l in range(1, levels + 1):
      k = 7 if l == 1 else 5 if l <= 3 else 3
      self.enc.append(PartialConv2d(width[l - 1], width[l], k, 2, bias=l == 1, mask_conv=mask_conv))
      self.enc_bn.append(nn.Identity() if l == 1 else bn(width[l]))
    self.dec, self.dec_bn = nn.ModuleList(), nn.ModuleList()  # index l - 1 is decoder layer l
    for l in range(1, levels + 1):
      self.dec.append(PartialConv2d(width[l] + width[l - 1], width[l - 1], 3, 1, bias=l == 1, mask_conv=mask_conv))
      self.dec_bn.append(nn.Identity() if l == 1 else bn(width[l - 1]))

  def forward(self, image, mask):
    x, m = image, mask
    skips = [(x, m)]
    for l in range(self.levels):
      x, m = self.enc[l](x, m)
      x = F.relu(self.enc_bn[l](x))
      skips.append((x, m))
    for l in reversed(range(self.levels)):
      skip_x, skip_m = skips[l]
      x, m = F.interpolate(x, scale_factor=2, mode="nearest"), F.interpolate(m, scale_factor=2, mode="nearest")
      if self.mask_conv == "nvidia":
        m = torch.cat([m, skip_m.expand(-1, skip_x.shape[1], -1, -1)], 1)
      else:
        m = torch.cat([m.expand(-1, x.shape[1], -1, -1), skip_m.expand(-1, skip_x.shape[1], -1, -1)], 1)
      x, m = self.dec[l](torch.cat([x, skip_x], 1), m)
      if l > 0:
        x = F.leaky_relu(self.dec_bn[l](x), 0.2)
    return x


def inpainting_loss(output, target, mask):
  """L_valid + 6 L_hole + 0.1 L_tv, as purification.losses.loss_per_example without feature_fn."""
  mask = mask.expand_as(output)
  error = (output - target).abs()
  valid, hole = (mask * error).mean(), ((1 - mask) * error).mean()
  comp = (1 - mask) * output + mask * target
  region = F.max_pool2d((mask.amin(1, keepdim=True) < 0.5).float(), 3, 1, 1)  # the 3x3 dilation
  dx = ((comp[..., 1:] - comp[..., :-1]).abs() * (region[..., 1:] * region[..., :-1])).sum((1, 2, 3))
  dy = ((comp[..., 1:, :] - comp[..., :-1, :]).abs() * (region[..., 1:, :] * region[..., :-1, :])).sum((1, 2, 3))
  tv = ((dx + dy) / output[0].numel()).mean()
  return valid + 6 * hole + 0.1 * tv


def hole_masks(batch, size, generator):
  """(N, 1, S, S) masks, 1 = valid: a block and a line per image, as benchmarks/inpainter_step.py."""
  mask = torch.ones(batch, 1, size, size)
  for b in range(batch):
    top, left = (torch.randint(0, size // 2, (2,), generator=generator)).tolist()
    mask[b, :, top:top + size // 4, left:left + size // 3] = 0
    mask[b, :, size // 2 + b % 4, :] = 0
  return mask


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--features", type=int, default=32)
  parser.add_argument("--levels", type=int, default=5)
  torch_common.add_step_args(parser)
  parser.add_argument("--mask_conv", default="channel_sum", choices=("channel_sum", "nvidia"))
  torch_common.add_params_only_arg(parser)
  args = parser.parse_args()
  torch.manual_seed(0)
  model = PConvUNet(args.features, args.levels, mask_conv=args.mask_conv)
  b, s = args.batch, args.size

  def make_loss():
    target = torch.rand(b, 3, s, s) * 2 - 1
    mask = hole_masks(b, s, torch.Generator().manual_seed(0))
    return lambda: inpainting_loss(model(target * mask, mask), target, mask)

  torch_common.train_and_time(model, f"torch_inpainter_step features={args.features} levels={args.levels} "
                              f"batch={b} size={s} mask_conv={args.mask_conv}", make_loss, args)


if __name__ == "__main__":
  main()
