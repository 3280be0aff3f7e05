"""U-Net (Ronneberger et al. 2015) as used by the lesion-segmentation papers: 4 down / 4 up levels."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lesion_jax.models import layers
from lesion_jax.models import registry


class UNet(nn.Module):
  """Encoder-decoder with skip connections; returns per-pixel logits (N, H, W, num_outputs).

  Attributes:
    features: width of the first level; level i has features·2^i channels, the bottleneck
      features·2^levels (16·features for 4 levels, as in the papers).
    levels: number of down-sampling (and up-sampling) steps; H and W must divide by 2^levels.
    norm: 'none' (original U-Net), 'batch', 'group' or 'layer'.
    upsample: see `layers.Upsample2x`.
    bottleneck_dilations: dilation rates of extra 3x3 convs (each followed by norm and ReLU) in
      cascade after the bottleneck block (the purification paper's dilated U-Net: (2, 4)); empty
      for the plain U-Net.
    input_mean, input_std: per-channel statistics of the training images in [0, 1]; if set, the
      [-1, 1] input is mapped back to [0, 1] and standardised with them (the purification paper
      normalises its input per channel with the dataset's mean and standard deviation).
  """
  features: int = 16
  levels: int = 4
  num_outputs: int = 1
  norm: str = "batch"  # SegmenterModelConfig's (the trained default); "none" is the original U-Net
  upsample: str = "depth_to_space"
  bottleneck_dilations: tuple[int, ...] = ()
  input_mean: tuple[float, float, float] | None = None
  input_std: tuple[float, float, float] | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    factor = 2 ** self.levels
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"UNet with {self.levels} levels needs height and width divisible by "
                       f"{factor}, got {x.shape[1]}x{x.shape[2]}")
    if self.input_mean is not None:
      std = jnp.asarray(self.input_std if self.input_std is not None else (1.0, 1.0, 1.0), jnp.float32)
      x = ((x + 1.0) / 2.0 - jnp.asarray(self.input_mean, jnp.float32)) / std
    x = x.astype(self.dtype)
    skips = []
    for i in range(self.levels):
      x = layers.ConvBlock(self.features * 2 ** i, self.norm, dtype=self.dtype, name=f"down{i}")(x, train)
      skips.append(x)
      x = layers.max_pool_2x(x)
    x = layers.ConvBlock(self.features * 2 ** self.levels, self.norm, dtype=self.dtype, name="bottleneck")(x, train)
    for j, rate in enumerate(self.bottleneck_dilations):
      x = layers.ConvBlock(self.features * 2 ** self.levels, self.norm, num_convs=1, dilation=rate,
                           dtype=self.dtype, name=f"dilated{j}")(x, train)
    for i in reversed(range(self.levels)):
      x = layers.Upsample2x(self.features * 2 ** i, self.upsample, dtype=self.dtype, name=f"up{i}")(x)
      x = jnp.concatenate([x, skips[i]], axis=-1)
      x = layers.ConvBlock(self.features * 2 ** i, self.norm, dtype=self.dtype, name=f"dec{i}")(x, train)
    logits = nn.Conv(self.num_outputs, (1, 1), dtype=self.dtype, name="logits")(x)
    return logits.astype(jnp.float32)


registry.register("unet", "segmenter", UNet)
# The purification paper's: 3x3 convs dilated 2 then 4 after the bottleneck.
registry.register("dilated_unet", "segmenter", functools.partial(UNet, bottleneck_dilations=(2, 4)))
