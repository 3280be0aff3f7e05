"""Multi-scale fully-convolutional network: the superpixel-guided segmentation paper's global map.

An encoder of conv blocks with 2x2 max-pooling gives feature maps at strides 2, 4, ..., 2^levels.
Each is projected by a 1x1 conv to `head_features` channels, the coarser ones are up-sampled
(bilinear, fixed) to the finest (stride 2), and all are concatenated and fused by a 3x3 conv. A
learned 2x up-sampling takes the fused map back to the input resolution: the paper's
deconvolution, here as a 1x1 conv to 4x channels and a pixel shuffle (`layers.Upsample2x`
"depth_to_space", the same function class as a 2x2 stride-2 transposed convolution, which
XLA:CPU runs as one matmul rather than a slow transposed convolution; "transpose" selects the
latter). There is no skip path from the full-resolution stage (that would make it a U-Net), so
the map is coarse at the borders, which is what the superpixel refinement corrects.

Any input size works: inputs are edge-padded up to a multiple of 2^levels and the logits cropped
back, so one set of parameters serves every test resolution.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lesion_jax.models import layers
from lesion_jax.models import registry


class FCN(nn.Module):
  """Returns per-pixel logits (N, H, W, num_outputs) for any (N, H, W, C) input.

  Attributes:
    features: width of the first stage; stage i has features * 2^i channels.
    levels: pooling steps; feature maps of strides 2..2^levels are fused.
    head_features: channels of each projected scale and of the fused map.
    norm, upsample: see `layers.make_norm` and `layers.Upsample2x`.
  """
  features: int = 16
  levels: int = 4
  head_features: int = 32
  num_outputs: int = 1
  norm: str = "batch"
  upsample: str = "depth_to_space"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.levels < 1:
      raise ValueError(f"FCN needs levels >= 1, got {self.levels}")
    n, h, w, _ = x.shape
    factor = 2 ** self.levels
    ph, pw = -h % factor, -w % factor
    if ph or pw:  # any input size: pad to the pooling grid, crop the logits back
      x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    x = x.astype(self.dtype)
    x = layers.ConvBlock(self.features, self.norm, dtype=self.dtype, name="stem")(x, train)
    scales = []
    for i in range(1, self.levels + 1):
      x = layers.max_pool_2x(x)
      x = layers.ConvBlock(self.features * 2 ** i, self.norm, dtype=self.dtype, name=f"stage{i}")(x, train)
      scales.append(x)
    finest = scales[0].shape[1:3]
    fused = []
    for i, s in enumerate(scales):
      s = nn.Conv(self.head_features, (1, 1), dtype=self.dtype, name=f"project{i + 1}")(s)
      if s.shape[1:3] != finest:
        s = jax.image.resize(s, (n, *finest, s.shape[-1]), method="bilinear")
      fused.append(s)
    x = jnp.concatenate(fused, axis=-1)
    x = layers.ConvBlock(self.head_features, self.norm, num_convs=1, dtype=self.dtype, name="fuse")(x, train)
    x = layers.Upsample2x(self.head_features, self.upsample, dtype=self.dtype, name="deconv")(x)
    x = nn.relu(x)
    logits = nn.Conv(self.num_outputs, (3, 3), padding="SAME", dtype=self.dtype, name="logits")(x)
    return logits[:, :h, :w].astype(jnp.float32)


registry.register("fcn", "segmenter", FCN)  # the superpixel-guided paper's multi-scale FCN
