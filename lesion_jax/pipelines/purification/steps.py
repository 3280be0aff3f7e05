"""The inpainter's step functions: the train step (the partial-convolution U-Net on the valid
pixels, with the loss of losses.py and the hole pixels' L1 and PSNR as metrics) and the predict
step (the holes filled, the valid pixels kept exactly), pure functions the loop jits once."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lesion_jax.pipelines.purification import losses
from lesion_jax.train.losses import weighted_mean
from lesion_jax.train.state import TrainState
from lesion_jax.train.steps import Batch, Metrics, TrainStep, apply_model


def _hole_metrics(output: jax.Array, target: jax.Array, mask: jax.Array,
                  weights: jax.Array | None) -> Metrics:
  """Mean absolute error and PSNR (data range 2, i.e. [-1, 1] images) over the hole pixels, averaged
  over the examples that have a hole."""
  hole = 1 - jnp.broadcast_to(mask, output.shape)
  count = hole.sum(axis=(1, 2, 3))
  l1 = jnp.sum(hole * jnp.abs(output - target), axis=(1, 2, 3)) / jnp.maximum(count, 1)
  mse = jnp.sum(hole * jnp.square(output - target), axis=(1, 2, 3)) / jnp.maximum(count, 1)
  psnr = 10 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))
  has_hole = (count > 0).astype(jnp.float32)
  weights = has_hole if weights is None else weights * has_hole
  return {"hole_l1": weighted_mean(l1, weights), "hole_psnr": weighted_mean(psnr, weights)}


def make_train_step(weights: losses.InpaintingLossWeights = losses.InpaintingLossWeights(),
                    feature_fn: Callable[[jax.Array], Any] | None = None) -> TrainStep:
  """A train step for an inpainting model `apply_fn(variables, image, mask, train=...)` (PConvUNet)
  with `losses.loss_per_example(..., feature_fn, weights)`.

  Reads batch['target'] (N, H, W, 3), the clean image in [-1, 1], batch['mask'] (N, H, W, 1) or
  (N, H, W, 3), 1 = valid, 0 = hole, and an optional batch['weight'] (N,). The model's input is
  target * mask, formed here, so it never sees the hole contents (a partial conv would ignore them
  anyway; zeroing them also keeps them out of any non-partial layer). Metrics: "loss" (= "total"),
  every loss term, and the hole pixels' "hole_l1" and "hole_psnr".
  """

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    target, mask, example_weights = batch["target"], batch["mask"], batch.get("weight")
    inputs = target * mask

    def loss_fn(params):
      output, batch_stats = apply_model(state, params, inputs, mask, train=True, rng=rng)
      terms = losses.loss_per_example(output, target, mask, feature_fn, weights)
      return weighted_mean(terms["total"], example_weights), (output, terms, batch_stats)

    (value, (output, terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": value, **{k: weighted_mean(v, example_weights) for k, v in terms.items()},
               **_hole_metrics(output, target, mask, example_weights)}
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

  return train_step


def predict_step(state: TrainState, batch: Batch) -> jax.Array:
  """batch['image'] with its holes (batch['mask'] 0; 1 = valid) filled by the model, (N, H, W, 3)
  float32: the input itself where the mask is 1 (exactly), the model's output clipped to [-1, 1]
  where it is 0. The values in batch['image']'s holes do not affect the result."""
  image, mask = batch["image"].astype(jnp.float32), batch["mask"]
  output, _ = apply_model(state, state.params, image * mask, mask, train=False)
  return jnp.where(mask > 0.5, image, jnp.clip(output, -1.0, 1.0))
