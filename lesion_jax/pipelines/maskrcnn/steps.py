"""Mask R-CNN's step functions: the train step (the four Mask R-CNN losses of the padded
instances) and the predict step (the detections), pure functions the loop jits once."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lesion_jax.pipelines.maskrcnn import losses
from lesion_jax.train import precision
from lesion_jax.train.state import TrainState
from lesion_jax.train.steps import Batch, Metrics, TrainStep, apply_model


def make_train_step(smooth_l1_beta: float = 0.0) -> TrainStep:
  """A train step for models.maskrcnn.MaskRCNN on batch['image'] and the padded instances
  batch['gt_boxes'] (N, K, 4), ['gt_classes'] (N, K), ['gt_masks'] (N, H, W, K), ['gt_valid'] (N, K)
  (ops.lesion_instances). Padding examples (weight 0) count as images without lesions
  (their instances are all invalid). Metrics: every loss term, "loss", and the mean numbers of
  foreground RoIs and of proposals per image."""

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    valid = batch["gt_valid"].astype(bool)
    if "weight" in batch:
      valid = valid & (batch["weight"][:, None] > 0)
    targets = {"boxes": batch["gt_boxes"], "classes": batch["gt_classes"], "masks": batch["gt_masks"],
               "valid": valid}

    def loss_fn(params):
      variables = {"params": params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
      mutable = ["batch_stats"] if state.batch_stats else False
      result = state.apply_fn(variables, batch["image"], targets, train=True, rngs={"sampling": rng},
                              mutable=mutable)
      outputs, updates = result if mutable else (result, {"batch_stats": state.batch_stats})
      outputs = precision.float32_outputs(outputs)  # as apply_model's: the losses in float32
      terms = losses.loss_terms(outputs, smooth_l1_beta)
      return terms["loss"], (terms, outputs, updates["batch_stats"])

    (_, (terms, outputs, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {**terms, "fg_rois": outputs["num_fg_rois"].mean().astype(jnp.float32),
               "proposals": outputs["num_proposals"].mean().astype(jnp.float32)}
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

  return train_step


def predict_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
  """Detections of batch['image']: boxes (N, D, 4) in input pixels, scores, classes, valid and
  28x28 mask probabilities (N, D, 28, 28), best first (models.maskrcnn.MaskRCNN)."""
  outputs, _ = apply_model(state, state.params, batch["image"], train=False)
  return outputs
