"""The partial-convolution U-Net of Liu et al. 2018 ("Image Inpainting for Irregular Holes Using
Partial Convolutions"), the inpainter of the purification pipeline (hair removal)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lesion_jax.models import layers, registry


def _upsample_2x(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x up-sampling of (N, H, W, C)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class PConvUNet(nn.Module):
  """U-Net of partial convolutions; fills the holes of `image` where `mask` is 0.

  Encoder layer l = 1..levels: a stride-2 `layers.PartialConv` (7x7 for l = 1, 5x5 for l = 2, 3,
  3x3 after), features·min(2^(l-1), 8) channels (the paper's 64, 128, 256, 512, 512, ... for
  features=64), BatchNorm (not in layer 1), ReLU. Decoder layer l = levels..1: nearest-neighbour 2x
  up-sampling of the features and of the mask, concatenated with encoder layer l-1's features and
  mask (for l = 1, the input image and its mask), a 3x3 partial conv to encoder layer l-1's width
  (l = 1: the image's channels), BatchNorm and LeakyReLU(0.2) except in layer 1. Convolutions
  followed by BatchNorm have no bias (enc_conv1 and dec_conv1 have one); padding is k//2 on every
  side, as the PyTorch implementations.

  Masks: the input mask is (N, H, W, 1) or (N, H, W, C) like the image, 1 = valid, 0 = hole. Inside,
  a layer's updated mask has one channel (`layers.PartialConv` returns one; NVIDIA's copies of it
  over the output channels are equal), and a decoder layer's input mask is the concatenation of its
  two inputs' masks broadcast to their channel counts, i.e. NVIDIA's multi-channel mask: each
  window's valid count weighs a pixel of the up-sampled path by its width and one of the skip by its.

  Output: (N, H, W, C) float32 from a linear last layer, with no range constraint. It is trained
  towards the data pipeline's [-1, 1] images; `purification.steps.predict_step` clips it there and
  keeps the valid pixels of the input.

  Attributes:
    features: base width (the paper's is 64; 32 here, for CPU).
    levels: number of stride-2 encoder layers (the paper: 8 at 512 px); H and W must divide by
      2^levels. 5 at 128 px leaves a 4x4 bottleneck.
    freeze_encoder_bn: use the encoder BatchNorms' running averages even when training (the
      paper's fine-tuning stage, which then also lowers the learning rate); the decoder's still
      learn from batch statistics.
    dtype: compute dtype (parameters stay float32; the mask arithmetic is float32).
  """
  features: int = 32
  levels: int = 5
  freeze_encoder_bn: bool = False
  dtype: Any = jnp.float32

  def width(self, level: int) -> int:
    """Channels of encoder layer `level` (1-based)."""
    return self.features * min(2 ** (level - 1), 8)

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
    factor = 2 ** self.levels
    if image.ndim != 4 or image.shape[1] % factor or image.shape[2] % factor:
      raise ValueError(f"PConvUNet with {self.levels} levels needs (N, H, W, C) images with height and "
                       f"width divisible by {factor}, got shape {image.shape}")
    if mask.shape[:-1] != image.shape[:-1] or mask.shape[-1] not in (1, image.shape[-1]):
      raise ValueError(f"PConvUNet needs a mask of shape {image.shape[:-1] + (1,)} or {image.shape}, "
                       f"got {mask.shape}")
    x, m = image.astype(self.dtype), mask.astype(jnp.float32)
    skips = [(x, m)]
    for level in range(1, self.levels + 1):
      k = 7 if level == 1 else 5 if level <= 3 else 3
      x, m = layers.PartialConv(self.width(level), k, strides=2, padding=k // 2, use_bias=level == 1,
                                dtype=self.dtype, name=f"enc_conv{level}")(x, m)
      if level > 1:
        x = layers.make_norm("batch", train and not self.freeze_encoder_bn, self.dtype,
                             name=f"enc_bn{level}")(x)
      x = nn.relu(x)
      skips.append((x, m))
    for level in range(self.levels, 0, -1):
      skip_x, skip_m = skips[level - 1]
      x, m = _upsample_2x(x), _upsample_2x(m)
      m = jnp.concatenate([jnp.broadcast_to(m, x.shape), jnp.broadcast_to(skip_m, skip_x.shape)], axis=-1)
      x = jnp.concatenate([x, skip_x], axis=-1)
      last = level == 1
      x, m = layers.PartialConv(image.shape[-1] if last else self.width(level - 1), 3, padding=1,
                                use_bias=last, dtype=self.dtype, name=f"dec_conv{level}")(x, m)
      if not last:
        x = layers.make_norm("batch", train, self.dtype, name=f"dec_bn{level}")(x)
        x = nn.leaky_relu(x, 0.2)
    return x.astype(jnp.float32)


registry.register("pconv_unet", "inpainter", PConvUNet)
