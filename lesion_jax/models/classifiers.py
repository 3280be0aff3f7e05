"""Image classifiers of the papers: LeNet-5, the modified AlexNet, ResNet-18/50.

All take (N, H, W, 3) float inputs and return (N, num_classes) logits; `train` switches dropout
and BatchNorm statistics.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lesion_jax.models import layers, registry
from lesion_jax.models.batch_norm import BatchNorm


class LeNet5(nn.Module):
  """LeCun et al. 1998: two 5×5 conv + pool stages (6, 16 maps), dense 120 → 84 → classes.
  Inputs of any size are average-pooled to 32×32 first, the size LeNet-5 was designed for."""
  num_classes: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.astype(self.dtype)
    if x.shape[1] != 32 or x.shape[2] != 32:
      x = jax.image.resize(x, (x.shape[0], 32, 32, x.shape[3]), "linear", antialias=True)
    x = nn.relu(nn.Conv(6, (5, 5), padding="VALID", dtype=self.dtype)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(16, (5, 5), padding="VALID", dtype=self.dtype)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(120, dtype=self.dtype)(x))
    x = nn.relu(nn.Dense(84, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class AlexNet(nn.Module):
  """AlexNet's five conv layers with the mask-then-AlexNet paper's head: dense 1000, 1000, 500,
  then classes, dropout 0.6. Padding is SAME so inputs from 64 px up reach a valid feature map;
  `width` scales the conv channels (1.0 = 96, 256, 384, 384, 256)."""
  num_classes: int = 2
  dropout: float = 0.6
  width: float = 1.0
  dense: Sequence[int] = (1000, 1000, 500)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c = lambda n: max(8, int(n * self.width))
    conv = partial(nn.Conv, padding="SAME", dtype=self.dtype)
    pool = lambda y: nn.max_pool(y, (3, 3), (2, 2), padding="SAME")
    x = x.astype(self.dtype)
    stride = 4 if x.shape[1] >= 128 else 2  # keep small inputs from vanishing
    x = pool(nn.relu(conv(c(96), (11, 11), strides=(stride, stride))(x)))
    x = pool(nn.relu(conv(c(256), (5, 5))(x)))
    x = nn.relu(conv(c(384), (3, 3))(x))
    x = nn.relu(conv(c(384), (3, 3))(x))
    x = pool(nn.relu(conv(c(256), (3, 3))(x)))
    x = jnp.mean(x, axis=(1, 2)) if x.shape[1] > 6 else x.reshape(x.shape[0], -1)
    for units in self.dense:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(units, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


# A module class or a functools.partial of one, as in flax's ResNet example: ResNet.__call__ fixes
# the options (dtype, BatchNorm mode and momentum, no conv bias) once and the blocks only choose
# features, kernel and strides.
ModuleDef = Any


class ResNetBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if x.shape != y.shape:
      x = self.norm()(self.conv(self.filters, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class BottleneckBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), self.strides)(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if x.shape != y.shape:
      x = self.norm()(self.conv(self.filters * 4, (1, 1), self.strides)(x))
    return nn.relu(x + y)


def _torchvision_conv(features: int, kernel_size: Sequence[int], strides: Sequence[int] = (1, 1), *,
                      padding: Any = None, dtype: Any = jnp.float32) -> nn.Conv:
  """An nn.Conv without bias padded as torchvision's ResNet pads: k // 2 on every side."""
  if padding is None:
    padding = [(k // 2, k // 2) for k in kernel_size]
  return nn.Conv(features, kernel_size, strides, padding=padding, use_bias=False, dtype=dtype,
                 conv_general_dilated=layers.conv_general_dilated)


def resnet_features(x: jax.Array, stage_sizes: Sequence[int], block: Any, width: int, conv: Any, norm: Any,
                    imagenet_stem: bool = True, max_pool_padding: Any = "SAME") -> list[jax.Array]:
  """The ResNet body, shared by the classifiers and Mask R-CNN's backbone: the stem, then the
  output of every stage (C2..C5). Called inside an `nn.compact` method, its layers become the
  caller's submodules (named Conv_0, BatchNorm_0, ResNetBlock_0, ... as if written inline)."""
  if imagenet_stem:  # 7x7/2 conv and 3x3/2 max-pool: /4
    x = nn.relu(norm()(conv(width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)])(x)))
    x = layers.max_pool_3x3_2x(x, max_pool_padding)
  else:  # small inputs: a 3x3 stem, stride 2 from 64 px (/2), stride 1 below (CIFAR-style)
    stride = 2 if x.shape[1] >= 64 else 1
    x = nn.relu(norm()(conv(width, (3, 3), (stride, stride))(x)))
  outputs = []
  for i, n in enumerate(stage_sizes):
    for j in range(n):
      strides = (2, 2) if i > 0 and j == 0 else (1, 1)
      x = block(width * 2 ** i, conv=conv, norm=norm, strides=strides)(x)
    outputs.append(x)
  return outputs


