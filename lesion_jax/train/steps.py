"""Pure step functions: `train_step(state, batch, rng) -> (state, metrics)` and prediction steps.

They are plain functions of arrays; `lesion_jax.train.loop` jits them once (with donated state and
mesh shardings). Batches are dicts of arrays: 'image' (N, H, W, 3) float32, and 'mask' (N, H, W, 1)
or 'label' (N,), plus an optional 'weight' (N,) that is 0 for padding.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lesion_jax.train import losses
from lesion_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def apply_model(state: TrainState, params: Any, images: jax.Array, train: bool,
                rng: jax.Array | None = None) -> tuple[jax.Array, Any]:
  """Runs the model; returns (outputs, new batch_stats) — batch_stats unchanged unless training."""
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  rngs = {"dropout": rng} if rng is not None else None
  if train and state.batch_stats:
    out, updates = state.apply_fn(variables, images, train=True, rngs=rngs, mutable=["batch_stats"])
    return out, updates["batch_stats"]
  return state.apply_fn(variables, images, train=train, rngs=rngs), state.batch_stats


def _apply_gradients(state: TrainState, grads: Any, batch_stats: Any) -> TrainState:
  return state.apply_gradients(grads=grads, batch_stats=batch_stats)


def make_segmentation_train_step(loss: str = "bce") -> TrainStep:
  """A train step for per-pixel binary segmentation with the given loss ('bce', 'dice', 'bce_dice')."""

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    weights = batch.get("weight")

    def loss_fn(params):
      logits, batch_stats = apply_model(state, params, batch["image"], train=True, rng=rng)
      per_example = losses.segmentation_loss_per_example(logits, batch["mask"], loss)
      return losses.weighted_mean(per_example, weights), (logits, batch_stats)

    (value, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    pred = logits > 0
    target = batch["mask"] > 0.5
    inter = jnp.sum(pred & target, axis=(1, 2, 3))
    union = jnp.sum(pred | target, axis=(1, 2, 3))
    jaccard = jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)
    metrics = {"loss": value, "jaccard": losses.weighted_mean(jaccard, weights)}
    return _apply_gradients(state, grads, batch_stats), metrics

  return train_step


def make_classification_train_step(label_smoothing: float = 0.0) -> TrainStep:
  """A train step for image classification with softmax cross-entropy (integer labels)."""

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    weights = batch.get("weight")

    def loss_fn(params):
      logits, batch_stats = apply_model(state, params, batch["image"], train=True, rng=rng)
      per_example = losses.classification_loss_per_example(logits, batch["label"], label_smoothing)
      return losses.weighted_mean(per_example, weights), (logits, batch_stats)

    (value, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    metrics = {"loss": value, "accuracy": losses.weighted_mean(correct, weights)}
    return _apply_gradients(state, grads, batch_stats), metrics

  return train_step


def segmentation_predict_step(state: TrainState, images: jax.Array) -> jax.Array:
  """Lesion probability per pixel, (N, H, W) float32."""
  logits, _ = apply_model(state, state.params, images, train=False)
  return jax.nn.sigmoid(logits[..., 0])


def segmentation_predict_step_flip_tta(state: TrainState, images: jax.Array) -> jax.Array:
  """`segmentation_predict_step` averaged over the 4 horizontal/vertical flips of each image
  (test-time augmentation; each flip is undone before averaging, so maps stay aligned)."""
  flips = ((), (1,), (2,), (1, 2))  # () flips nothing: the image itself
  return sum(jnp.flip(segmentation_predict_step(state, jnp.flip(images, axes)), axes)
             for axes in flips) / len(flips)


def classification_predict_step(state: TrainState, images: jax.Array) -> jax.Array:
  """Class probabilities, (N, C) float32."""
  logits, _ = apply_model(state, state.params, images, train=False)
  return jax.nn.softmax(logits, axis=-1)
