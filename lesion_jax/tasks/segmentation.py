"""Segmentation task: a U-Net (or the dilated U-Net, or the multi-scale FCN) giving a per-pixel lesion probability,
scored per image at each image's own resolution as the ISIC challenges do.

`LesionMasks` is what every lesion-mask task is composed of (this one, and Mask R-CNN's in
lesion_jax/pipelines/maskrcnn): its data (images with their masks, or stored masks trained on),
a mask source (one example's predict output as a probability map at the image's own
resolution: here `map_at`, the model-size map cut back and resized; Mask R-CNN pastes its
instances), the binarisation (`postprocess.MaskPostprocess`), ISIC scoring (`SegmentationRows`),
overlays, figures and segmenting a user's photos (`segment_images`, `predict_images`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator, Literal, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax import models
from lesion_jax.config import field
from lesion_jax.data import ops, pipeline
from lesion_jax.artifacts import superpixels as superpixels_lib
from lesion_jax.artifacts.kmeans import KMeansConfig
from lesion_jax.artifacts.store import default_root
from lesion_jax.artifacts.superpixels import SuperpixelConfig
from lesion_jax.eval import figures, inference, metrics, postprocess, superpixel_refine
from lesion_jax.eval.superpixel_refine import RefineConfig
from lesion_jax.tasks import base, runner
from lesion_jax.train import losses, sharding, steps
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state

REFINEMENTS = ("none", "superpixel")
REFINEMENT_FIGURE_ROWS = 8
# Networks whose input side must be a multiple of 2^levels (the FCN pads itself).
FIXED_GRID = ("unet", "dilated_unet")
# One example's predict output -> its lesion probability map at (height, width), the image's own size.
MaskSource = Callable[[Any, int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class SegmenterModelConfig:
  name: str = field("unet", "Segmentation network: " + ", ".join(models.names("segmenter")) + ".")
  features: int = field(16, "Width of the first U-Net level (doubles per level).")
  levels: int = field(4, "Down/up-sampling levels.")
  norm: str = field("batch", "Normalisation in conv blocks: none, batch, group, layer (batch "
                    "converges in far fewer steps than none).")
  upsample: str = field("depth_to_space", "Decoder up-sampling: depth_to_space (the same function "
                        "class as the papers' 2x2 transposed conv, faster on CPU), transpose, resize_conv.")
  head_features: int = field(32, "FCN: channels of each projected scale and of the fused map.")
  dtype: str = field("float32", "Compute dtype (params stay float32): float32 or bfloat16.")
  channel_mean: tuple[float, float, float] | None = field(
      None, "U-Nets: per-channel mean of the training images in [0, 1]; set, the input is standardised "
      "with it (--input_norm=dataset measures it; the purification paper's normalisation).")
  channel_std: tuple[float, float, float] | None = field(None, "U-Nets: per-channel standard deviation, with channel_mean.")

  def build(self):
    """The network (`models.get`) with the fields it takes: every segmenter its widths, norm,
    up-sampling and dtype; the U-Nets their input statistics, the FCN its head width."""
    kwargs = dict(features=self.features, levels=self.levels, norm=self.norm, upsample=self.upsample,
                  dtype=jnp.dtype(self.dtype))
    if self.name == "fcn":
      kwargs["head_features"] = self.head_features
    else:
      kwargs.update(input_mean=self.channel_mean, input_std=self.channel_std)
    return models.get(self.name, **kwargs)


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
  """Everything that defines a segmentation run."""
  input: pipeline.InputConfig = pipeline.InputConfig()
  model: SegmenterModelConfig = SegmenterModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=2e-3, warmup_steps=100)
  loss: str = field("bce", "Segmentation loss: bce, dice, bce_dice, jaccard (soft Jaccard), bce_jaccard, lovasz "
                   "(Lovasz hinge), bce_lovasz.")
  run: config_lib.RunConfig = config_lib.RunConfig(num_steps=2000, eval_every=500)
  mask_key: str = field("mask", "Feature holding the lesion mask.")
  threshold: float = field(0.5, "Probability threshold for the lesion mask.")
  postprocess: bool = field(True, "Fill holes and keep the largest component before scoring.")
  fallback: bool = field(False, "Replace catastrophic masks (empty, or more than fallback_max_fraction of "
                         "the image) by the map cut at its own threshold (eval/postprocess.catastrophic_fallback).")
  fallback_max_fraction: float = field(0.9, "A mask covering more of the image than this counts as the whole field of view.")
  # Train (and pick the best checkpoint) on these stored masks instead of the ground truth, e.g.
  # K-means pseudo-masks (self-learning); test scores always use the ground truth.
  mask_artifacts: str | None = field(None, "Artifact store of masks trained on instead of the ground truth.")
  drop_uncertain: bool = field(True, "With mask_artifacts: leave out masks flagged uncertain.")
  keep_unmatched_masks: bool = field(False, "With mask_artifacts: an image with no stored mask keeps its own "
                                     "(manual) one, so manual and pseudo-masks train together.")
  summary_images: int = field(4, "Validation overlays written to TensorBoard at each evaluation (0: none).")
  tta_scales: tuple[int, ...] = field((), "Test-time augmentation (evaluate / predict --tta): the four flips at "
                                      "each of these input sides, px (the model-size input resized; "
                                      "empty: the model size only).")
  refine: str = field("none", "Post-processing of the map before scoring: none, or superpixel "
                      "(SLIC superpixels + manifold-ranking propagation + fusion + Otsu: "
                      "eval/superpixel_refine.py). Applies to evaluation, not to validation.")
  superpixels: SuperpixelConfig = SuperpixelConfig()
  superpixel_refine: RefineConfig = RefineConfig()
  # What `prepare` builds before training (stored once under input.artifact_root(); config.json
  # records the result: mask_artifacts, model.channel_mean / channel_std).
  labels: Literal["ground_truth", "kmeans"] = field(
      "ground_truth", "Train on the dataset's masks, or on K-means pseudo-masks (self-learning: no manual "
      "labels; computed and stored first if missing, with the kmeans settings). Test scores use ground truth.")
  kmeans: KMeansConfig = KMeansConfig()
  input_norm: Literal["none", "dataset"] = field(
      "none", "U-Nets: standardise the input per channel with the training split's mean and std (measured "
      "before training unless --channel_mean is given, and stored in config.json; the purification paper's "
      "dilated U-Net does).")


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
                       f"{sorted(features)}); pick a config with masks, or train on pseudo-masks (--labels=kmeans)")
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
    return inference.predict_over(predict, state, self.eval_batches(split, joins=()), mesh)

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
    rows, ids, examples = base.gather_examples(inference.predict_over(predict, state, batches, mesh),
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
      probs = inference.predict_over(predict, state, [batch], mesh)
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


@base.register
class SegmentationTask(base.Task):
  name = "segmentation"
  config_cls = SegmenterConfig
  geometries = ("stretch", "letterbox")
  color_constancy = True
  averages_outputs = True  # lesion probability maps
  makes_masks = True
  predicts = frozenset({"mask"})
  evaluation_overrides = frozenset({"tta_scales", "fallback", "refine"})

  @functools.cached_property
  def masks(self) -> LesionMasks:
    return LesionMasks(self, self.prob_at, keep_unmatched=self.config.keep_unmatched_masks)

  def model(self):
    return self.config.model.build()

  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    if models.family_of(c.model.name) != "segmenter":
      raise config_lib.ConfigError(f"--model={c.model.name!r}: not a segmentation model; choose one of "
                                   f"{list(models.names('segmenter'))}")
    factor = 2 ** c.model.levels
    if c.model.name in FIXED_GRID and (c.input.image_size < factor or c.input.image_size % factor):
      raise config_lib.ConfigError(
          f"--image_size={c.input.image_size}: a U-Net with --levels={c.model.levels} needs a multiple of {factor}")
    if c.loss not in losses.SEGMENTATION_LOSSES:
      raise config_lib.ConfigError(f"--loss={c.loss!r}: choose one of {list(losses.SEGMENTATION_LOSSES)}")
    self.check_overrides()
    super().check(mesh, extra_splits)

  def check_overrides(self) -> None:
    """Refuses bad evaluation-time settings (also when evaluate / predict override them)."""
    c = self.config
    if c.refine not in REFINEMENTS:
      raise config_lib.ConfigError(f"--refine={c.refine!r}: choose one of {list(REFINEMENTS)}")
    factor = 2 ** c.model.levels
    if c.model.name in FIXED_GRID and any(side < factor or side % factor for side in c.tta_scales):
      raise config_lib.ConfigError(f"--tta_scales={list(c.tta_scales)}: a U-Net with --levels={c.model.levels} "
                                   f"needs multiples of {factor}")

  def init_state(self, rng: jax.Array) -> TrainState:
    size = self.config.input.image_size
    tx = self.config.optimizer.build(self.config.run.num_steps)
    return create_train_state(self.model(), tx, rng, jnp.zeros((1, size, size, 3), jnp.float32))

  def train_step(self) -> Callable:
    return steps.make_segmentation_train_step(self.config.loss)

  def prepare(self, splits: Sequence[str]) -> "SegmentationTask":
    """This run with its input statistics measured (input_norm=dataset, unless channel_mean is
    given) and its K-means pseudo-masks annotated (labels=kmeans: the train and validation
    splits', stored under input.artifact_root(); resumable), so config.json records them."""
    from lesion_jax.artifacts import annotate  # pylint: disable=g-import-not-at-top
    del splits  # pseudo-masks are trained and validated on; every split's scores use the ground truth
    c = self.config
    if c.input_norm == "dataset" and c.model.channel_mean is None:
      mean, std = pipeline.channel_statistics(c.input, c.run.train_split, self.builder)
      c = dataclasses.replace(c, model=dataclasses.replace(c.model, channel_mean=mean, channel_std=std))
    if c.labels == "kmeans":
      store = annotate.ensure_kmeans_masks(self.builder, [c.run.train_split, c.run.val_split], c.input.artifact_root(),
                                           c.kmeans)
      if c.mask_artifacts and c.mask_artifacts != store:
        raise config_lib.ConfigError(f"--labels=kmeans trains on {store}, not on the masks of {c.mask_artifacts}")
      c = dataclasses.replace(c, mask_artifacts=store)
    return self if c == self.config else type(self)(c)

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    return self.masks.train_batches(start_step)

  def eval_batches(self, split: str, joins=None) -> Iterator[base.Batch]:
    return self.masks.eval_batches(split, joins)

  def predict_fns(self) -> dict[str, Callable]:
    return {"predict": steps.segmentation_predict_step, "flip_tta": steps.segmentation_predict_step_flip_tta,
            "tta": steps.make_segmentation_tta_predict_step(tuple(self.config.tta_scales))}

  def best_metric(self) -> tuple[str, str]:
    return "val/jaccard", "max"

  def outputs_over(self, state, split, mesh, predict):
    return self.masks.outputs_over(state, split, mesh, predict)

  def example_accumulator(self, split):
    """ISIC segmentation and boundary scores over `split`, after the configured refinement."""
    store = self.superpixel_store(split) if self.config.refine == "superpixel" else None
    return self.masks.rows(boundary=True, superpixels=store, refine=self.config.superpixel_refine)

  def validate(self, state, mesh, predict) -> dict[str, float]:
    return self.masks.validate(state, mesh, predict)

  def prob_at(self, output, height: int, width: int) -> np.ndarray:
    """The mask source: one example's lesion probability map at (height, width) from its predict
    output (the model-size map, resized: `map_at`)."""
    return map_at(output, height, width, self.config.input.geometry)

  def superpixel_store(self, split: str):
    """The split's SLIC superpixel artifacts (computed now where missing: resumable)."""
    c = self.config
    store = superpixels_lib.superpixel_store(default_root(c.input.data_dir), self.builder.info.full_name,
                                             c.superpixels)
    superpixels_lib.superpixels_for_split(self.builder, split, store, c.superpixels)
    return store

  def summarize(self, rows, ids, examples) -> base.Evaluation:
    return self.masks.summarize(rows, ids, examples)

  def hooks(self, workdir, mesh):
    return self.masks.hooks(mesh)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    self.masks.write_figures(evaluation, fig_dir, prefix)

  def segment_images(self, state, images: list[np.ndarray], mesh=None, predict=None) -> list[np.ndarray]:
    return self.masks.segment_images(state, images, mesh, predict)

  def binarize(self, prob: np.ndarray) -> tuple[np.ndarray, bool]:
    return self.masks.binarize(prob)

  def masks_for(self, probs: list[np.ndarray]) -> list[np.ndarray]:
    return self.masks.masks_for(probs)

  def predict_images(self, state, images, predict: str = "predict") -> list[dict[str, Any]]:
    return self.masks.predict_images(state, images, predict)


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


def load_segmenter(workdir: str, flag: str = "segmenter_workdir") -> base.Task:
  """The run in `workdir` if it segments lesions (its task is composed with LesionMasks: a
  segmentation or a Mask R-CNN run); another kind is refused with a ConfigError naming `flag`."""
  task = runner.load(workdir, flag=flag)
  if not (isinstance(task, base.Task) and task.makes_masks):
    raise config_lib.ConfigError(f"--{flag}={workdir}: holds a {task.name!r} run, not a lesion segmenter "
                                 "(a segmentation or Mask R-CNN run)")
  return task


def lesion_crops(segmenter_workdir: str, builder, splits: list[str], size: int, root: str,
                 margin: float = 0.1, black_out: bool = True, mesh=None, fallback: bool | None = None) -> str:
  """Segments and crops every image of `splits` with the best checkpoint of a segmenter run
  (segmentation or Mask R-CNN; an artifact stage: resumable); returns the crop store directory,
  to join as a classifier's images. Masks are the run's own binarisation (`binarize`), with the
  catastrophic-mask fallback if `fallback` (None: the run's own --fallback)."""
  from lesion_jax.artifacts import crops  # pylint: disable=g-import-not-at-top
  mesh = mesh or sharding.make_mesh()
  task = load_segmenter(segmenter_workdir)
  if fallback is not None:
    task = task.with_overrides(fallback=fallback)
  state = runner.restore(task, segmenter_workdir, "best", mesh)
  step = int(jax.device_get(state.step))
  cstore = crops.crop_store(root, builder.info.full_name, segmenter_workdir, step, size, margin, black_out,
                            fallback=task.config.fallback)
  # Each host segments only its share of the images not yet stored, so hosts run different
  # numbers of batches: on a process-local mesh, none waits for the others (sharding.process_local).
  local, state = sharding.process_local(state, mesh)
  predict = task.jit_predict(state, local)
  segment = lambda images: task.segment_images(state, images, local, predict)
  binarize = lambda prob: task.binarize(prob)[0]
  for split in splits:
    crops.crop_split(builder, split, cstore, segment, binarize, size, margin, black_out=black_out)
  return cstore.directory
