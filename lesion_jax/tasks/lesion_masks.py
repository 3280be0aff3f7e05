"""The lesion-mask component several tasks compose (the U-Net segmenter, Mask R-CNN): a task's
data, its mask source (a probability map at each image's native resolution), binarisation
(threshold, hole filling, fallback: postprocess.MaskPostprocess), ISIC scoring rows
(`SegmentationRows`), overlays, figures, and segmenting photos (`predict_images`)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator, Sequence

import cv2
import jax
import numpy as np

from lesion_jax.artifacts import superpixels as superpixels_lib
from lesion_jax.data import ops, pipeline
from lesion_jax.eval import figures, inference, metrics, postprocess, superpixel_refine
from lesion_jax.eval.superpixel_refine import RefineConfig
from lesion_jax.tasks import base, runner

REFINEMENT_FIGURE_ROWS = 8
# One example's predict output -> its lesion probability map at (height, width), the image's own size.
MaskSource = Callable[[Any, int, int], np.ndarray]


def joins_features(joins) -> set[str]:
  return {j.feature for j in joins}


def map_at(output: Any, height: int, width: int, geometry: str = "stretch") -> np.ndarray:
  """A segmenter's mask source: its model-size map at an image's (height, width), the image's
  window cut out first where the input was letterboxed."""
  output = np.asarray(output)
  if geometry == "letterbox":  # the image's window of the padded square
    top, left, nh, nw = ops.letterbox_window(height, width, output.shape[0])
    output = output[top:top + nh, left:left + nw]
  return output if output.shape == (height, width) else postprocess.resize_prob(output, height, width)


class LesionMasks:
  """The parts every lesion-mask task is made of (SegmentationTask; Mask R-CNN's task composes
  them too): a task delegates its data, scoring, overlays, figures and prediction on photos here,
  and gives only its mask `source` (MaskSource), the op adding its training targets
  (`instances_op`, e.g. Mask R-CNN's instances), what scores its outputs beyond the mask
  (`instances`: a factory of objects with update(output, truth), rows(), summarize(rows)), and
  whether images without a stored mask keep their own (`keep_unmatched`).

  It reads the fields both task configs name alike: input, train_split, val_split, eval_every,
  mask_key, mask_artifacts, drop_uncertain, summary_images, and the binarisation's threshold,
  postprocess, fallback and fallback_max_fraction (`postprocess.MaskPostprocess.of`)."""

  def __init__(self, task: base.Task, source: MaskSource, instances_op: ops.Op | None = None,
               instances: Callable[[], Any] | None = None, keep_unmatched: bool = False):
    self.task = task
    self.config = task.config
    self.source = source
    self.instances_op = instances_op
    self.instances = instances or (lambda: None)
    self.keep_unmatched = keep_unmatched
    self.postprocess = postprocess.MaskPostprocess.of(task.config)

  # --- data -----------------------------------------------------------------------------------
  def joins(self) -> tuple[pipeline.ArtifactJoin, ...]:
    """The stored masks trained on instead of the ground truth (mask_artifacts), if any."""
    c = self.config
    if not c.mask_artifacts:
      return ()
    return (pipeline.ArtifactJoin(c.mask_key, c.mask_artifacts, drop_flagged=c.drop_uncertain,
                                  keep_unmatched=self.keep_unmatched),)

  def ops(self, train: bool, joins) -> list:
    c, builder = self.config, self.task.builder
    features = builder.info.features
    if c.mask_key not in features and c.mask_key not in joins_features(joins):
      raise ValueError(f"{builder.info.full_name} has no {c.mask_key!r} feature (features: "
                       f"{sorted(features)}); pick a config with masks, or train on pseudo-masks (`labels`=kmeans)")
    encoded = c.mask_key in joins_features(joins) or (
        c.mask_key in features and isinstance(features[c.mask_key], pipeline.tfds.features.Image))
    return ops.segmentation_ops(c.input.image_size, c.input.augment if train else None, mask_key=c.mask_key,
                                mask_is_encoded=encoded, keep_encoded_mask=encoded and not train,
                                instances=self.instances_op if train else None, **pipeline.image_prep(c.input))

  def input(self, joins) -> pipeline.InputConfig:
    return dataclasses.replace(self.config.input, joins=joins)

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    joins = self.joins()
    return pipeline.train_iterator(self.input(joins), self.ops(True, joins), self.config.run.train_split,
                                   start_step, self.task.builder)

  def eval_batches(self, split: str, joins=None) -> Iterator[base.Batch]:
    joins = self.joins() if joins is None else joins
    return pipeline.eval_iterator(self.input(joins), self.ops(False, joins), split, self.task.builder)

  # --- scoring ---------------------------------------------------------------------------------
  def outputs_over(self, state, split, mesh, predict):
    """Evaluation scores against the dataset's ground-truth masks (not the joined pseudo-masks)."""
    return inference.predict_over(predict, state, self.eval_batches(split, joins=()), mesh, self.task.host_inputs)

  def rows(self, boundary: bool = False, superpixels=None, refine: RefineConfig | None = None) -> "SegmentationRows":
    return SegmentationRows(self, boundary, superpixels, refine)

  def validate(self, state, mesh, predict) -> dict[str, float]:
    """Validation scores against the masks trained on (pseudo-masks, with mask_artifacts): a
    self-learning run never selects its checkpoint on manual labels."""
    batches = self.eval_batches(self.config.run.val_split)
    return self.task.validation_metrics(self.evaluate_batches(state, batches, mesh, predict))

  def evaluate_batches(self, state, batches, mesh, predict, keep_examples=0, boundary=False,
                       superpixels=None) -> base.Evaluation:
    """Scores each image at its own resolution (the encoded truth's, else the model's) as the
    ISIC challenges do; with `superpixels` (a store) the map is refined on them first."""
    rows, ids, examples = base.gather_examples(inference.predict_over(predict, state, batches, mesh,
                                                                      self.task.host_inputs),
                                               self.rows(boundary, superpixels), keep_examples)
    return self.summarize(rows, ids, examples)

  def summarize(self, rows, ids, examples) -> base.Evaluation:
    per_image = metrics.scores_from_counts(rows)
    scores = metrics.summarize_segmentation(per_image)
    scores["pixel_confusion"] = metrics.pixel_confusion(rows)  # the mask-then-AlexNet paper's Table I
    instances = self.instances()
    if instances is not None:
      scores.update(instances.summarize(rows))
    if "refined" in rows:
      per_image["refined"] = rows["refined"]
      scores["refined_images"] = int(rows["refined"].sum())  # the others kept the network's map
    if "fallback" in rows:
      per_image["fallback"] = rows["fallback"]
      scores["fallback_images"] = int(rows["fallback"].sum())
    return base.Evaluation(scores, per_image, ids, examples)

  # --- figures ---------------------------------------------------------------------------------
  def model_view(self, native: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A native-resolution mask (bool) or map (float) placed as the model input shows its image
    (stretched, or letterboxed), for figures."""
    resize = postprocess.resize_mask if native.dtype == bool else postprocess.resize_prob
    if self.config.input.geometry != "letterbox":
      return resize(native, *size)
    top, left, nh, nw = ops.letterbox_window(*native.shape, size[0])
    out = np.zeros(size, native.dtype)
    out[top:top + nh, left:left + nw] = resize(native, nh, nw)
    return out

  def keep(self, kept, image, prob, pred, truth, refinement, sp) -> None:
    size = image.shape[:2]
    add = lambda k, v: kept.add(**{k: v})
    add("image", figures.to_uint8_rgb((image + 1) / 2))
    add("mask", self.model_view(np.asarray(truth, bool), size))
    add("pred", self.model_view(np.asarray(pred, bool), size))
    if refinement is not None:
      add("fcn_prob", self.model_view(np.asarray(prob, np.float32), size))
      add("refined_prob", self.model_view(np.asarray(refinement.fused, np.float32), size))
      add("superpixel_borders", superpixels_lib.label_borders(
          cv2.resize(sp.labels, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)))

  def hooks(self, mesh) -> tuple[base.loop.PeriodicHook, ...]:
    """Validation overlays in TensorBoard at each evaluation."""
    c, task = self.config, self.task
    if not c.summary_images or not c.run.val_split:
      return ()

    jitted = []  # compiled once, at the first call (the state's shardings are needed)

    def write_overlays(step, state, writer):
      # Computed on every process (the prediction is one sharded computation), written by one.
      if not jitted:
        jitted.append(task.jit_predict(state, mesh))
      predict = jitted[0]
      batch = next(iter(self.eval_batches(c.run.val_split)))
      probs = inference.predict_over(predict, state, [batch], mesh, task.host_inputs)
      _, p = next(probs)
      n = min(c.summary_images, int((batch["weight"] > 0).sum()))
      size = batch["image"].shape[1:3]
      images = [figures.overlay(figures.to_uint8_rgb((batch["image"][i] + 1) / 2),
                                self.binarize(self.source(jax.tree.map(lambda x, i=i: x[i], p), *size))[0],
                                batch["mask"][i, ..., 0] > 0.5) for i in range(n)]
      writer.images(step, "val/overlays", np.stack(images))

    return (base.loop.PeriodicHook(c.run.eval_every, write_overlays, "val_overlays"),)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    examples = evaluation.examples
    if len(examples.get("image", ())):
      ja = evaluation.per_example["jaccard"][: len(examples["image"])]
      figures.save_overlay_grid(os.path.join(fig_dir, f"{prefix}_overlays.png"), examples["image"],
                                examples["pred"], examples["mask"],
                                titles=[f"{i}  JA {j:.2f}" for i, j in zip(evaluation.ids, ja)])
    if "refined_prob" in examples:
      n = min(REFINEMENT_FIGURE_ROWS, len(examples["image"]))
      ja = evaluation.per_example["jaccard"][:n]
      figures.save_refinement_grid(os.path.join(fig_dir, f"{prefix}_superpixel_refinement.png"),
                                   *(examples[k][:n] for k in ("image", "fcn_prob", "superpixel_borders",
                                                               "refined_prob", "pred", "mask")),
                                   titles=[f"{i}  JA {j:.2f}" for i, j in zip(evaluation.ids, ja)])
    if len(evaluation.per_example["jaccard"]):
      figures.save_histogram(os.path.join(fig_dir, f"{prefix}_jaccard_hist.png"),
                             {prefix: evaluation.per_example["jaccard"]}, xlabel="per-image Jaccard")

  # --- a user's photos -------------------------------------------------------------------------
  def segment_images(self, state, images: list[np.ndarray], mesh=None, predict=None) -> list[np.ndarray]:
    """Lesion probability maps for uint8 RGB images of any size, each at its image's resolution
    (preprocessed exactly as in training, run in padded batches of the run's batch size)."""
    task = self.task
    probs = runner.predict_examples(task, state, [task.example_input(im) for im in images], mesh,
                                    predict or "predict")
    return [self.source(p, im.shape[0], im.shape[1]) for p, im in zip(probs, images)]

  def binarize(self, prob: np.ndarray) -> tuple[np.ndarray, bool]:
    """(mask, fallback used): the run's own binarisation of one map (threshold, then hole
    filling + largest component if set, then the catastrophic-failure fallback if set)."""
    return self.postprocess(prob)

  def masks_for(self, probs: list[np.ndarray]) -> list[np.ndarray]:
    """The run's own binarisation (`binarize`) of each map."""
    return [self.binarize(p)[0] for p in probs]

  def predict_images(self, state, images: Sequence[np.ndarray], predict: str = "predict") -> list[dict[str, Any]]:
    """{"mask": bool (H, W)} per uint8 RGB image, at the image's own size: the run's maps
    (`predict`: one of the task's predict functions, e.g. "tta") binarised as it scores them."""
    names = self.task.predict_fns()
    if predict not in names:
      raise base.PredictionUnsupported(f"a {self.task.name!r} run has no {predict!r} prediction "
                                       f"(it has: {', '.join(sorted(names))})")
    images = list(images)
    return [{"mask": m} for m in self.masks_for(self.segment_images(state, images, predict=predict))]


class SegmentationRows:
  """A lesion-mask evaluation's accumulator (base.Accumulator): each image's pixel counts (and
  boundary scores) at its own resolution, whether superpixel refinement (with `superpixels`, a
  store, and `refine`) or the fallback changed it, and the task's instance scores (Mask R-CNN's
  detections, a scorer that keeps state)."""

  def __init__(self, masks: LesionMasks, boundary: bool = False, superpixels=None,
               refine: RefineConfig | None = None):
    self.masks = masks
    self.superpixels = superpixels
    self.refine = refine or RefineConfig()
    self.acc = metrics.SegmentationAccumulator(boundary=boundary)
    self.instances = masks.instances()
    self.refined: list[bool] = []  # per image: superpixel refinement applied (else the map was kept)
    self.fell_back: list[bool] = []  # per image: the catastrophic-failure fallback replaced the mask

  def add(self, batch, outputs, real, kept) -> None:
    masks = self.masks
    for j, (i, image_id) in enumerate(zip(real, base.decode_ids(batch["id"][real]))):
      output = jax.tree.map(lambda x, i=i: x[i], outputs)
      if "mask_encoded" in batch:
        truth = postprocess.decode_mask(batch["mask_encoded"][i])
      else:
        truth = batch["mask"][i, ..., 0] > 0.5
      refinement = sp = None
      if self.superpixels is not None:
        sp = superpixels_lib.read_superpixels(self.superpixels, image_id)
        prob = masks.source(output, *sp.labels.shape)
        refinement = superpixel_refine.refine(prob, sp, self.refine)
        self.refined.append(refinement.refined)
        pred = refinement.mask
        if pred.shape != truth.shape:
          pred = postprocess.resize_mask(pred, *truth.shape)
      else:
        prob = masks.source(output, *truth.shape)
        pred, replaced = masks.binarize(prob)
        self.fell_back.append(replaced)
      self.acc.update(pred[None], truth[None])
      if self.instances is not None:
        self.instances.update(output, truth)
      if kept.wants(j):  # examples for figures, at the model's input size
        masks.keep(kept, batch["image"][i], prob, pred, truth, refinement, sp)

  def rows(self) -> dict[str, np.ndarray]:
    rows = self.acc.counts()
    if self.superpixels is not None:
      rows["refined"] = np.asarray(self.refined, np.int64).reshape(-1)
    elif self.masks.postprocess.fallback:
      rows["fallback"] = np.asarray(self.fell_back, np.int64).reshape(-1)
    if self.instances is not None:
      rows.update(self.instances.rows())
    return rows
