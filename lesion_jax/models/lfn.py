"""The Lesion Feature Network (LFN) of Li and Shen 2018 ("Skin lesion analysis towards melanoma
detection using deep learning network", Sensors 18(2):556), ISIC 2017 task 2: a plain CNN that
classifies one superpixel patch (56 x 56 in the paper) as background or one dermoscopic feature.

Four stages, each a 3x3 conv, a 3x3 conv and a 1x1 conv (every conv followed by BatchNorm, when
`use_batchnorm`, and ReLU), the stages separated by 2x2 max pooling (56 → 28 → 14 → 7), then
global average pooling and one dense layer to the classes.

Widths. The paper's Table VI gives the standard network's kernel numbers and those of a narrow
and a wide variant; we could not consult the table, so the widths here are OUR CHOICE, not the
paper's: every conv of stage s has `widths[s]` kernels, with

  lfn         16, 32, 64, 128   (standard)
  lfn_narrow   8, 16, 32, 64    (half the kernels)
  lfn_wide    32, 64, 128, 256  (twice the kernels)

`use_batchnorm=False` gives the ablation without BatchNorm (the convs then have biases).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lesion_jax.models import layers, registry
from lesion_jax.models.batch_norm import BatchNorm

# Kernels per stage (each stage's three convs share its width). Our choice; see the docstring.
LFN_VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "lfn": (16, 32, 64, 128),
    "lfn_narrow": (8, 16, 32, 64),
    "lfn_wide": (32, 64, 128, 256),
}


class LFN(nn.Module):
  """(N, H, W, 3) float patches → (N, num_classes) float32 logits; `train` switches BatchNorm
  between batch statistics (updating the running averages) and the running averages."""
  num_classes: int
  widths: Sequence[int] = LFN_VARIANTS["lfn"]
  use_batchnorm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.astype(self.dtype)
    for stage, width in enumerate(self.widths):
      if stage:  # layers.max_pool_2x: a reshape and a max (a fused gradient), where the size is even
        even = x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0
        x = layers.max_pool_2x(x) if even else nn.max_pool(x, (2, 2), (2, 2))
      for kernel in (3, 3, 1):
        x = nn.Conv(width, (kernel, kernel), padding="SAME", use_bias=not self.use_batchnorm,
                    dtype=self.dtype, conv_general_dilated=layers.conv_general_dilated)(x)
        if self.use_batchnorm:
          x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
        x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))  # global average pooling
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def lfn(variant: str = "lfn", num_classes: int = 5, use_batchnorm: bool = True,
        dtype: Any = jnp.float32) -> LFN:
  """The LFN variant `variant` (lfn, lfn_narrow, lfn_wide)."""
  if variant not in LFN_VARIANTS:
    raise ValueError(f"unknown LFN variant {variant!r}; choose one of {list(LFN_VARIANTS)}")
  return LFN(num_classes=num_classes, widths=LFN_VARIANTS[variant], use_batchnorm=use_batchnorm, dtype=dtype)


for _variant in LFN_VARIANTS:
  registry.register(_variant, "lfn", functools.partial(lfn, _variant))
