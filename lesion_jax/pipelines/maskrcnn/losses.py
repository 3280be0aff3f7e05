"""Mask R-CNN's losses, normalised as Detectron2 normalises them."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _smooth_l1(x: jax.Array, beta: float) -> jax.Array:
  """Huber-type smooth L1 per element; beta 0 is plain L1 (Detectron2's default for both heads)."""
  ax = jnp.abs(x)
  return ax if beta == 0 else jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def loss_terms(outputs: dict[str, jax.Array], smooth_l1_beta: float = 0.0) -> dict[str, jax.Array]:
  """Mask R-CNN's four terms (plus their sum, "loss") from MaskRCNN's training outputs, as
  Detectron2 normalises them:

  rpn_objectness: BCE over the sampled anchors; rpn_box: smooth L1 over the foreground anchors'
  deltas, divided by the number of sampled anchors; roi_class: softmax CE over the sampled RoIs;
  roi_box: smooth L1 of the ground-truth class's deltas over the foreground RoIs, divided by the
  number of sampled RoIs; mask: per-pixel BCE of the ground-truth class's 28x28 logits, averaged
  over the foreground RoIs the mask head saw. Images without lesions contribute background terms
  only; a batch without any foreground gets 0 box and mask terms (no NaN)."""
  o = outputs
  sampled = (o["rpn_labels"] >= 0).astype(jnp.float32)
  fg = (o["rpn_labels"] == 1).astype(jnp.float32)
  num_sampled = jnp.maximum(sampled.sum(), 1.0)
  rpn_objectness = (optax.sigmoid_binary_cross_entropy(o["rpn_logits"], fg) * sampled).sum() / num_sampled
  rpn_box = (_smooth_l1(o["rpn_deltas"] - o["rpn_box_targets"], smooth_l1_beta).sum(-1) * fg).sum() / num_sampled

  valid = o["roi_valid"].astype(jnp.float32)
  num_rois = jnp.maximum(valid.sum(), 1.0)
  classes = o["roi_classes"]
  roi_class = (optax.softmax_cross_entropy_with_integer_labels(o["roi_class_logits"], classes) * valid).sum() / num_rois
  fg_roi = (classes > 0).astype(jnp.float32) * valid
  deltas = jnp.take_along_axis(o["roi_box_deltas"], jnp.maximum(classes - 1, 0)[..., None, None], axis=2)[:, :, 0]
  roi_box = (_smooth_l1(deltas - o["roi_box_targets"], smooth_l1_beta).sum(-1) * fg_roi).sum() / num_rois

  w = o["mask_weight"]
  per_roi = optax.sigmoid_binary_cross_entropy(o["mask_logits"], o["mask_targets"]).mean(axis=(-2, -1))
  mask = (per_roi * w).sum() / jnp.maximum(w.sum(), 1.0)
  terms = {"rpn_objectness": rpn_objectness, "rpn_box": rpn_box, "roi_class": roi_class, "roi_box": roi_box,
           "mask": mask}
  terms["loss"] = sum(terms.values())
  return terms
