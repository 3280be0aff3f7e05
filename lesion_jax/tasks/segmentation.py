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
from typing import Any, Callable, Iterator, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax import models
from lesion_jax.config import field
from lesion_jax.data import pipeline
from lesion_jax.artifacts import superpixels as superpixels_lib
from lesion_jax.artifacts.kmeans import KMeansConfig
from lesion_jax.artifacts.superpixels import SuperpixelConfig
from lesion_jax.eval.superpixel_refine import RefineConfig
from lesion_jax.tasks import base, runner
from lesion_jax.tasks.lesion_masks import LesionMasks, map_at
from lesion_jax.train import losses, sharding, steps
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state

REFINEMENTS = ("none", "superpixel")
# Networks whose input side must be a multiple of 2^levels (the FCN pads itself).
FIXED_GRID = ("unet", "dilated_unet")


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
  channel_mean: tuple[float, float, float] | None = field(
      None, "U-Nets: per-channel mean of the training images in [0, 1]; set, the input is standardised "
      "with it (--input_norm=dataset measures it; the purification paper's normalisation).")
  channel_std: tuple[float, float, float] | None = field(None, "U-Nets: per-channel standard deviation, with channel_mean.")

  def build(self, dtype: Any = jnp.float32):
    """The network (`models.get`) with the fields it takes: every segmenter its widths, norm and
    up-sampling; the U-Nets their input statistics, the FCN its head width. `dtype`: its compute
    dtype (the run's precision policy, `Task.policy`)."""
    kwargs = dict(features=self.features, levels=self.levels, norm=self.norm, upsample=self.upsample,
                  dtype=dtype)
    if self.name == "fcn":
      kwargs["head_features"] = self.head_features
    else:
      kwargs.update(input_mean=self.channel_mean, input_std=self.channel_std)
    return models.get(self.name, **kwargs)


@dataclasses.dataclass(frozen=True)
class ManualMasks:
  """With labels=kmeans: another archive's manual masks that replace the pseudo-masks of the same
  image ids (semi-supervised: e.g. the ISIC 2017 sample's 150 Training masks among the 2000 K-means
  pseudo-masks of a Part 3-only download)."""
  dataset: str = field("", "TFDS dataset[/config] with the manual masks (\"\": none, pseudo-masks only).")
  data_dir: str | None = field(None, "Its TFDS data directory (default: the input's).", location=True)
  manual_dir: str | None = field(None, "Its hand-downloaded archive.", location=True)
  split: str = field("train", "Its split whose masks are used.")


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
  manual_masks: ManualMasks = ManualMasks()
  input_norm: Literal["none", "dataset"] = field(
      "none", "U-Nets: standardise the input per channel with the training split's mean and std (measured "
      "before training unless --channel_mean is given, and stored in config.json; the purification paper's "
      "dilated U-Net does).")


