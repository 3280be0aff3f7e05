"""Segmentation task: a U-Net (or the dilated U-Net) giving a per-pixel lesion probability,
scored per image at each image's own resolution as the ISIC challenges do."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax.config import field
from lesion_jax.data import ops, pipeline
from lesion_jax.eval import figures, inference, metrics, postprocess
from lesion_jax.models.unet import UNet
from lesion_jax.tasks import base
from lesion_jax.train import sharding, steps
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state

# Segmentation networks by name: the U-Net's keyword arguments that make each one.
SEGMENTERS: dict[str, dict[str, Any]] = {
    "unet": {},
    "dilated_unet": {"bottleneck_dilations": (1, 2, 4, 8)},  # the purification paper's U-Net
}


@dataclasses.dataclass(frozen=True)
class SegmenterModelConfig:
  name: str = field("unet", "Segmentation network: " + ", ".join(SEGMENTERS) + ".")
  features: int = field(16, "Width of the first U-Net level (doubles per level).")
  levels: int = field(4, "Down/up-sampling levels.")
  norm: str = field("batch", "Normalisation in conv blocks: none, batch, group, layer (batch "
                    "converges in far fewer steps than none).")
  upsample: str = field("depth_to_space", "Decoder up-sampling: depth_to_space (the same function "
                        "class as the papers' 2x2 transposed conv, faster on CPU), transpose, resize_conv.")
  dtype: str = field("float32", "Compute dtype (params stay float32): float32 or bfloat16.")


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
  """Everything that defines a segmentation run."""
  input: pipeline.InputConfig = pipeline.InputConfig()
  model: SegmenterModelConfig = SegmenterModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=2e-3, warmup_steps=100)
  loss: str = field("bce", "Segmentation loss: bce, dice, bce_dice.")
  num_steps: int = field(2000, "Training steps.")
  eval_every: int = field(500, "Validate (and checkpoint) every this many steps.")
  checkpoint_every: int | None = field(None, "Checkpoint every this many steps (default: with each evaluation).")
  log_every: int = field(50, "Progress line and TensorBoard scalars every this many steps.")
  train_split: str = field("train", "Split trained on.")
  val_split: str = field("validation", "Split that picks the best checkpoint (\"\": none, keep the last).")
  mask_key: str = field("mask", "Feature holding the lesion mask.")
  threshold: float = field(0.5, "Probability threshold for the lesion mask.")
  postprocess: bool = field(True, "Fill holes and keep the largest component before scoring.")
  # Train (and pick the best checkpoint) on these stored masks instead of the ground truth, e.g.
  # K-means pseudo-masks (self-learning); test scores always use the ground truth.
  mask_artifacts: str | None = field(None, "Artifact store of masks trained on instead of the ground truth.")
  drop_uncertain: bool = field(True, "With mask_artifacts: leave out masks flagged uncertain.")
  summary_images: int = field(4, "Validation overlays written to TensorBoard at each evaluation (0: none).")


def joins_features(joins) -> set[str]:
  return {j.feature for j in joins}


def binarize_predictions(probs: np.ndarray, threshold: float, clean: bool) -> np.ndarray:
  """(N, H, W) probabilities → bool masks, optionally hole-filled with the largest component kept."""
  masks = probs > threshold
  if clean:
    masks = np.stack([postprocess.clean_mask(m) for m in masks]) if len(masks) else masks
  return masks


@base.register
class SegmentationTask(base.Task):
  name = "segmentation"
  config_cls = SegmenterConfig

  def model(self) -> UNet:
    m = self.config.model
    if m.name not in SEGMENTERS:
      raise ValueError(f"unknown segmentation model {m.name!r}; choose one of {list(SEGMENTERS)}")
    return UNet(features=m.features, levels=m.levels, norm=m.norm, upsample=m.upsample,
                dtype=jnp.dtype(m.dtype), **SEGMENTERS[m.name])

  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    if c.model.name not in SEGMENTERS:
      raise config_lib.ConfigError(f"--model={c.model.name!r}: not a segmentation model; choose one of "
                                   f"{list(SEGMENTERS)}")
    factor = 2 ** c.model.levels
    if c.input.image_size < factor or c.input.image_size % factor:
      raise config_lib.ConfigError(
          f"--image_size={c.input.image_size}: a U-Net with --levels={c.model.levels} needs a multiple of {factor}")
    if not 0.0 < c.threshold < 1.0:
      raise config_lib.ConfigError(f"--threshold={c.threshold}: must be between 0 and 1")
    super().check(mesh, extra_splits)

  def init_state(self, rng: jax.Array) -> TrainState:
    size = self.config.input.image_size
    tx = self.config.optimizer.build(self.config.num_steps)
    return create_train_state(self.model(), tx, rng, jnp.zeros((1, size, size, 3), jnp.float32))

  def train_step(self) -> Callable:
    return steps.make_segmentation_train_step(self.config.loss)

  def _joins(self) -> tuple[pipeline.ArtifactJoin, ...]:
    c = self.config
    if not c.mask_artifacts:
      return ()
    return (pipeline.ArtifactJoin(c.mask_key, c.mask_artifacts, drop_flagged=c.drop_uncertain),)

  def _ops(self, train: bool, joins) -> list:
    c = self.config
    features = self.builder.info.features
    if c.mask_key not in features and c.mask_key not in joins_features(joins):
      raise ValueError(f"{self.builder.info.full_name} has no {c.mask_key!r} feature (features: "
                       f"{sorted(features)}); pick a config with masks, or train on pseudo-masks (--labels=kmeans)")
    encoded = c.mask_key in joins_features(joins) or (
        c.mask_key in features and isinstance(features[c.mask_key], pipeline.tfds.features.Image))
    return ops.segmentation_ops(c.input.image_size, c.input.augment if train else None, mask_key=c.mask_key,
                                mask_is_encoded=encoded, keep_encoded_mask=encoded and not train)

  def _input(self, joins) -> pipeline.InputConfig:
    return dataclasses.replace(self.config.input, joins=joins)

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    joins = self._joins()
    return pipeline.train_iterator(self._input(joins), self._ops(True, joins), self.config.train_split,
                                   start_step, self.builder)

  def eval_batches(self, split: str, joins=None) -> Iterator[base.Batch]:
    joins = self._joins() if joins is None else joins
    return pipeline.eval_iterator(self._input(joins), self._ops(False, joins), split, self.builder)

  def predict_fns(self) -> dict[str, Callable]:
    return {"predict": steps.segmentation_predict_step, "flip_tta": steps.segmentation_predict_step_flip_tta}

  def best_metric(self) -> tuple[str, str]:
    return "val/jaccard", "max"

  def evaluate(self, state, split, mesh, predict=None, keep_examples=0) -> base.Evaluation:
    """ISIC segmentation scores over `split`, against the dataset's ground-truth masks."""
    predict = predict or self.jit_predict(state, mesh)
    return self.evaluate_batches(state, self.eval_batches(split, joins=()), mesh, predict, keep_examples)

  def validate(self, state, mesh, predict) -> dict[str, float]:
    """Validation scores against the masks trained on (pseudo-masks, with mask_artifacts): a
    self-learning run never selects its checkpoint on manual labels."""
    batches = self.eval_batches(self.config.val_split)
    return self.validation_metrics(self.evaluate_batches(state, batches, mesh, predict))

  def evaluate_batches(self, state, batches, mesh, predict, keep_examples=0) -> base.Evaluation:
    c = self.config
    acc = metrics.SegmentationAccumulator()
    ids: list[str] = []
    kept: dict[str, list[np.ndarray]] = {"image": [], "mask": [], "pred": []}
    for batch, probs in inference.predict_over(predict, state, batches, mesh):
      real = batch["weight"] > 0
      if "mask_encoded" in batch:  # score at each image's own resolution, as the ISIC challenges do
        for i in np.flatnonzero(real):
          truth = postprocess.decode_mask(batch["mask_encoded"][i])
          native = binarize_predictions(postprocess.resize_prob(probs[i], *truth.shape)[None],
                                        c.threshold, c.postprocess)
          acc.update(native, truth[None])
      else:
        acc.update(binarize_predictions(probs, c.threshold, c.postprocess),
                   batch["mask"][..., 0] > 0.5, batch["weight"])
      ids.extend(base.decode_ids(batch["id"][real]))
      room = keep_examples - len(kept["image"])
      if room > 0:  # examples for figures, at the model's input size
        take = np.flatnonzero(real)[:room]
        kept["image"].extend(figures.to_uint8_rgb((im + 1) / 2) for im in batch["image"][take])
        kept["mask"].extend(batch["mask"][take, ..., 0] > 0.5)
        kept["pred"].extend(binarize_predictions(probs[take], c.threshold, c.postprocess))
    # Each host scored its own shard of the split; every host summarises all of it.
    per_image = metrics.scores_from_counts(sharding.allgather_rows(acc.counts()))
    return base.Evaluation(metrics.summarize_segmentation(per_image, acc.threshold_ja), per_image,
                           sharding.allgather_strings(ids), {k: np.asarray(v) for k, v in kept.items()})

  def hooks(self, workdir, mesh):
    """Validation overlays in TensorBoard at each evaluation."""
    c = self.config
    if not c.summary_images or not c.val_split:
      return ()

    jitted = []  # compiled once, at the first call (the state's shardings are needed)

    def write_overlays(step, state, writer):
      # Computed on every process (the prediction is one sharded computation), written by one.
      if not jitted:
        jitted.append(self.jit_predict(state, mesh))
      predict = jitted[0]
      batch = next(iter(self.eval_batches(c.val_split)))
      probs = inference.predict_over(predict, state, [batch], mesh)
      _, p = next(probs)
      n = min(c.summary_images, int((batch["weight"] > 0).sum()))
      images = [figures.overlay(figures.to_uint8_rgb((batch["image"][i] + 1) / 2),
                                binarize_predictions(p[i:i + 1], c.threshold, c.postprocess)[0],
                                batch["mask"][i, ..., 0] > 0.5) for i in range(n)]
      writer.images(step, "val/overlays", np.stack(images))

    return (base.loop.PeriodicHook(c.eval_every, write_overlays, "val_overlays"),)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    import os  # pylint: disable=g-import-not-at-top
    examples = evaluation.examples
    if len(examples.get("image", ())):
      ja = evaluation.per_example["jaccard"][: len(examples["image"])]
      figures.save_overlay_grid(os.path.join(fig_dir, f"{prefix}_overlays.png"), examples["image"],
                                examples["pred"], examples["mask"],
                                titles=[f"{i}  JA {j:.2f}" for i, j in zip(evaluation.ids, ja)])
    if len(evaluation.per_example["jaccard"]):
      figures.save_histogram(os.path.join(fig_dir, f"{prefix}_jaccard_hist.png"),
                             {prefix: evaluation.per_example["jaccard"]}, xlabel="per-image Jaccard")

  def segment_images(self, state, images: list[np.ndarray], mesh=None, predict=None) -> list[np.ndarray]:
    """Lesion probability maps for uint8 RGB images of any size, each at its image's resolution
    (preprocessed exactly as in training, run in padded batches of the run's batch size)."""
    from lesion_jax.tasks import runner  # pylint: disable=g-import-not-at-top
    probs = runner.predict_examples(self, state, [self.example_input(im) for im in images], mesh,
                                    predict or "predict")
    return [postprocess.resize_prob(p, im.shape[0], im.shape[1]) for p, im in zip(probs, images)]

  def masks_for(self, probs: list[np.ndarray]) -> list[np.ndarray]:
    """The run's own binarisation (threshold, then hole filling + largest component if set)."""
    c = self.config
    return [postprocess.clean_mask(postprocess.binarize(p, c.threshold)) if c.postprocess
            else postprocess.binarize(p, c.threshold) for p in probs]


