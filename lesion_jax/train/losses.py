"""Losses shared by several tasks (segmentation, classification), each returning one value per
example so padding/weights are handled in one place (`weighted_mean`). A loss only one pipeline
uses lives in its package (lesion_jax/pipelines/<name>/losses.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

SEGMENTATION_LOSSES = ("bce", "dice", "bce_dice", "jaccard", "bce_jaccard", "lovasz", "bce_lovasz")


def soft_jaccard_loss(logits: jax.Array, masks: jax.Array, eps: float = 1.0) -> jax.Array:
  """Per-image 1 - soft Jaccard of sigmoid(logits) and the masks (the ISIC 2017 winners'
  Jaccard-type loss: it scores what the challenge scores). `eps` smooths empty masks."""
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  axes = tuple(range(1, logits.ndim))
  inter = jnp.sum(p * masks, axis=axes)
  union = jnp.sum(p, axis=axes) + jnp.sum(masks, axis=axes) - inter
  return 1.0 - (inter + eps) / (union + eps)


def lovasz_hinge_loss(logits: jax.Array, masks: jax.Array) -> jax.Array:
  """Per-image Lovasz hinge (Berman et al., CVPR 2018): the Lovasz extension of the Jaccard loss
  applied to the hinge errors 1 - logit * sign, a convex surrogate whose minimum is the best
  Jaccard index (what ISIC scores). The sort is not differentiated (the extension is piecewise
  linear in the errors)."""
  n = logits.shape[0]
  errors = (1.0 - logits.astype(jnp.float32) * (2.0 * masks - 1.0)).reshape(n, -1)
  order = jax.lax.stop_gradient(jnp.argsort(-errors, axis=1))
  errors_sorted = jnp.take_along_axis(errors, order, axis=1)
  gt_sorted = jnp.take_along_axis(masks.reshape(n, -1).astype(jnp.float32), order, axis=1)
  positives = gt_sorted.sum(axis=1, keepdims=True)
  intersection = positives - jnp.cumsum(gt_sorted, axis=1)
  union = positives + jnp.cumsum(1.0 - gt_sorted, axis=1)
  jaccard = 1.0 - intersection / union
  grad = jnp.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=1)
  return jnp.sum(jax.nn.relu(errors_sorted) * grad, axis=1)


def segmentation_loss_per_example(logits: jax.Array, masks: jax.Array, kind: str = "bce") -> jax.Array:
  """Per-image loss of (N, H, W, 1) logits against {0, 1} masks: BCE (the papers), soft Dice,
  soft Jaccard, the Lovasz hinge, or BCE plus one of the last three."""
  if kind not in SEGMENTATION_LOSSES:
    raise ValueError(f"unknown segmentation loss {kind!r}; choose one of {SEGMENTATION_LOSSES}")
  per_example = jnp.zeros(logits.shape[0], jnp.float32)
  if kind in ("bce", "bce_dice", "bce_jaccard", "bce_lovasz"):
    per_example += optax.sigmoid_binary_cross_entropy(logits, masks).mean(axis=(1, 2, 3))
  if kind in ("dice", "bce_dice"):
    per_example += optax.losses.binary_dice_loss(logits, masks).reshape(logits.shape[0])
  if kind in ("jaccard", "bce_jaccard"):
    per_example += soft_jaccard_loss(logits, masks)
  if kind in ("lovasz", "bce_lovasz"):
    per_example += lovasz_hinge_loss(logits, masks)
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
