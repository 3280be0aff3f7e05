"""Pure step functions: `train_step(state, batch, rng) -> (state, metrics)` and prediction steps
`predict(state, batch) -> outputs`.

They are plain functions of arrays; `lesion_jax.train.loop` jits them once (with donated state and
mesh shardings). Batches are pytrees (nested dicts) of arrays; the segmentation and
classification steps here read 'image' (N, H, W, 3) float32 (bfloat16 under the bfloat16
precision policy, train/precision.py) and 'mask' (N, H, W, 1) or 'label'
(N,), plus an optional 'weight' (N,) that is 0 for padding. The steps of a model only one
pipeline trains (the inpainter, the GAN, Mask R-CNN) live in its package
(lesion_jax/pipelines/<name>/steps.py), built on `apply_model` and the types here.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lesion_jax.train import losses, precision
from lesion_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def apply_model(state: TrainState, params: Any, *inputs: Any, train: bool,
                rng: jax.Array | None = None) -> tuple[Any, Any]:
  """Runs the model on its positional `inputs` (any number, each any pytree); returns (outputs,
  new batch_stats) — batch_stats unchanged unless training. The outputs are float32 whatever the
  model computes in (precision.float32_outputs): losses and metrics never see bfloat16 logits."""
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  rngs = {"dropout": rng} if rng is not None else None
  if train and state.batch_stats:
    out, updates = state.apply_fn(variables, *inputs, train=True, rngs=rngs, mutable=["batch_stats"])
    return precision.float32_outputs(out), updates["batch_stats"]
  return precision.float32_outputs(state.apply_fn(variables, *inputs, train=train, rngs=rngs)), state.batch_stats


def make_supervised_train_step(target_key: str | Callable[[Batch], jax.Array], loss_per_example: Callable,
                               batch_metrics: Callable) -> TrainStep:
  """A train step for a single-input model: the mean of `loss_per_example(logits, target)`
  (weighted by batch['weight'] where present) is minimised; `batch_metrics(logits, target,
  weights)` adds metrics beside "loss". The target is batch[target_key], or target_key(batch)
  when it is a function (a target built from several features)."""

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    weights = batch.get("weight")
    target = target_key(batch) if callable(target_key) else batch[target_key]

    def loss_fn(params):
      logits, batch_stats = apply_model(state, params, batch["image"], train=True, rng=rng)
      return losses.weighted_mean(loss_per_example(logits, target), weights), (logits, batch_stats)

    (value, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": value, **batch_metrics(logits, target, weights)}
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

  return train_step


def make_segmentation_train_step(loss: str = "bce") -> TrainStep:
  """A train step for per-pixel binary segmentation with the given loss ('bce', 'dice', 'bce_dice')."""

  def jaccard(logits, mask, weights):
    pred, target = logits > 0, mask > 0.5
    inter = jnp.sum(pred & target, axis=(1, 2, 3))
    union = jnp.sum(pred | target, axis=(1, 2, 3))
    return {"jaccard": losses.weighted_mean(jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0), weights)}

  return make_supervised_train_step(
      "mask", lambda logits, mask: losses.segmentation_loss_per_example(logits, mask, loss), jaccard)


def make_classification_train_step(label_smoothing: float = 0.0,
                                   class_weights: tuple[float, ...] | None = None) -> TrainStep:
  """A train step for image classification with softmax cross-entropy (integer labels), each
  example's loss scaled by its class's weight where `class_weights` are given."""

  def accuracy(logits, labels, weights):
    return {"accuracy": losses.weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)}

  def loss(logits, labels):
    per_example = losses.classification_loss_per_example(logits, labels, label_smoothing)
    return per_example if class_weights is None else per_example * jnp.asarray(class_weights)[labels]

  return make_supervised_train_step("label", loss, accuracy)


def _lesion_probability(state: TrainState, images: jax.Array) -> jax.Array:
  logits, _ = apply_model(state, state.params, images, train=False)
  return jax.nn.sigmoid(logits[..., 0])


def segmentation_predict_step(state: TrainState, batch: Batch) -> jax.Array:
  """Lesion probability per pixel of batch['image'], (N, H, W) float32."""
  return _lesion_probability(state, batch["image"])


def _flip_averaged_probability(state: TrainState, images: jax.Array) -> jax.Array:
  flips = ((), (1,), (2,), (1, 2))  # () flips nothing: the image itself
  return sum(jnp.flip(_lesion_probability(state, jnp.flip(images, axes)), axes)
             for axes in flips) / len(flips)


def segmentation_predict_step_flip_tta(state: TrainState, batch: Batch) -> jax.Array:
  """`segmentation_predict_step` averaged over the 4 horizontal/vertical flips of each image
  (test-time augmentation; each flip is undone before averaging, so maps stay aligned)."""
  return _flip_averaged_probability(state, batch["image"])


def make_segmentation_tta_predict_step(scales: tuple[int, ...] = (), flips: bool = True) -> Callable:
  """A predict step averaging the lesion probability over test-time augmentations: the four
  flips (with `flips`) at each side in `scales` (the batch's image resized in-graph, bilinear,
  its map resized back; () = the input size only). A fully convolutional net sees the lesion at
  other scales; flips and resizes commute, so the average stays flip-equivariant."""
  scales = tuple(int(s) for s in scales)

  def predict(state: TrainState, batch: Batch) -> jax.Array:
    images = batch["image"]
    n, h, w, c = images.shape
    one = _flip_averaged_probability if flips else _lesion_probability
    total = 0.0
    for side in scales or (h,):
      if side == h == w:
        total += one(state, images)
      else:
        scaled = jax.image.resize(images, (n, side, side, c), "linear")
        total += jax.image.resize(one(state, scaled), (n, h, w), "linear")
    return total / len(scales or (h,))

  return predict


def classification_predict_step(state: TrainState, batch: Batch) -> jax.Array:
  """Class probabilities of batch['image'], (N, C) float32."""
  logits, _ = apply_model(state, state.params, batch["image"], train=False)
  return jax.nn.softmax(logits, axis=-1)


def classification_predict_step_tta(state: TrainState, batch: Batch) -> jax.Array:
  """`classification_predict_step` averaged over the 8 flips and quarter turns of each image (test-time
  augmentation: a dermoscopy photo has no up or left, and training rotates and flips it)."""
  images = batch["image"]
  views = [images, jnp.flip(images, 2)]
  views += [jnp.rot90(v, k, axes=(1, 2)) for v in views[:2] for k in (1, 2, 3)]
  return sum(classification_predict_step(state, {"image": v}) for v in views) / len(views)
