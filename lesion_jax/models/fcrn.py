"""Fully-convolutional residual network (FCRN) of the Lesion Indexing Network (Li and Shen 2018).

One network both segments and coarsely classifies: its head gives, per pixel, a background score
and one score per lesion class (melanoma, seborrheic keratosis, nevus), trained with a per-pixel
softmax. The encoder is a ResNet of bottleneck blocks (1x1, 3x3, 1x1 convolutions with BatchNorm)
in four stages at strides 4, 8, 16 and 32; "residual in residual" (the paper's FCRN-88): each
group of `group_size` consecutive blocks is wrapped in an outer identity shortcut, so gradients
reach the early layers through two levels of skips (the first block of a stage, which changes
width and stride, stands alone). The head, as the paper's multi-scale
deconvolution: each of the last three stages is projected by a 1x1 convolution to the class
scores, up-sampled (bilinear, fixed) to stride 8 and summed, then a learned 8x up-sampling
(three `layers.Upsample2x`: the depth-to-space form of a stride-2 deconvolution, fast on
XLA:CPU) gives the scores at the input resolution.

Depth: `fcrn88` counts 88 weighted layers (stem 1 + 3 x 28 blocks + 3 projections), blocks per
stage (3, 4, 14, 7); the paper names the depth but not the block layout, so that split is ours.
`fcrn_small` (one block per stage, width 8) is the CPU-sized variant the tests and the README's
runs use. Any input size works (edge-padded to a multiple of 32, scores cropped back).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lesion_jax.models import layers
from lesion_jax.models import registry

# name -> (blocks per stage, width of the first stage's bottleneck).
FCRN_VARIANTS: dict[str, tuple[tuple[int, ...], int]] = {
    "fcrn88": ((3, 4, 14, 7), 64),
    "fcrn50": ((3, 4, 6, 3), 64),
    "fcrn_small": ((1, 1, 1, 1), 8),
}


class Bottleneck(nn.Module):
  width: int
  stride: int = 1
  norm: str = "batch"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = lambda f, k, s, name: nn.Conv(f, (k, k), strides=(s, s), padding="SAME", use_bias=self.norm == "none",
                                         dtype=self.dtype, name=name, conv_general_dilated=layers.conv_general_dilated)
    y = nn.relu(layers.make_norm(self.norm, train, self.dtype, "norm0")(conv(self.width, 1, 1, "conv0")(x)))
    y = nn.relu(layers.make_norm(self.norm, train, self.dtype, "norm1")(conv(self.width, 3, self.stride, "conv1")(y)))
    y = layers.make_norm(self.norm, train, self.dtype, "norm2")(conv(4 * self.width, 1, 1, "conv2")(y))
    if x.shape[-1] != 4 * self.width or self.stride != 1:
      x = layers.make_norm(self.norm, train, self.dtype, "short_norm")(
          conv(4 * self.width, 1, self.stride, "shortcut")(x))
    return nn.relu(x + y)


class FCRN(nn.Module):
  """Per-pixel class scores (N, H, W, num_classes) for any (N, H, W, C) input; class 0 is
  background."""
  blocks: tuple[int, ...] = (1, 1, 1, 1)
  width: int = 8
  num_classes: int = 4
  group_size: int = 2  # residual in residual: an outer shortcut around every this many blocks
  norm: str = "batch"
  upsample: str = "depth_to_space"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if len(self.blocks) != 4:
      raise ValueError(f"FCRN has 4 stages, got blocks={self.blocks}")
    n, h, w, _ = x.shape
    ph, pw = -h % 32, -w % 32
    if ph or pw:
      x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    x = x.astype(self.dtype)
    x = nn.Conv(2 * self.width, (7, 7), strides=(2, 2), padding="SAME", use_bias=self.norm == "none",
                dtype=self.dtype, name="stem")(x)
    x = layers.max_pool_2x(nn.relu(layers.make_norm(self.norm, train, self.dtype, "stem_norm")(x)))
    stages = []
    for s, count in enumerate(self.blocks):
      width = self.width * 2 ** s
      # The first block changes width and stride; the rest form groups of `group_size` blocks,
      # each wrapped in an outer ("residual in residual") identity shortcut.
      x = Bottleneck(width, 2 if s > 0 else 1, self.norm, self.dtype, name=f"stage{s}_block0")(x, train)
      group_input = x
      for b in range(1, count):
        x = Bottleneck(width, 1, self.norm, self.dtype, name=f"stage{s}_block{b}")(x, train)
        if self.group_size > 1 and (b % self.group_size == 0 or b == count - 1):
          x = x + group_input
          group_input = x
      stages.append(x)
    target = stages[1].shape[1:3]  # stride 8
    scores = 0.0
    for s in (1, 2, 3):
      y = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name=f"score{s}")(stages[s])
      if y.shape[1:3] != target:
        y = jax.image.resize(y, (n, *target, self.num_classes), method="bilinear")
      scores = scores + y
    for i in range(3):  # learned 8x up-sampling back to the input resolution
      scores = layers.Upsample2x(self.num_classes if i == 2 else 4 * self.num_classes, self.upsample,
                                 dtype=self.dtype, name=f"deconv{i}")(scores)
    return scores[:, :h, :w].astype(jnp.float32)


def fcrn(variant: str, num_classes: int = 4, norm: str = "batch", upsample: str = "depth_to_space",
         dtype: Any = jnp.float32, width: int | None = None) -> FCRN:
  if variant not in FCRN_VARIANTS:
    raise ValueError(f"unknown FCRN variant {variant!r}; choose one of {list(FCRN_VARIANTS)}")
  blocks, default_width = FCRN_VARIANTS[variant]
  return FCRN(blocks=blocks, width=width or default_width, num_classes=num_classes, norm=norm,
              upsample=upsample, dtype=dtype)


for _variant in FCRN_VARIANTS:
  registry.register(_variant, "fcrn", functools.partial(fcrn, _variant))
