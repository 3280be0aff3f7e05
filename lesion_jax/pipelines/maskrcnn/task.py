"""Mask R-CNN lesion segmentation (pipeline 4's segmenter, the mask-then-AlexNet paper).

A lesion-mask task whose network is models.maskrcnn.MaskRCNN (`models.get("mask_rcnn")`): it
trains on instances derived from the lesion masks (ops.lesion_instances) and predicts
detections. Its mask source (`InstancePaste`) is the top-scoring instance's mask pasted
at the image's native resolution (one lesion per dermoscopy image, so the best instance is the
lesion; `paste="union"` takes the pixel-wise maximum over every instance scoring at least
`score_threshold` instead). An image whose best instance scores below `score_threshold` gets an
empty mask: "no lesion found", counted in the scores. The rest (data, binarisation, ISIC scoring
at native resolution, overlays, predicting on photos: `predict_images`) is the segmentation
task's `LesionMasks` component, composed here, so `train_classifier --segmenter_workdir=<this
run>` black-outs and crops with Mask R-CNN masks.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax import models
from lesion_jax.config import field
from lesion_jax.data import pipeline
from lesion_jax.eval import postprocess
from lesion_jax.models.maskrcnn import RESNET_STAGES
from lesion_jax.pipelines.maskrcnn import metrics, ops, steps
from lesion_jax.tasks import base, lesion_masks, segmentation
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state

PASTE_MODES = ("top", "union")
MODEL = "mask_rcnn"  # its name in the model registry
# (train, test) pairs of MaskRCNN's arguments, two config fields each (<name>_train, <name>_test).
TRAIN_TEST_PAIRS = ("rpn_pre_nms_topk", "rpn_post_nms_topk")


@dataclasses.dataclass(frozen=True)
class MaskRCNNModelConfig:
  """Defaults are sized for this project's CPU at 128 px; the paper's (Detectron2's) values are
  given in each help text."""
  depth: int = field(50, "Backbone ResNet depth: 18, 34, 50 or 101 (the paper: 101).")
  width: int = field(16, "Backbone base width (64 in the paper's ResNets; 16 for the CPU).")
  fpn_features: int = field(64, "FPN channels (paper: 256).")
  norm: str = field("group", "Normalisation: group (GroupNorm, for training from scratch with small "
                    "batches) or batch.")
  anchor_sizes: tuple[float, ...] = field((16.0, 32.0, 64.0, 128.0, 256.0),
                                          "One anchor size (px) per FPN level P2..P6 (paper, at 800 px: "
                                          "32..512; here scaled to the input size).")
  aspect_ratios: tuple[float, ...] = field((0.5, 1.0, 2.0), "Anchor aspect ratios (height / width).")
  rpn_pre_nms_topk_train: int = field(1000, "Proposals kept per FPN level before NMS, training (paper: 2000).")
  rpn_pre_nms_topk_test: int = field(500, "The same at inference (paper: 1000).")
  rpn_post_nms_topk_train: int = field(500, "Proposals kept per image after NMS, training (paper: 1000).")
  rpn_post_nms_topk_test: int = field(200, "The same at inference (paper: 1000).")
  rpn_nms_iou: float = field(0.7, "RPN NMS IoU threshold.")
  rpn_batch_per_image: int = field(256, "Anchors sampled per image for the RPN losses.")
  rois_per_image: int = field(128, "RoIs sampled per image for the box head (paper: 512).")
  roi_fg_fraction: float = field(0.25, "Largest foreground fraction of the sampled RoIs.")
  mask_rois_per_image: int = field(0, "Mask-head slots per image: the first (foreground) sampled RoIs. 0: the "
                                   "foreground maximum, rois_per_image x roi_fg_fraction; a smaller static cap "
                                   "skips padding slots when images hold few lesions (subsamples when more are real).")
  roi_fg_iou: float = field(0.5, "A RoI is foreground at this IoU with a lesion.")
  box_fc_features: int = field(256, "Width of the box head's two FC layers (paper: 1024).")
  mask_features: int = field(64, "Channels of the mask head's convs (paper: 256).")
  detections: int = field(10, "Detections kept per image (paper: 100).")
  detection_nms_iou: float = field(0.5, "Per-class NMS IoU threshold of the detections.")

  def build(self, dtype: Any = jnp.float32):
    """The network (`models.get("mask_rcnn")`, one lesion class) with every field of this config,
    the (train, test) pairs joined; `dtype`: its compute dtype (the run's precision policy)."""
    kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    for name in TRAIN_TEST_PAIRS:
      kwargs[name] = (kwargs.pop(f"{name}_train"), kwargs.pop(f"{name}_test"))
    kwargs["dtype"] = dtype
    return models.get(MODEL, num_classes=1, **kwargs)


@dataclasses.dataclass(frozen=True)
class MaskRCNNConfig:
  """Everything that defines a Mask R-CNN segmentation run."""
  input: pipeline.InputConfig = pipeline.InputConfig(image_size=128, batch_size=4)
  model: MaskRCNNModelConfig = MaskRCNNModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig(name="adamw", learning_rate=5e-4, warmup_steps=100,
                                               weight_decay=1e-4)
  smooth_l1_beta: float = field(0.0, "Smooth L1 beta of the box losses (0: L1, Detectron2's default).")
  max_instances: int = field(4, "Ground-truth instances per image, padded (static shapes).")
  instances: str = field("whole", "Instances from the lesion mask: whole (the mask is one lesion, the ISIC "
                         "convention) or components (each connected component).")
  run: config_lib.RunConfig = config_lib.RunConfig(num_steps=2000, eval_every=500)
  mask_key: str = field("mask", "Feature holding the lesion mask.")
  score_threshold: float = field(0.5, "An instance scoring below this is no lesion; an image without "
                                 "one is reported as 'no lesion found' (empty mask).")
  paste: str = field("top", "Lesion mask from the detections: top (the best instance) or union (every "
                     "instance at or above score_threshold).")
  threshold: float = field(0.5, "Probability threshold of the pasted mask.")
  postprocess: bool = field(True, "Fill holes and keep the largest component before scoring.")
  fallback: bool = field(False, "Replace catastrophic masks (empty, or more than fallback_max_fraction of "
                         "the image) by the pasted map cut at its own threshold; off: an empty mask is "
                         "'no lesion found'.")
  fallback_max_fraction: float = field(0.9, "A mask covering more of the image than this counts as the whole field of view.")
  mask_artifacts: str | None = field(None, "Artifact store of masks trained on instead of the ground truth.")
  drop_uncertain: bool = field(True, "With mask_artifacts: leave out masks flagged uncertain.")
  summary_images: int = field(4, "Validation overlays written to TensorBoard at each evaluation (0: none).")


@dataclasses.dataclass(frozen=True)
class InstancePaste:
  """Mask R-CNN's mask source (lesion_masks.MaskSource): one example's detections as the lesion
  probability map at (height, width), the best instance's mask pasted in its box (or, `paste` =
  "union", the pixel-wise maximum of every instance at or above `score_threshold`), zero where no
  instance reaches `score_threshold`. Boxes are in the model's `input_size` square input pixels
  (the model saw the image stretched)."""
  input_size: int
  score_threshold: float
  paste: str = "top"

  def __call__(self, output: Any, height: int, width: int) -> np.ndarray:
    scale = (height / self.input_size, width / self.input_size)
    prob = np.zeros((height, width), np.float32)
    scores, valid = np.asarray(output["scores"]), np.asarray(output["valid"], bool)
    confident = np.flatnonzero(valid & (scores >= self.score_threshold))
    for k in confident[:1] if self.paste == "top" else confident:
      prob = np.maximum(prob, postprocess.paste_mask(output["masks"][k], output["boxes"][k], height, width, scale))
    return prob


@base.register
class MaskRCNNTask(base.Task):
  name = "maskrcnn"
  config_cls = MaskRCNNConfig
  geometries = ("stretch",)  # its instance masks are pasted into boxes of the stretched image
  averages_outputs = False  # detections, not maps
  makes_masks = True
  predicts = frozenset({"mask"})
  evaluation_overrides = frozenset({"fallback"})

  @functools.cached_property
  def masks(self) -> lesion_masks.LesionMasks:
    """Data, binarisation, scoring, overlays and prediction on photos: the segmentation task's,
    with this task's mask source, its instance targets and its detection scores."""
    c = self.config
    return lesion_masks.LesionMasks(
        self, InstancePaste(c.input.image_size, c.score_threshold, c.paste),
        instances_op=ops.lesion_instances("mask", c.max_instances, c.instances),
        instances=lambda: _NativeDetections(c.input.image_size, c.model.detections, c.score_threshold))

  def model(self):
    return self.config.model.build(self.policy.compute_dtype)

  def check(self, mesh, extra_splits=()) -> None:
    c, m = self.config, self.config.model
    if m.depth not in RESNET_STAGES:
      raise config_lib.ConfigError(f"`model.depth`={m.depth}: choose one of {sorted(RESNET_STAGES)}")
    if m.norm not in ("group", "batch"):
      raise config_lib.ConfigError(f"`model.norm`={m.norm!r}: choose group or batch")
    if m.norm == "group" and (m.width % 8 or m.fpn_features % 8 or m.mask_features % 8):
      raise config_lib.ConfigError("`model.norm`=group needs `model.width`, `model.fpn_features` and `model.mask_features` divisible by 8")
    if len(m.anchor_sizes) != 5:
      raise config_lib.ConfigError(f"`model.anchor_sizes`={m.anchor_sizes}: one size per FPN level P2..P6 (5)")
    if c.input.image_size % 32:
      raise config_lib.ConfigError(f"`input.image_size`={c.input.image_size}: Mask R-CNN's FPN needs a multiple of 32")
    if c.instances not in ops.INSTANCE_MODES:
      raise config_lib.ConfigError(f"`instances`={c.instances!r}: choose one of {list(ops.INSTANCE_MODES)}")
    if c.paste not in PASTE_MODES:
      raise config_lib.ConfigError(f"`paste`={c.paste!r}: choose one of {list(PASTE_MODES)}")
    super().check(mesh, extra_splits)  # numbers (thresholds, fallback_max_fraction): config.RANGES

  def init_state(self, rng: jax.Array) -> TrainState:
    size = self.config.input.image_size
    tx = self.config.optimizer.build(self.config.run.num_steps)
    return create_train_state(self.model(), tx, rng, jnp.zeros((1, size, size, 3), jnp.float32),
                              compiled_init=True)

  def train_step(self) -> Callable:
    return steps.make_train_step(self.config.smooth_l1_beta)

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    return self.masks.train_batches(start_step)

  def eval_batches(self, split: str) -> Iterator[base.Batch]:
    return self.masks.eval_batches(split)

  def predict_fns(self) -> dict[str, Callable]:
    return {"predict": steps.predict_step}

  def best_metric(self) -> tuple[str, str]:
    return "val/jaccard", "max"

  def outputs_over(self, state, split, mesh, predict):
    return self.masks.outputs_over(state, split, mesh, predict)

  def example_accumulator(self, split):
    """ISIC segmentation and boundary scores, box AP and lesion-found counts over `split`."""
    return self.masks.rows(boundary=True)

  def validate(self, state, mesh, predict) -> dict[str, float]:
    return self.masks.validate(state, mesh, predict)

  def summarize(self, rows, ids, examples) -> base.Evaluation:
    return self.masks.summarize(rows, ids, examples)

  def hooks(self, workdir, mesh):
    return self.masks.hooks(mesh)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    self.masks.write_figures(evaluation, fig_dir, prefix)

  def prob_at(self, output, height: int, width: int) -> np.ndarray:
    """The mask source (`InstancePaste`): one example's lesion probability map at (height, width)."""
    return self.masks.source(output, height, width)

  def predict_images(self, state, images, predict: str = "predict") -> list[dict[str, Any]]:
    return self.masks.predict_images(state, images, predict)


class _NativeDetections(metrics.DetectionAccumulator):
  """The detections of one example output, boxes scaled from the model's input to the truth's
  native resolution."""

  def __init__(self, input_size: int, max_detections: int, score_threshold: float):
    super().__init__(max_detections, score_threshold=score_threshold)
    self.input_size = input_size

  def update(self, output: Any, truth: Any) -> None:  # pylint: disable=arguments-renamed
    h, w = np.asarray(truth).shape[:2]
    scale = np.array([h, w, h, w], np.float64) / self.input_size
    super().update(np.asarray(output["boxes"]) * scale, output["scores"], output["valid"], truth)