@base.register
class SegmentationTask(base.Task):
  name = "segmentation"
  config_cls = SegmenterConfig
  geometries = ("stretch", "letterbox")
  color_constancy = True
  averages_outputs = True  # lesion probability maps
  makes_masks = True
  predicts = frozenset({"mask"})
  # The input location too: a segmenter is scored on any archive with masks, e.g. one self-learned
  # on a mask-less archive (isic2017/part3_512) scored on another's Validation masks.
  evaluation_overrides = frozenset({"tta_scales", "fallback", "refine", "threshold", "postprocess",
                                    "fallback_max_fraction", "input.dataset", "input.data_dir",
                                    "input.manual_dir"})

  @functools.cached_property
  def masks(self) -> LesionMasks:
    return LesionMasks(self, self.prob_at, keep_unmatched=self.config.keep_unmatched_masks)

  def model(self):
    return self.config.model.build(self.policy.compute_dtype)

  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    if models.family_of(c.model.name) != "segmenter":
      raise config_lib.ConfigError(f"`model.name`={c.model.name!r}: not a segmentation model; choose one of "
                                   f"{list(models.names('segmenter'))}")
    factor = 2 ** c.model.levels
    if c.model.name in FIXED_GRID and (c.input.image_size < factor or c.input.image_size % factor):
      raise config_lib.ConfigError(
          f"`input.image_size`={c.input.image_size}: a U-Net with `model.levels`={c.model.levels} needs a multiple of {factor}")
    if c.loss not in losses.SEGMENTATION_LOSSES:
      raise config_lib.ConfigError(f"`loss`={c.loss!r}: choose one of {list(losses.SEGMENTATION_LOSSES)}")
    self.check_overrides()
    super().check(mesh, extra_splits)
    self.check_masks(extra_splits)

  def check_masks(self, extra_splits=()) -> None:
    """Refuses, by name and before anything is written, a run that would train or be scored on the
    masks of a dataset that has none (a Part 3-only archive such as isic2017/part3_512)."""
    c = self.config
    if c.manual_masks.dataset and c.labels != "kmeans":  # whatever the input has: it would be ignored
      raise config_lib.ConfigError(f"`manual_masks.dataset`={c.manual_masks.dataset!r}: replaces K-means pseudo-masks; "
                                   "set `labels`='kmeans'")
    if c.mask_key in self.builder.info.features:
      return
    what = f"`input.dataset`={c.input.dataset!r} has no lesion masks (no {c.mask_key!r} feature)"
    if c.labels == "ground_truth" and not c.mask_artifacts:
      raise config_lib.ConfigError(f"{what}, so a segmenter cannot train on them: set `labels`='kmeans' (self-learned "
                                   "on K-means pseudo-masks), or use a dataset config with masks")
    scored = [(name, split) for name, split in extra_splits if split]
    if scored:
      name, split = scored[0]
      raise config_lib.ConfigError(f"`{name}`={split!r}: {what} to score on; set `{name}`='' and score the "
                                   "run with `evaluate --config.input.dataset=<a dataset with masks>`")

  def check_overrides(self) -> None:
    """Refuses bad evaluation-time settings (also when evaluate / predict override them)."""
    c = self.config
    if c.refine not in REFINEMENTS:
      raise config_lib.ConfigError(f"`refine`={c.refine!r}: choose one of {list(REFINEMENTS)}")
    factor = 2 ** c.model.levels
    if c.model.name in FIXED_GRID and any(side < factor or side % factor for side in c.tta_scales):
      raise config_lib.ConfigError(f"`tta_scales`={list(c.tta_scales)}: a U-Net with `model.levels`={c.model.levels} "
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
      if c.manual_masks.dataset:
        m = c.manual_masks
        manual = pipeline.get_builder(m.dataset, m.data_dir or c.input.data_dir, m.manual_dir)
        store = annotate.manual_over_pseudo(store, manual, m.split, c.input.artifact_root())
      if c.mask_artifacts and c.mask_artifacts != store:
        raise config_lib.ConfigError(f"`labels`=kmeans trains on {store}, not on the masks of `mask_artifacts`={c.mask_artifacts}")
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
    store = superpixels_lib.superpixel_store(c.input.artifact_root(), self.builder.info.full_name, c.superpixels)
    superpixels_lib.superpixels_for_split(self.builder, split, store, c.superpixels)
    return store

  def summarize(self, rows, ids, examples) -> base.Evaluation:
    return self.masks.summarize(rows, ids, examples)

  def hooks(self, workdir, mesh):
    return self.masks.hooks(mesh)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    self.masks.write_figures(evaluation, fig_dir, prefix)

  def predict_images(self, state, images, predict: str = "predict") -> list[dict[str, Any]]:
    return self.masks.predict_images(state, images, predict)


def load_segmenter(workdir: str, field: str = "crop.segmenter_workdir") -> base.Task:
  """The run in `workdir` if it segments lesions (its task is composed with LesionMasks: a
  segmentation or a Mask R-CNN run); another kind is refused with a ConfigError naming `field`
  (the config field that gave `workdir`)."""
  task = runner.load(workdir, field=field)
  if not (isinstance(task, base.Task) and task.makes_masks):
    raise config_lib.ConfigError(f"`{field}`={workdir}: holds a {task.name!r} run, not a lesion segmenter "
                                 "(a segmentation or Mask R-CNN run)")
  return task


def segmenter_functions(task: base.Task, workdir: str, mesh=None) -> tuple[int, Callable, Callable]:
  """(step, segment, binarize) of the best checkpoint of `task`'s run in `workdir` (a segmenter: see
  load_segmenter), as the stages that segment whole splits use it: `segment(list of uint8 images)`
  gives probability maps at each image's resolution (this process's devices), `binarize(map)` the
  run's own mask."""
  state, local, predict, step = runner.process_local_predictor(task, workdir, mesh or sharding.make_mesh())
  segment = lambda images: task.masks.segment_images(state, images, local, predict)  # noqa: E731
  binarize = lambda prob: task.masks.binarize(prob)[0]  # noqa: E731
  return step, segment, binarize


def lesion_crops(segmenter_workdir: str, builder, splits: list[str], size: int, root: str,
                 margin: float = 0.1, black_out: bool = True, mesh=None, fallback: bool | None = None) -> str:
  """Segments and crops every image of `splits` with the best checkpoint of a segmenter run
  (segmentation or Mask R-CNN; an artifact stage: resumable); returns the crop store directory,
  to join as a classifier's images. Masks are the run's own binarisation (`binarize`), with the
  catastrophic-mask fallback if `fallback` (None: the run's own --fallback)."""
  from lesion_jax.artifacts import crops  # pylint: disable=g-import-not-at-top
  task = load_segmenter(segmenter_workdir)
  if fallback is not None:
    task = task.with_overrides(fallback=fallback)
  step, segment, binarize = segmenter_functions(task, segmenter_workdir, mesh)
  cstore = crops.crop_store(root, builder.info.full_name, segmenter_workdir, step, size, margin, black_out,
                            fallback=task.config.fallback)
  for split in splits:
    crops.crop_split(builder, split, cstore, segment, binarize, size, margin, black_out=black_out)
  return cstore.directory


def segmenter_masks(segmenter_workdir: str, builder, splits: list[str], root: str, field: str, mesh=None) -> str:
  """The lesion mask of every image of `splits` (at the image's resolution) by the best checkpoint
  of a segmenter run, binarised as the run binarises: the segmenter-mask store self-learning's
  relabelling fills (artifacts/relabel.py; an artifact stage: stored once, resumable), for a task
  that reads masks a dataset does not have (a Part 3-only archive). Returns the store directory,
  to join as the task's mask feature. `field`: the config field that gave `segmenter_workdir`."""
  from lesion_jax.artifacts import relabel  # pylint: disable=g-import-not-at-top
  step, segment, binarize = segmenter_functions(load_segmenter(segmenter_workdir, field), segmenter_workdir, mesh)
  store = relabel.relabel_store(root, builder.info.full_name, segmenter_workdir, step)
  for split in splits:
    relabel.relabel_split(builder, split, store, segment, binarize, relabel.RelabelConfig())
  return store.directory