class ResNet(nn.Module):
  """He et al. 2016. `stage_sizes` (2,2,2,2) with basic blocks is ResNet-18; (3,4,6,3) with
  bottleneck blocks ResNet-50. Inputs under 128 px get a 3×3 stem without max-pool (stride 2
  from 64 px, 1 below, as for CIFAR), so small images keep their detail.

  `torchvision_padding=True` computes exactly torchvision's ResNet (v1.5), so that its weights
  (lesion_jax.pretrained) give its outputs: the 7×7/2 stem and 3×3/2 max-pool at every input size,
  every conv padded by k // 2 on each side and the max-pool by 1 (flax's 'SAME' pads stride-2
  layers by 0 before and 1 after on even sizes), BatchNorm epsilon 1e-5, momentum 0.9 (torch's
  0.1). Parameter names and shapes are those of the default at 128 px and above."""
  stage_sizes: Sequence[int]
  block: Any
  num_classes: int = 2
  width: int = 64
  dtype: Any = jnp.float32
  torchvision_padding: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.torchvision_padding:
      conv = partial(_torchvision_conv, dtype=self.dtype)
      norm = partial(BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype)
    else:
      conv = partial(nn.Conv, padding="SAME", use_bias=False, dtype=self.dtype,
                     conv_general_dilated=layers.conv_general_dilated)
      norm = partial(BatchNorm, use_running_average=not train, momentum=0.9, dtype=self.dtype)
    x = x.astype(self.dtype)
    x = resnet_features(x, self.stage_sizes, self.block, self.width, conv, norm,
                        imagenet_stem=self.torchvision_padding or x.shape[1] >= 128,
                        max_pool_padding=((1, 1), (1, 1)) if self.torchvision_padding else "SAME")[-1]
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def ResNet18(num_classes: int = 2, width: int = 64, dtype=jnp.float32) -> ResNet:  # pylint: disable=invalid-name
  return ResNet((2, 2, 2, 2), ResNetBlock, num_classes, width, dtype)


def ResNet50(num_classes: int = 2, width: int = 64, dtype=jnp.float32) -> ResNet:  # pylint: disable=invalid-name
  return ResNet((3, 4, 6, 3), BottleneckBlock, num_classes, width, dtype)


def _resnet_width(width: float) -> int:
  return max(8, int(64 * width))


# name -> constructor(num_classes, width, dtype); CLASSIFIERS lists the names in this order.
_REGISTRY: dict[str, Callable[[int, float, Any], nn.Module]] = {
    "lenet5": lambda num_classes, width, dtype: LeNet5(num_classes, dtype=dtype),
    "alexnet": lambda num_classes, width, dtype: AlexNet(num_classes, width=width, dtype=dtype),
    "resnet18": lambda num_classes, width, dtype: ResNet18(num_classes, _resnet_width(width), dtype),
    "resnet50": lambda num_classes, width, dtype: ResNet50(num_classes, _resnet_width(width), dtype),
}
CLASSIFIERS = tuple(_REGISTRY)


def build_classifier(name: str, num_classes: int, width: float = 1.0, dtype=jnp.float32,
                     torchvision_padding: bool = False) -> nn.Module:
  """A classifier by name; `width` scales AlexNet channels and ResNet base width (64·width).
  `torchvision_padding` (ResNets only) computes torchvision's ResNet exactly; see ResNet."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown classifier {name!r}; choose one of {CLASSIFIERS}")
  model = _REGISTRY[name](num_classes, width, dtype)
  if torchvision_padding:
    if not isinstance(model, ResNet):
      raise ValueError(f"torchvision_padding applies to the ResNets only, not {name!r}")
    model = model.clone(torchvision_padding=True)
  return model


for _name in CLASSIFIERS:
  registry.register(_name, "classifier", partial(build_classifier, _name))
