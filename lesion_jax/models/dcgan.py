"""DCGAN generator and discriminator (Radford et al. 2016), de-coupled or coupled (CoGAN, Liu &
Tuzel 2016), for the data-generation pipeline.

Both players see a class axis: the generator maps latents z (B, C, latent_dim) to images
(B, C, S, S, 3) in [-1, 1], the discriminator maps images (B, C, S, S, 3) to logits (B, C). Axis 1
indexes the C class-specific models. Layers are either shared by all classes or private to each
(submodules `private_<k>`, one per class); BatchNorm statistics are always per class, so no class's
images affect another class's outputs:

- de-coupled (the paper's one DCGAN per scarce class): nothing shared; every class has its own
  generator and discriminator, trained side by side. A class's loss reaches only its own slice.
- coupled (CoGAN): the generators share their first `shared_generator_layers` layers (high-level
  structure) and keep private last layers (rendering); the discriminators keep private first
  layers and share their last `shared_discriminator_layers` (the reverse end: a popular PyTorch
  CoGAN shares the discriminators' first layers instead).

Layers, for S = 4 * 2**n (64 -> n = 4): the generator projects z to 4x4 (a dense layer, the same as
Radford's 4x4 transposed convolution of a 1x1 input), then n transposed 4x4/2 convolutions (computed
as the equivalent `layers.ConvTranspose4x4`: same parameters and outputs, fast on CPU), BatchNorm
and ReLU after each but the last (tanh); the discriminator has n 4x4/2 convolutions with LeakyReLU
0.2 (BatchNorm after all but the first), then optional minibatch discrimination (Salimans et al.
2016) and a dense logit. Features double per layer from `features` and are capped at 8 * features,
so 128 and 256 px models add layers, not width. Weights N(0, 0.02), BatchNorm scales N(1, 0.02).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lesion_jax.models import layers, registry
from lesion_jax.models.batch_norm import BatchNorm

_INIT = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def num_layers(image_size: int) -> int:
  """Layers of either player at `image_size` (4 * 2**n px): n + 1."""
  n = math.log2(image_size / 4)
  if image_size < 8 or n != int(n):
    raise ValueError(f"DCGAN image_size must be 4 * 2**n (8, 16, 32, 64, 128, 256), got {image_size}")
  return int(n) + 1


def _norm(train: bool, dtype: Any) -> BatchNorm:
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=_bn_scale_init)


class GeneratorLayers(nn.Module):
  """Generator layers [start, stop): 0 projects z to 4x4, layer i > 0 doubles the resolution."""
  image_size: int
  features: int
  start: int
  stop: int
  train: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    last = num_layers(self.image_size) - 1
    for i in range(self.start, self.stop):
      width = 3 if i == last else self.features * min(8, 2 ** (last - 1 - i))
      if i == 0:
        x = nn.Dense(4 * 4 * width, kernel_init=_INIT, use_bias=False, dtype=self.dtype)(x)
        x = x.reshape(x.shape[0], 4, 4, width)
      else:
        # = nn.ConvTranspose(width, (4, 4), (2, 2), "SAME"), in a form XLA:CPU differentiates fast.
        x = layers.ConvTranspose4x4(width, use_bias=i == last, kernel_init=_INIT, dtype=self.dtype)(x)
      x = jnp.tanh(x) if i == last else nn.relu(_norm(self.train, self.dtype)(x))
    return x


class MinibatchDiscrimination(nn.Module):
  """Salimans et al. 2016: per example, sum_j exp(-||M_i,k - M_j,k||_1) over the other examples of
  its group, for each of `kernels` kernels; appended to the features. x: (B, G, F), groups on axis 1
  (one per class: a class's images are compared only with each other)."""
  kernels: int
  kernel_dim: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    t = self.param("kernel", _INIT, (x.shape[-1], self.kernels * self.kernel_dim))
    m = jnp.dot(x, t.astype(self.dtype)).reshape(*x.shape[:-1], self.kernels, self.kernel_dim)
    dist = jnp.sum(jnp.abs(m[:, None] - m[None, :]), axis=-1)  # (B, B, G, K)
    o = jnp.sum(jnp.exp(-dist), axis=1) - 1.0  # minus the example itself
    return jnp.concatenate([x, o.astype(x.dtype)], axis=-1)


class DiscriminatorLayers(nn.Module):
  """Discriminator layers [start, stop): i < n are strided convolutions, n is the logit layer.
  Input (N, S, S, 3) or activations; with the logit layer included, it returns (logits (N,),
  features (N, F)) where features feed the logit layer (feature matching compares them)."""
  image_size: int
  features: int
  start: int
  stop: int
  train: bool
  minibatch_kernels: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> Any:
    last = num_layers(self.image_size) - 1
    for i in range(self.start, min(self.stop, last)):
      x = nn.Conv(self.features * min(8, 2 ** i), (4, 4), (2, 2), padding="SAME", kernel_init=_INIT,
                  use_bias=i == 0, dtype=self.dtype)(x)
      if i > 0:
        x = _norm(self.train, self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    if self.stop <= last:
      return x
    features = x.reshape(x.shape[0], -1)
    h = features
    if self.minibatch_kernels:
      h = MinibatchDiscrimination(self.minibatch_kernels, dtype=self.dtype)(h[:, None])[:, 0]
    logits = nn.Dense(1, kernel_init=_INIT, dtype=self.dtype)(h)[:, 0]
    return logits.astype(jnp.float32), features.astype(jnp.float32)


def _shared(module_cls: type[nn.Module]) -> type[nn.Module]:
  """`module_cls` with one parameter set for all classes, applied to each class along axis 1 of
  inputs and outputs with that class's own BatchNorm statistics: a class's batch is normalised by
  its own statistics, so one class's images never change another's outputs (CoGAN runs each domain
  through the shared layers separately). vmap with unbatched parameters folds the class axis into
  the batch: plain convolutions."""
  return nn.vmap(module_cls, in_axes=1, out_axes=1, variable_axes={"params": None, "batch_stats": 0},
                 split_rngs={"params": False})


def _private(make: Any, x: Any, num_classes: int) -> Any:
  """Class k's own module `make(k)` applied to x[:, k], for every k, stacked on axis 1. (A loop,
  not vmap over stacked parameters: that becomes grouped convolutions, which XLA:CPU runs and
  differentiates several times slower than C separate ones.)"""
  outs = [make(k)(x[:, k]) for k in range(num_classes)]
  return jax.tree.map(lambda *ys: jnp.stack(ys, axis=1), *outs)


class Generator(nn.Module):
  """z (B, C, latent_dim) -> images (B, C, S, S, 3) in [-1, 1]; C = num_classes models whose first
  `shared_layers` layers are shared."""
  image_size: int = 64
  features: int = 64
  num_classes: int = 1
  shared_layers: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    n, c = num_layers(self.image_size), self.num_classes
    if not 0 <= self.shared_layers <= n:
      raise ValueError(f"shared_layers={self.shared_layers}: the generator has {n} layers")
    if z.ndim != 3 or z.shape[1] != c:
      raise ValueError(f"generator input must be (batch, {c} classes, latent), got {z.shape}")
    kw = dict(image_size=self.image_size, features=self.features, train=train, dtype=self.dtype)
    x = z.astype(self.dtype)
    if self.shared_layers:
      x = _shared(GeneratorLayers)(start=0, stop=self.shared_layers, name="shared", **kw)(x)
    if self.shared_layers < n:
      x = _private(lambda k: GeneratorLayers(start=self.shared_layers, stop=n, name=f"private_{k}", **kw), x, c)
    return x.astype(jnp.float32)


class Discriminator(nn.Module):
  """images (B, C, S, S, 3) -> (logits (B, C), features (B, C, F)); the last `shared_layers` layers
  are shared by the C class models, the first ones private."""
  image_size: int = 64
  features: int = 64
  num_classes: int = 1
  shared_layers: int = 0
  minibatch_kernels: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    n, c = num_layers(self.image_size), self.num_classes
    if not 0 <= self.shared_layers <= n:
      raise ValueError(f"shared_layers={self.shared_layers}: the discriminator has {n} layers")
    if images.ndim != 5 or images.shape[1] != c:
      raise ValueError(f"discriminator input must be (batch, {c} classes, H, W, 3), got {images.shape}")
    kw = dict(image_size=self.image_size, features=self.features, train=train, dtype=self.dtype)
    split = n - self.shared_layers
    x = images.astype(self.dtype)
    mb = self.minibatch_kernels
    if split:
      x = _private(lambda k: DiscriminatorLayers(start=0, stop=split, minibatch_kernels=mb, name=f"private_{k}", **kw),
                   x, c)
    if split < n:
      x = _shared(DiscriminatorLayers)(start=split, stop=n, minibatch_kernels=mb, name="shared", **kw)(x)
    return x


registry.register("dcgan_generator", "gan", Generator)
registry.register("dcgan_discriminator", "gan", Discriminator)