def lesion_crops(segmenter_workdir: str, builder, splits: list[str], size: int, root: str,
                 margin: float = 0.1, black_out: bool = True, mesh=None) -> str:
  """Segments and crops every image of `splits` with the best checkpoint of a segmenter run
  (an artifact stage: resumable); returns the crop store directory, to join as a classifier's
  images."""
  from lesion_jax.artifacts import crops  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import runner  # pylint: disable=g-import-not-at-top
  mesh = mesh or sharding.make_mesh()
  task = runner.load(segmenter_workdir)
  if not isinstance(task, SegmentationTask):
    raise config_lib.ConfigError(f"--segmenter_workdir={segmenter_workdir}: holds a {task.name!r} run, "
                                 "not a segmentation run (train_segmenter)")
  state = runner.restore(task, segmenter_workdir, "best", mesh)
  step = int(jax.device_get(state.step))
  cstore = crops.crop_store(root, builder.info.full_name, segmenter_workdir, step, size, margin, black_out)
  predict = task.jit_predict(state, mesh)
  segment = lambda images: task.segment_images(state, images, mesh, predict)
  for split in splits:
    crops.crop_split(builder, split, cstore, segment, size, margin, black_out=black_out,
                     threshold=task.config.threshold, clean=task.config.postprocess)
  return cstore.directory
