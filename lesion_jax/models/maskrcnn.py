"""Mask R-CNN (He et al. 2017) with a ResNet + FPN backbone, every tensor of a static shape.

The mask-then-AlexNet paper segments lesions with a Mask R-CNN on ResNet-101 + FPN; `depth`
picks 18, 34, 50 or 101. Pieces, as in Detectron2's R50-FPN:

* ResNet (ImageNet stem, /4) giving C2..C5; FPN (1x1 laterals, nearest top-down, 3x3 outputs)
  giving P2..P5, P6 = P5 max-pooled (RPN only).
* RPN: a shared 3x3 conv, objectness and (dy, dx, dh, dw) per anchor; one anchor size per level
  and `aspect_ratios` at every cell. Proposals: the top `pre_nms_topk` per level, decoded,
  clipped, NMS'd per level (levels never suppress each other), the top `post_nms_topk` kept.
* Training only: anchors labelled and sampled (detection/targets.py), RoIs sampled from the
  proposals plus the ground-truth boxes, mask targets cropped from the instance masks.
* Box head: RoIAlign 7x7 from each RoI's FPN level, two fully connected layers, class logits
  (background + `num_classes`) and class-specific box deltas (weights 10, 10, 5, 5).
* Mask head: RoIAlign 14x14, four 3x3 convs, a 2x up-sampling (the 2x2 stride-2 transposed conv
  as its exact equivalent, a 1x1 conv + pixel shuffle: layers.Upsample2x), per-class 28x28 logits.
* Inference: class scores over the `test` proposals, class-specific boxes, per-class NMS, the top
  `detections` kept, their masks.

Static shapes: ground truth padded to K instances (`gt_valid`), fixed top-k everywhere, a fixed
number of sampled anchors and RoIs, the mask head on the first `mask_rois` sampled RoIs (the
foreground ones come first). So the train step compiles once for any number of real lesions.
Boxes are pixel [y1, x1, y2, x2] of the model's input (lesion_jax.detection.boxes).

The model only computes; the losses (pipelines/maskrcnn/losses.py loss_terms) read the dict it returns in
training. Normalisation: GroupNorm by default (trained from scratch with a few images per batch;
Detectron2's from-scratch recipe), `norm="batch"` for BatchNorm.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax.detection import boxes as boxes_lib
from lesion_jax.detection import nms as nms_lib
from lesion_jax.detection import roi_align as roi_align_lib
from lesion_jax.detection import targets as targets_lib
from lesion_jax.models import classifiers
from lesion_jax.models.classifiers import BottleneckBlock, ResNetBlock
from lesion_jax.models import registry
from lesion_jax.models.layers import Upsample2x, conv_general_dilated
from lesion_jax.models.batch_norm import BatchNorm

Dtype = Any
RESNET_STAGES = {18: ((2, 2, 2, 2), ResNetBlock), 34: ((3, 4, 6, 3), ResNetBlock),
                 50: ((3, 4, 6, 3), BottleneckBlock), 101: ((3, 4, 23, 3), BottleneckBlock)}
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # the box head's delta scaling (the RPN's is 1, 1, 1, 1)
MIN_LEVEL, MAX_LEVEL = 2, 6          # FPN levels: P2..P5 pooled from, P6 for the RPN only
GROUP_SIZE = 8                       # GroupNorm channels per group (32 groups of 256 channels)


def _norm(kind: str, train: bool, dtype: Dtype):
  if kind == "group":
    return partial(nn.GroupNorm, num_groups=None, group_size=GROUP_SIZE, dtype=dtype)
  if kind == "batch":
    return partial(BatchNorm, use_running_average=not train, momentum=0.9, dtype=dtype)
  raise ValueError(f"unknown norm {kind!r}; choose group or batch")


class ResNetFPN(nn.Module):
  """P2..P6 feature maps, `fpn_features` channels each, strides 4..64."""
  depth: int = 50
  width: int = 64
  fpn_features: int = 256
  norm: str = "group"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    if self.depth not in RESNET_STAGES:
      raise ValueError(f"ResNet depth {self.depth} not supported; choose one of {sorted(RESNET_STAGES)}")
    stages, block = RESNET_STAGES[self.depth]
    conv = partial(nn.Conv, padding="SAME", use_bias=False, dtype=self.dtype,
                   conv_general_dilated=conv_general_dilated)
    norm = _norm(self.norm, train, self.dtype)
    c = classifiers.resnet_features(x.astype(self.dtype), stages, block, self.width, conv, norm)
    # Top-down pathway; 1x1 convs as Dense (a matmul: faster than a 1x1 convolution on XLA:CPU).
    laterals = [nn.Dense(self.fpn_features, dtype=self.dtype, name=f"lateral{i + 2}")(f) for i, f in enumerate(c)]
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
      up = jnp.repeat(jnp.repeat(merged[0], 2, axis=1), 2, axis=2)[:, :lateral.shape[1], :lateral.shape[2]]
      merged.insert(0, lateral + up)
    p = [nn.Conv(self.fpn_features, (3, 3), padding="SAME", dtype=self.dtype, name=f"output{i + 2}")(m)
         for i, m in enumerate(merged)]
    p.append(nn.max_pool(p[-1], (1, 1), (2, 2)))  # P6: stride-2 subsampling of P5 (FPN paper)
    return p


class RPNHead(nn.Module):
  """Objectness logits (N, H*W*A) and deltas (N, H*W*A, 4) of one level; shared over levels."""
  num_anchors: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    conv = nn.Conv(features[0].shape[-1], (3, 3), padding="SAME", dtype=self.dtype, name="conv")
    init = nn.initializers.normal(0.01)
    objectness = nn.Dense(self.num_anchors, kernel_init=init, dtype=self.dtype, name="objectness")
    deltas = nn.Dense(4 * self.num_anchors, kernel_init=init, dtype=self.dtype, name="deltas")
    logits, regress = [], []
    for f in features:
      h = nn.relu(conv(f))
      n = f.shape[0]
      logits.append(objectness(h).reshape(n, -1).astype(jnp.float32))
      regress.append(deltas(h).reshape(n, -1, 4).astype(jnp.float32))
    return jnp.concatenate(logits, 1), jnp.concatenate(regress, 1)


class BoxHead(nn.Module):
  """Two FC layers on 7x7 RoI features; (R, classes + 1) logits, (R, classes, 4) deltas."""
  num_classes: int
  fc_features: int = 1024
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, rois: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = rois.reshape(rois.shape[0], -1)
    for i in range(2):
      x = nn.relu(nn.Dense(self.fc_features, dtype=self.dtype, name=f"fc{i}")(x))
    logits = nn.Dense(self.num_classes + 1, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                      name="classes")(x)
    deltas = nn.Dense(4 * self.num_classes, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype,
                      name="deltas")(x)
    return logits.astype(jnp.float32), deltas.reshape(x.shape[0], self.num_classes, 4).astype(jnp.float32)


class MaskHead(nn.Module):
  """Four 3x3 convs on 14x14 RoI features, 2x up-sampling, per-class 28x28 logits (R, 28, 28, classes)."""
  num_classes: int
  features: int = 256
  num_convs: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, rois: jax.Array) -> jax.Array:
    x = rois
    for i in range(self.num_convs):
      x = nn.relu(nn.Conv(self.features, (3, 3), padding="SAME", dtype=self.dtype, name=f"conv{i}")(x))
    x = nn.relu(Upsample2x(self.features, "depth_to_space", dtype=self.dtype, name="up")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x).astype(jnp.float32)


class MaskRCNN(nn.Module):
  """See the module docstring. `__call__(images, targets=None, train=False)`:

  images (N, S, S, 3) in [-1, 1]. targets (training): {"boxes" (N, K, 4), "classes" (N, K) int32
  (1..num_classes), "masks" (N, S, S, K) {0, 1}, "valid" (N, K) bool}. Needs the "sampling" rng in
  training. Returns in training a dict of head outputs with their targets (for
  pipelines/maskrcnn/losses.py loss_terms); otherwise the detections: "boxes" (N, D, 4), "scores" (N, D), "classes"
  (N, D) int32, "valid" (N, D) bool, "masks" (N, D, 28, 28) probabilities, best first.
  """
  num_classes: int = 1
  depth: int = 50
  width: int = 64
  fpn_features: int = 256
  norm: str = "group"
  anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0, 256.0, 512.0)  # P2..P6
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  rpn_pre_nms_topk: tuple[int, int] = (2000, 1000)   # per level, (train, test)
  rpn_post_nms_topk: tuple[int, int] = (1000, 1000)  # per image, (train, test)
  rpn_nms_iou: float = 0.7
  rpn_min_size: float = 0.0
  rpn_batch_per_image: int = 256
  rpn_fg_fraction: float = 0.5
  rpn_fg_iou: float = 0.7
  rpn_bg_iou: float = 0.3
  rois_per_image: int = 512
  roi_fg_fraction: float = 0.25
  mask_rois_per_image: int = 0  # 0: the foreground maximum (targets.mask_rois)
  roi_fg_iou: float = 0.5
  box_fc_features: int = 1024
  mask_features: int = 256
  mask_size: int = 28
  detections: int = 100
  detection_nms_iou: float = 0.5
  detection_min_score: float = 0.05
  dtype: Dtype = jnp.float32

  def anchors(self, height: int, width: int) -> jax.Array:
    levels = boxes_lib.generate_anchors((height, width), [2 ** l for l in range(MIN_LEVEL, MAX_LEVEL + 1)],
                                        self.anchor_sizes, self.aspect_ratios)
    return jnp.asarray(np.concatenate(levels, 0))

  def level_sizes(self, height: int, width: int) -> list[int]:
    a = len(self.aspect_ratios)
    return [math.ceil(height / 2 ** l) * math.ceil(width / 2 ** l) * a for l in range(MIN_LEVEL, MAX_LEVEL + 1)]

  def setup(self):
    if len(self.anchor_sizes) != MAX_LEVEL - MIN_LEVEL + 1:
      raise ValueError(f"anchor_sizes needs one size per FPN level P{MIN_LEVEL}..P{MAX_LEVEL}, "
                       f"got {len(self.anchor_sizes)}")
    self.backbone = ResNetFPN(self.depth, self.width, self.fpn_features, self.norm, self.dtype)
    self.rpn_head = RPNHead(len(self.aspect_ratios), self.dtype)
    self.box_head = BoxHead(self.num_classes, self.box_fc_features, self.dtype)
    self.mask_head = MaskHead(self.num_classes, self.mask_features, dtype=self.dtype)

  # --- proposals ------------------------------------------------------------------------------
  def _proposals(self, logits, deltas, anchors, size, train: bool):
    """Per image: (post_nms_topk, 4) proposals, their objectness and validity."""
    pre, post = self.rpn_pre_nms_topk[not train], self.rpn_post_nms_topk[not train]
    sizes = self.level_sizes(*size)
    starts = np.cumsum([0] + sizes[:-1])
    # Offsetting each level's boxes keeps levels apart in one NMS (per-level NMS, as Detectron2).
    offset = float(max(size) + 1)
    cand_boxes, cand_scores = [], []
    for level, (start, n) in enumerate(zip(starts, sizes)):
      k = min(pre, n)
      scores, idx = jax.lax.top_k(logits[start:start + n], k)
      decoded = boxes_lib.clip_boxes(boxes_lib.decode_boxes(deltas[start + idx], anchors[start + idx]), *size)
      hw = decoded[:, 2:] - decoded[:, :2]
      scores = jnp.where((hw > self.rpn_min_size).all(-1) & jnp.isfinite(scores), scores, -jnp.inf)
      cand_boxes.append(decoded + level * offset)
      cand_scores.append(scores)
    cand_boxes, cand_scores = jnp.concatenate(cand_boxes), jnp.concatenate(cand_scores)
    keep, valid = nms_lib.nms(cand_boxes, cand_scores, self.rpn_nms_iou, post)
    level_of = jnp.searchsorted(jnp.asarray(np.cumsum([min(pre, n) for n in sizes])), keep, side="right")
    proposals = cand_boxes[keep] - (level_of * offset)[:, None]
    return jax.lax.stop_gradient(proposals), cand_scores[keep], valid

  def _pool(self, features, boxes, size: int):
    """(N, R, size, size, C) RoIAlign of each box from its FPN level (P2..P5)."""
    levels = roi_align_lib.fpn_levels(boxes, MIN_LEVEL, MAX_LEVEL - 1)

    def one(image_features, b, lv):
      return roi_align_lib.multilevel_roi_align(image_features, b, lv, MIN_LEVEL, (size, size),
                                                sampling_ratio=2, aligned=True)

    return jax.vmap(one)([f for f in features[:MAX_LEVEL - MIN_LEVEL]], boxes, levels)

  def __call__(self, images: jax.Array, targets: dict[str, jax.Array] | None = None, train: bool = False):
    n, height, width = images.shape[:3]
    size = (height, width)
    features = self.backbone(images, train)
    rpn_logits, rpn_deltas = self.rpn_head(features)
    anchors = self.anchors(height, width)
    if rpn_logits.shape[1] != anchors.shape[0]:
      raise ValueError(f"{rpn_logits.shape[1]} RPN outputs for {anchors.shape[0]} anchors")
    if self.is_initializing():
      # Parameters only: the heads on one dummy RoI each (proposals, NMS and RoIAlign would only
      # slow initialisation down, which runs op by op).
      c = features[0].shape[-1]
      self.box_head(jnp.zeros((1, 7, 7, c), features[0].dtype))
      self.mask_head(jnp.zeros((1, self.mask_size // 2, self.mask_size // 2, c), features[0].dtype))
      return {}
    proposals, _, proposal_valid = jax.vmap(
        lambda l, d: self._proposals(l, d, anchors, size, train))(rpn_logits, rpn_deltas)
    if not train:
      return self._detect(features, proposals, proposal_valid, size)
    if targets is None:
      raise ValueError("training needs targets (boxes, classes, masks, valid)")
    return self._train_outputs(features, rpn_logits, rpn_deltas, anchors, proposals, proposal_valid, targets)

  def _train_outputs(self, features, rpn_logits, rpn_deltas, anchors, proposals, proposal_valid, targets):
    rng = self.make_rng("sampling")
    n = rpn_logits.shape[0]
    rng_anchor, rng_roi = jax.random.split(rng)
    gt_boxes, gt_valid = targets["boxes"], targets["valid"].astype(bool)

    def rpn_targets(gt_b, gt_v, key):
      labels, matched = targets_lib.assign_anchors(anchors, gt_b, gt_v, self.rpn_fg_iou, self.rpn_bg_iou)
      labels = targets_lib.sample_labels(labels, self.rpn_batch_per_image, self.rpn_fg_fraction, key)
      return labels, boxes_lib.encode_boxes(gt_b[matched], anchors)

    rpn_labels, rpn_box_targets = jax.vmap(rpn_targets)(gt_boxes, gt_valid, jax.random.split(rng_anchor, n))
    sample = jax.vmap(lambda p, pv, b, c, v, key: targets_lib.sample_rois(
        p, pv, b, c, v, self.rois_per_image, self.roi_fg_fraction, self.roi_fg_iou, key))(
            proposals, proposal_valid, gt_boxes, targets["classes"], gt_valid, jax.random.split(rng_roi, n))
    r = self.rois_per_image
    pooled = self._pool(features, sample.boxes, 7)
    class_logits, box_deltas = self.box_head(pooled.reshape(n * r, *pooled.shape[2:]))
    box_targets = jax.vmap(lambda b, m, rb: boxes_lib.encode_boxes(b[m], rb, BOX_WEIGHTS))(
        gt_boxes, sample.matched, sample.boxes)
    # The mask head sees the first slots only: foreground, by sample_rois' order.
    m = targets_lib.mask_rois(r, self.roi_fg_fraction, self.mask_rois_per_image)
    mask_boxes, mask_matched = sample.boxes[:, :m], sample.matched[:, :m]
    mask_classes = sample.classes[:, :m]
    mask_pooled = self._pool(features, mask_boxes, self.mask_size // 2)
    mask_logits = self.mask_head(mask_pooled.reshape(n * m, *mask_pooled.shape[2:]))
    mask_logits = mask_logits.reshape(n, m, self.mask_size, self.mask_size, self.num_classes)
    mask_logits = jnp.take_along_axis(mask_logits, jnp.maximum(mask_classes - 1, 0)[:, :, None, None, None],
                                      axis=-1)[..., 0]
    mask_targets = jax.vmap(lambda g, b, mt: targets_lib.mask_targets(g, b, mt, self.mask_size))(
        targets["masks"], mask_boxes, mask_matched)
    return {
        "rpn_logits": rpn_logits, "rpn_deltas": rpn_deltas, "rpn_labels": rpn_labels,
        "rpn_box_targets": rpn_box_targets,
        "roi_class_logits": class_logits.reshape(n, r, -1), "roi_box_deltas": box_deltas.reshape(n, r, -1, 4),
        "roi_classes": sample.classes, "roi_box_targets": box_targets, "roi_valid": sample.valid,
        "mask_logits": mask_logits, "mask_targets": mask_targets,
        "mask_weight": ((mask_classes > 0) & sample.valid[:, :m]).astype(jnp.float32),
        "num_fg_rois": (sample.classes > 0).sum(1), "num_proposals": proposal_valid.sum(1),
    }

  # --- inference ------------------------------------------------------------------------------
  def _detect(self, features, proposals, proposal_valid, size):
    n, p = proposals.shape[:2]
    pooled = self._pool(features, proposals, 7)
    class_logits, box_deltas = self.box_head(pooled.reshape(n * p, *pooled.shape[2:]))
    probs = jax.nn.softmax(class_logits, -1).reshape(n, p, -1)[..., 1:]             # (N, P, classes)
    boxes = boxes_lib.clip_boxes(boxes_lib.decode_boxes(
        box_deltas.reshape(n, p, self.num_classes, 4), proposals[:, :, None, :], BOX_WEIGHTS), *size)
    offset = float(max(size) + 1)

    def one(b, s, pv):
      # Every (proposal, class) pair is a candidate; offsets by class make the NMS per class.
      s = jnp.where(pv[:, None] & (s > self.detection_min_score), s, -jnp.inf).reshape(-1)
      cls = jnp.tile(jnp.arange(self.num_classes), p)
      b = b.reshape(-1, 4)
      keep, valid = nms_lib.nms(b + (cls * offset)[:, None], s, self.detection_nms_iou, self.detections)
      return b[keep], jnp.where(valid, s[keep], 0.0), cls[keep] + 1, valid

    det_boxes, det_scores, det_classes, det_valid = jax.vmap(one)(boxes, probs, proposal_valid)
    d = self.detections
    pooled = self._pool(features, jax.lax.stop_gradient(det_boxes), self.mask_size // 2)
    mask_logits = self.mask_head(pooled.reshape(n * d, *pooled.shape[2:]))
    mask_logits = mask_logits.reshape(n, d, self.mask_size, self.mask_size, self.num_classes)
    masks = jnp.take_along_axis(mask_logits, (det_classes - 1)[:, :, None, None, None], axis=-1)[..., 0]
    return {"boxes": det_boxes, "scores": det_scores, "classes": det_classes, "valid": det_valid,
            "masks": jax.nn.sigmoid(masks)}


registry.register("mask_rcnn", "detector", MaskRCNN)
