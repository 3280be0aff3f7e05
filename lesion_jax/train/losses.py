"""Losses, each returning one value per example so padding/weights are handled in one place."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

SEGMENTATION_LOSSES = ("bce", "dice", "bce_dice")


def segmentation_loss_per_example(logits: jax.Array, masks: jax.Array, kind: str = "bce") -> jax.Array:
  """Per-image loss of (N, H, W, 1) logits against {0, 1} masks: BCE (the papers), soft Dice, or both."""
  if kind not in SEGMENTATION_LOSSES:
    raise ValueError(f"unknown segmentation loss {kind!r}; choose one of {SEGMENTATION_LOSSES}")
  per_example = jnp.zeros(logits.shape[0], jnp.float32)
  if kind in ("bce", "bce_dice"):
    per_example += optax.sigmoid_binary_cross_entropy(logits, masks).mean(axis=(1, 2, 3))
  if kind in ("dice", "bce_dice"):
    per_example += optax.losses.binary_dice_loss(logits, masks).reshape(logits.shape[0])
  return per_example


def classification_loss_per_example(logits: jax.Array, labels: jax.Array,
                                    label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy of (N, C) logits against integer labels (N,)."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
  """Mean over examples with 0/1 (or real) weights; padding examples get weight 0."""
  if weights is None:
    return values.mean()
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1e-8)
