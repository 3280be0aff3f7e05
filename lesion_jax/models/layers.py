"""Building blocks shared by the segmentation and generation models."""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lesion_jax.models.batch_norm import BatchNorm

Dtype = Any
UPSAMPLE_MODES = ("depth_to_space", "transpose", "resize_conv")
NORMS = ("none", "batch", "group", "layer")


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
  """(N, H, W, C*b*b) -> (N, H*b, W*b, C), the pixel-shuffle rearrangement."""
  n, h, w, c = x.shape
  oc = c // (block * block)
  x = x.reshape(n, h, w, block, block, oc)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * block, w * block, oc)


def space_to_depth(x: jax.Array, block: int = 2) -> jax.Array:
  """(N, H*b, W*b, C) -> (N, H, W, C*b*b), the inverse of `depth_to_space`."""
  n, hb, wb, c = x.shape
  x = x.reshape(n, hb // block, block, wb // block, block, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, hb // block, wb // block, block * block * c)


@jax.custom_vjp
def dense_depth_to_space(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """`depth_to_space(x @ kernel + bias, 2)`, with its backward pass written out.

  Autodiff's backward of the pixel shuffle left XLA:CPU transposes fused into their producers; at
  the U-Net's largest level (64->128 px, 32->16 channels, batch 8) it ran in 15 ms against 3.5 ms
  for the three matmuls below, and the whole train step got 5 % faster (benchmarks/train_step.py).
  """
  return depth_to_space(x @ kernel + bias, 2)


def _dense_depth_to_space_fwd(x, kernel, bias):
  return dense_depth_to_space(x, kernel, bias), (x, kernel)


def _dense_depth_to_space_bwd(residuals, grad):
  x, kernel = residuals
  grad = space_to_depth(grad, 2).reshape(-1, kernel.shape[1])
  grad_x = (grad @ kernel.T).reshape(x.shape)
  grad_kernel = x.reshape(-1, x.shape[-1]).T @ grad
  return grad_x, grad_kernel, grad.sum(axis=0)


dense_depth_to_space.defvjp(_dense_depth_to_space_fwd, _dense_depth_to_space_bwd)


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 1x1, stride-1 NHWC convolution (`kernel` (1, 1, C, O)) as a matmul over the channels, with
  its backward pass written out so that the kernel gradient transposes the output gradient, not `x`.

  Autodiff's kernel gradient (x^T dy over N·H·W rows) makes XLA:CPU copy `x` into a channels-major
  layout; in a ResNet `x` is the residual stream, and XLA fused each copy with the whole chain of
  BatchNorms, additions and ReLUs that produced it (recomputed from the convolutions' outputs, several
  blocks deep): those copies were 68 % of the ResNet-50 train step (docs/benchmarks.md). Computing
  (dy^T x)^T instead transposes the output gradient, which comes straight out of BatchNorm's backward.
  """
  return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))


def _pointwise_conv_fwd(x, kernel):
  return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_conv_bwd(residuals, grad):
  x, kernel = residuals
  grad_x = lax.dot_general(grad, kernel[0, 0], (((3,), (1,)), ((), ())))
  grad_kernel_t = lax.dot_general(grad, x, (((0, 1, 2), (0, 1, 2)), ((), ())))  # (O, C)
  return grad_x, grad_kernel_t.T.reshape(kernel.shape)


pointwise_conv.defvjp(_pointwise_conv_fwd, _pointwise_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated` (nn.Conv's `conv_general_dilated=`) that runs 1x1 NHWC
  convolutions as `pointwise_conv` (a stride is a slice first); every other convolution, and one
  asking for a `precision` or `preferred_element_type`, is lax's. Same function, same parameters: only
  the kernel gradient's layout copy changes."""
  pointwise = (lhs.ndim == 4 and rhs.shape[:2] == (1, 1) and feature_group_count == 1 and batch_group_count == 1
               and _is_nhwc(dimension_numbers) and not _conv_pads(padding) and precision is None
               and preferred_element_type is None
               and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))
  if not pointwise:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  sh, sw = window_strides
  if (sh, sw) != (1, 1):
    lhs = lhs[:, ::sh, ::sw]
  return pointwise_conv(lhs, rhs)


def _is_nhwc(dimension_numbers) -> bool:
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  return tuple(dimension_numbers or ()) == ("NHWC", "HWIO", "NHWC")


def _conv_pads(padding) -> bool:
  """Whether a 1x1 convolution's `padding` adds pixels (SAME and VALID add none at 1x1)."""
  if isinstance(padding, str):
    return False
  return any(lo or hi for lo, hi in padding)


class PixelShuffleDense(nn.Module):
  """A Dense layer to 4·features channels followed by a 2× pixel shuffle (`dense_depth_to_space`).

  Parameters are those of `nn.Dense(4 * features)` (same names, shapes and initialisers).
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], 4 * self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (4 * self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return dense_depth_to_space(x, kernel, bias)


def make_norm(kind: str, train: bool, dtype: Dtype = jnp.float32, name: str | None = None) -> Callable[[jax.Array], jax.Array]:
  """A normalisation layer by name; 'none' is the identity (the original U-Net has no norm)."""
  if kind == "none":
    return lambda x: x
  if kind == "batch":
    return BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name)
  if kind == "group":
    return nn.GroupNorm(num_groups=None, group_size=8, dtype=dtype, name=name)
  if kind == "layer":
    return nn.LayerNorm(dtype=dtype, name=name)
  raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


class ConvBlock(nn.Module):
  """`num_convs` × (3×3 conv → norm → ReLU), optionally dilated."""
  features: int
  norm: str = "none"
  num_convs: int = 2
  dilation: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_convs):
      x = nn.Conv(self.features, (3, 3), padding="SAME", kernel_dilation=self.dilation,
                  use_bias=self.norm == "none", dtype=self.dtype, name=f"conv{i}")(x)
      x = make_norm(self.norm, train, self.dtype, name=f"norm{i}")(x)
      x = nn.relu(x)
    return x


class Upsample2x(nn.Module):
  """Learned 2× up-sampling to `features` channels.

  'transpose' is the papers' 2×2 stride-2 transposed convolution. 'depth_to_space' is a 1×1 conv to
  4·features channels followed by a pixel shuffle: the *same* function class as the 2×2 stride-2
  transposed conv (each output pixel of a 2×2/2 transposed conv sees exactly one input pixel), but
  XLA on CPU runs it as a plain matmul instead of a slow transposed convolution. 'resize_conv' is
  nearest-neighbour up-sampling followed by a 3×3 conv.
  """
  features: int
  mode: str = "depth_to_space"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.mode == "transpose":
      return nn.ConvTranspose(self.features, (2, 2), strides=(2, 2), dtype=self.dtype, name="up")(x)
    if self.mode == "depth_to_space":
      # The 1×1 conv is a matmul (a dot for XLA, not a convolution, whose 1×1 weight gradient ran
      # at ~12 GFLOP/s on CPU under YNNPACK) with a hand-written backward pass.
      return PixelShuffleDense(self.features, dtype=self.dtype, name="up")(x)
    if self.mode == "resize_conv":
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      return nn.Conv(self.features, (3, 3), padding="SAME", dtype=self.dtype, name="up")(x)
    raise ValueError(f"unknown upsample mode {self.mode!r}; choose one of {UPSAMPLE_MODES}")


# Which tap of a 4-tap, stride-2 transposed convolution ('SAME', as flax's nn.ConvTranspose) feeds
# output phase a (output index 2i + a) from input i - 1, i, i + 1 (the window of a 3-tap conv).
_PHASE_TAPS = ({0: 0, 1: 2}, {1: 1, 2: 3})


def _phase_kernel(kernel: jax.Array) -> jax.Array:
  """(4, 4, I, O) transposed-conv kernel -> (3, 3, I, 4 O) kernel of the equivalent stride-1 conv whose
  output channels are the 4 output phases (a, b) followed by a depth-to-space."""
  k, i, o = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  assert k == 4 and kernel.shape[1] == 4, kernel.shape
  zero = jnp.zeros((i, o), kernel.dtype)
  rows = []
  for u in range(3):
    cols = []
    for v in range(3):
      phases = [kernel[_PHASE_TAPS[a][u], _PHASE_TAPS[b][v]] if u in _PHASE_TAPS[a] and v in _PHASE_TAPS[b]
                else zero for a in (0, 1) for b in (0, 1)]
      cols.append(jnp.concatenate(phases, axis=-1))
    rows.append(jnp.stack(cols))
  return jnp.stack(rows)


class ConvTranspose4x4(nn.Module):
  """Exactly `nn.ConvTranspose(features, (4, 4), (2, 2), padding='SAME')` (same parameters, same
  outputs), computed as a 3x3 stride-1 convolution to 4 x features channels, one per output phase,
  and a depth-to-space. XLA:CPU's transposed-convolution weight gradient took 0.49 s for one
  32 px DCGAN layer where this form takes milliseconds (a faster equivalent layer on CPU)."""
  features: int
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
    y = lax.conv_general_dilated(x.astype(self.dtype), _phase_kernel(kernel).astype(self.dtype), (1, 1),
                                 ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = depth_to_space(y)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


def max_pool_2x(x: jax.Array) -> jax.Array:
  """2×2 max-pool with stride 2 (input height/width must be even).

  Written as a reshape and a max-reduction rather than `nn.max_pool`: the gradient is then an
  element-wise compare that XLA fuses, where reduce_window's gradient showed up as ~15 % of the
  U-Net's traced train step on CPU (the step got 5 % faster). Ties share the gradient equally.
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"max_pool_2x needs even height and width, got {h}x{w}")
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def max_pool_3x3_2x(x: jax.Array, padding: str | Sequence[tuple[int, int]] = "SAME") -> jax.Array:
  """`nn.max_pool(x, (3, 3), (2, 2), padding)` (the ResNet stem's), written as a max over three
  strided slices along H, then along W: its gradient is element-wise selects and pads that XLA fuses,
  where reduce_window's gradient is a scatter of every window's argmax (a million updates per
  ResNet-18 step at 128 px, batch 32, half width). Same forward; ties share the gradient equally."""
  n, h, w, c = x.shape
  if isinstance(padding, str):  # XLA's SAME for a 3-wide window, stride 2: out = ceil(in / 2)
    if padding != "SAME":
      raise ValueError(f"max_pool_3x3_2x: padding {padding!r} (SAME or explicit pairs)")
    totals = [max(2 * ((d + 1) // 2) + 1 - d, 0) for d in (h, w)]
    padding = [(total // 2, total - total // 2) for total in totals]
  (top, bottom), (left, right) = padding
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
  out_h, out_w = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
  x = jnp.maximum(jnp.maximum(x[:, 0:2 * out_h - 1:2], x[:, 1:2 * out_h:2]), x[:, 2:2 * out_h + 1:2])
  return jnp.maximum(jnp.maximum(x[:, :, 0:2 * out_w - 1:2], x[:, :, 1:2 * out_w:2]), x[:, :, 2:2 * out_w + 1:2])


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def _conv_padding(padding: str | int | Sequence[Any]) -> str | tuple[tuple[int, int], ...]:
  """nn.Conv's padding forms ('SAME', 'VALID', p, (p_h, p_w), ((lo, hi), (lo, hi))) for lax."""
  if isinstance(padding, str):
    return padding
  if isinstance(padding, int):
    return ((padding, padding),) * 2
  return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


class PartialConv(nn.Module):
  """Partial convolution (Liu et al. 2018), as NVIDIA's partialconv2d.py with return_mask=True.

  For each output pixel, with X the input window, M its mask (1 = valid, 0 = hole; zero padding
  counts as hole), sum(1) the number of elements in the window and sum(M) the number of valid ones:

    y = W^T (X ⊙ M) · sum(1) / sum(M) + b   where sum(M) > 0, else 0;
    new mask = 1 where sum(M) > 0, else 0   (clip(sum(M), 0, 1) for non-binary masks, as NVIDIA).

  The mask is single-channel, (N, H, W, 1), broadcast over the input channels (NVIDIA's
  multi_channel=False: sum(1) = kh·kw), or has the input's C_in channels (multi_channel=True:
  sum(1) = kh·kw·C_in); with C_in = 1 the two agree. The updated mask is returned with one channel,
  (N, H', W', 1), in both modes: NVIDIA's multi-channel mode returns `features` channels, but they
  are copies of one another (its all-ones kernel sums over every input channel), so
  `jnp.broadcast_to(new_mask, y.shape)` is NVIDIA's mask, without materialising it.

  Parameters are nn.Conv's: `kernel` (kh, kw, C_in, features), lecun_normal, and `bias`
  (features,), zeros. `padding` takes nn.Conv's forms; 'SAME' pads as lax does (the extra row or
  column of an odd total at the bottom/right), an int p pads p on every side as PyTorch does.
  """
  features: int
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: str | int | Sequence[Any] = "SAME"
  dilation: int | Sequence[int] = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    c_in = x.shape[-1]
    if mask.shape[-1] not in (1, c_in) or mask.shape[:-1] != x.shape[:-1]:
      raise ValueError(f"PartialConv needs a mask of shape {x.shape[:-1] + (1,)} or {x.shape}, "
                       f"got {mask.shape}")
    kernel_size, strides, dilation = _pair(self.kernel_size), _pair(self.strides), _pair(self.dilation)
    padding = _conv_padding(self.padding)
    conv = functools.partial(lax.conv_general_dilated, window_strides=strides, padding=padding,
                             rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    kernel = self.param("kernel", nn.initializers.lecun_normal(), kernel_size + (c_in, self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,)) if self.use_bias else None

    # The valid count of every window: summing the mask over channels first makes the all-ones
    # convolution 1 -> 1 channels (NVIDIA's C_in -> features costs as much as the layer itself).
    # HIGHEST: the counts reach kh·kw·C_in, beyond what TF32/bf16 accelerator convolutions keep exact.
    mask = lax.stop_gradient(mask.astype(jnp.float32))
    counts = mask if mask.shape[-1] == 1 else mask.sum(axis=-1, keepdims=True)
    valid = conv(counts, jnp.ones(kernel_size + (1, 1), jnp.float32), precision=lax.Precision.HIGHEST)
    window = kernel_size[0] * kernel_size[1] * mask.shape[-1]
    new_mask = jnp.clip(valid, 0.0, 1.0)
    # As NVIDIA: the + 1e-8 is lost against counts >= 1 and leaves a finite 0 where nothing is valid.
    ratio = window / (valid + 1e-8) * new_mask

    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    y = conv(x * mask.astype(x.dtype), kernel) * ratio.astype(x.dtype)
    if bias is not None:
      y = (y + bias.astype(x.dtype)) * new_mask.astype(x.dtype)
    return y, new_mask
