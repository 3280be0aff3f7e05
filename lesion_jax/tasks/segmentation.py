"""Segmentation task: config, model, training through the shared loop, evaluation, restoring."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lesion_jax import checkpoint, io
from lesion_jax.data import pipeline
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.eval import figures, inference, metrics, postprocess
from lesion_jax.models.unet import UNet
from lesion_jax.tasks import config as config_lib
from lesion_jax.train import loop, sharding, steps
from lesion_jax.train.state import TrainState, create_train_state, learning_rate_schedule, make_optimizer

SEGMENTERS = ("unet", "dilated_unet")


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
  """Everything that defines a segmentation run (experiments map their flags onto it 1:1)."""
  input: pipeline.InputConfig = pipeline.InputConfig()
  model: str = "unet"
  features: int = 16
  levels: int = 4
  norm: str = "batch"
  upsample: str = "depth_to_space"
  dtype: str = "float32"
  loss: str = "bce"
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_schedule: str = "cosine"  # or "constant", as in the papers
  warmup_steps: int = 100
  num_steps: int = 2000
  eval_every: int = 500
  log_every: int = 50
  train_split: str = "train"
  val_split: str = "validation"  # "" = no validation: keep the last checkpoint (nothing selected)
  threshold: float = 0.5
  postprocess: bool = True  # fill holes + keep the largest component before scoring
  # Train (and pick the best checkpoint) on these stored masks instead of the ground truth, e.g.
  # K-means pseudo-masks (self-learning); test scores always use the ground truth.
  mask_artifacts: str | None = None
  drop_uncertain: bool = True  # with mask_artifacts: skip pseudo-masks flagged uncertain

  def training_input(self) -> pipeline.InputConfig:
    if not self.mask_artifacts:
      return self.input
    join = pipeline.ArtifactJoin("mask", self.mask_artifacts, drop_flagged=self.drop_uncertain)
    return dataclasses.replace(self.input, joins=(join,))

  @classmethod
  def from_flat_dict(cls, values: dict[str, Any]) -> "SegmenterConfig":
    """From flat flag values (config.json); unknown keys are ignored, missing ones default."""
    return config_lib.from_flat_dict(cls, values)


def build_model(config: SegmenterConfig) -> UNet:
  if config.model not in SEGMENTERS:
    raise ValueError(f"unknown segmentation model {config.model!r}; choose one of {SEGMENTERS}")
  return UNet(features=config.features, levels=config.levels, norm=config.norm,
              upsample=config.upsample, dtype=jnp.dtype(config.dtype),
              bottleneck_dilations=(1, 2, 4, 8) if config.model == "dilated_unet" else ())


def init_state(config: SegmenterConfig, rng: jax.Array) -> TrainState:
  size = config.input.image_size
  schedule = learning_rate_schedule(config.lr_schedule, config.learning_rate, config.num_steps, config.warmup_steps)
  tx = make_optimizer(config.optimizer, schedule)
  return create_train_state(build_model(config), tx, rng, jnp.zeros((1, size, size, 3), jnp.float32))


@dataclasses.dataclass
class SegmentationResult:
  """Scores over a split, with the per-image values and a few examples for figures."""
  scores: dict[str, Any]
  per_image: dict[str, np.ndarray]
  ids: list[str]
  examples: dict[str, np.ndarray]  # image (uint8), mask, pred for the first `keep_examples`


def binarize_predictions(probs: np.ndarray, threshold: float, clean: bool) -> np.ndarray:
  """(N, H, W) probabilities → bool masks, optionally hole-filled with the largest component kept."""
  masks = probs > threshold
  if clean:
    masks = np.stack([postprocess.clean_mask(m) for m in masks]) if len(masks) else masks
  return masks


def evaluate(state: TrainState, config: SegmenterConfig, batches: Iterator[dict[str, np.ndarray]],
             mesh: jax.sharding.Mesh, predict=None, keep_examples: int = 0) -> SegmentationResult:
  """Segmentation scores (ISIC conventions, metrics.py) of `state` over `batches`."""
  predict = predict or sharding.jit_predict_step(steps.segmentation_predict_step, state, mesh)
  acc = metrics.SegmentationAccumulator()
  ids: list[str] = []
  kept: dict[str, list[np.ndarray]] = {"image": [], "mask": [], "pred": []}
  for batch, probs in inference.predict_over(predict, state, batches, mesh):
    real = batch["weight"] > 0
    if "mask_encoded" in batch:  # score at each image's own resolution, as the ISIC challenges do
      for i in np.flatnonzero(real):
        truth = postprocess.decode_mask(batch["mask_encoded"][i])
        native = binarize_predictions(postprocess.resize_prob(probs[i], *truth.shape)[None],
                                      config.threshold, config.postprocess)
        acc.update(native, truth[None])
    else:
      acc.update(binarize_predictions(probs, config.threshold, config.postprocess),
                 batch["mask"][..., 0] > 0.5, batch["weight"])
    ids.extend(i.decode() if isinstance(i, bytes) else str(i) for i in batch["id"][real])
    room = keep_examples - len(kept["image"])
    if room > 0:  # examples for figures, at the model's input size
      take = np.flatnonzero(real)[:room]
      kept["image"].extend(figures.to_uint8_rgb((im + 1) / 2) for im in batch["image"][take])
      kept["mask"].extend(batch["mask"][take, ..., 0] > 0.5)
      kept["pred"].extend(binarize_predictions(probs[take], config.threshold, config.postprocess))
  # Each host scored its own shard of the split; every host summarises all of it.
  per_image = metrics.scores_from_counts(sharding.allgather_rows(acc.counts()))
  return SegmentationResult(metrics.summarize_segmentation(per_image, acc.threshold_ja), per_image,
                            sharding.allgather_strings(ids), {k: np.asarray(v) for k, v in kept.items()})


def train(config: SegmenterConfig, workdir: str, seed: int | None = None,
          mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """Trains (or resumes) in `workdir`, keeping the best checkpoint by validation Jaccard, and
  returns the best state."""
  mesh = mesh or sharding.make_mesh()
  seed = config.input.seed if seed is None else seed
  rng_init, rng_train = jax.random.split(jax.random.key(seed))
  state = init_state(config, rng_init)
  builder = pipeline.get_builder(config.input.dataset, config.input.data_dir, config.input.manual_dir)
  train_input = config.training_input()
  eval_input = dataclasses.replace(train_input, augment=AugmentConfig.off())
  predict = sharding.jit_predict_step(steps.segmentation_predict_step, sharding.replicate(state, mesh), mesh)

  def validate(s: TrainState) -> dict[str, float]:
    result = evaluate(s, config, pipeline.eval_batches(eval_input, config.val_split, builder), mesh, predict)
    return {f"val/{k}": v for k, v in result.scores.items() if k != "num_images"}

  loop_config = loop.LoopConfig(
      num_steps=config.num_steps, batch_size=config.input.batch_size, eval_every=config.eval_every,
      log_every=config.log_every, best_metric=_best_metric(config), best_mode="max")
  loop.train(state, steps.make_segmentation_train_step(config.loss),
             lambda start: pipeline.train_batches(train_input, start, config.train_split, builder),
             validate if config.val_split else None, workdir, loop_config, rng_train, mesh)
  return restore(workdir, config, "best", mesh)


def _best_metric(config: SegmenterConfig) -> str | None:
  """Checkpoints are ranked by validation JA; without a validation split the latest is "best"."""
  return "val/jaccard" if config.val_split else None


def restore(workdir: str, config: SegmenterConfig, which: checkpoint.Which = "best",
            mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """The segmenter saved in `workdir` (its best checkpoint by default), replicated on `mesh`."""
  mesh = mesh or sharding.make_mesh()
  # Restored straight into the mesh's sharding (on several hosts, arrays committed to one local
  # device could not be moved onto the global mesh afterwards).
  template = sharding.replicate(init_state(config, jax.random.key(0)), mesh)
  with checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), _best_metric(config), read_only=True) as ckpts:
    step = ckpts.best_step() if which == "best" else ckpts.latest_step() if which == "latest" else which
    state = ckpts.restore(template, which)
  logging.info("Restored segmenter from %s (step %s).", workdir, step)
  return state


def load_config(workdir: str) -> SegmenterConfig:
  """The SegmenterConfig of a run, from its `config.json`."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} the --workdir of a train_segmenter run?")
  return SegmenterConfig.from_flat_dict(io.read_json(path))


def score_split(state: TrainState, config: SegmenterConfig, workdir: str, split: str = "test",
                mesh: jax.sharding.Mesh | None = None, prefix: str | None = None,
                tta: bool = False) -> dict[str, Any]:
  """Scores `state` on `split`; writes figures (overlays, per-image JA histogram, curves) into
  `workdir`/figures and returns the metrics prefixed with the split name. `tta` averages the
  probabilities over the four flips of each image (steps.segmentation_predict_step_flip_tta)."""
  mesh = mesh or sharding.make_mesh()
  eval_input = dataclasses.replace(config.input, augment=AugmentConfig.off())
  step = steps.segmentation_predict_step_flip_tta if tta else steps.segmentation_predict_step
  predict = sharding.jit_predict_step(step, state, mesh)
  result = evaluate(state, config, pipeline.eval_batches(eval_input, split), mesh, predict=predict,
                    keep_examples=16)
  prefix = prefix or split
  fig_dir = os.path.join(workdir, "figures")
  if len(result.examples["image"]):
    ja = result.per_image["jaccard"][: len(result.examples["image"])]
    figures.save_overlay_grid(os.path.join(fig_dir, f"{prefix}_overlays.png"), result.examples["image"],
                              result.examples["pred"], result.examples["mask"],
                              titles=[f"{i}  JA {j:.2f}" for i, j in zip(result.ids, ja)])
  if len(result.per_image["jaccard"]):
    figures.save_histogram(os.path.join(fig_dir, f"{prefix}_jaccard_hist.png"),
                           {prefix: result.per_image["jaccard"]}, xlabel="per-image Jaccard")
  history_path = os.path.join(workdir, "history.json")
  if os.path.exists(history_path):
    figures.save_curves(os.path.join(fig_dir, "curves.png"), io.read_json(history_path))
  return {f"{prefix}/{k}": v for k, v in result.scores.items()}


def segment_images(state: TrainState, config: SegmenterConfig, images: list[np.ndarray],
                   mesh: jax.sharding.Mesh | None = None, predict=None) -> list[np.ndarray]:
  """Lesion probability maps for uint8 RGB images of any size, each at its image's resolution.

  Images are preprocessed exactly as in training (pipeline.preprocess_image) and run in batches
  of `config.input.batch_size` (padded, so one compiled shape serves every batch).
  """
  mesh = mesh or sharding.make_mesh()
  predict = predict or sharding.jit_predict_step(steps.segmentation_predict_step, state, mesh)
  inputs = [pipeline.preprocess_image(im, config.input.image_size) for im in images]
  probs = inference.predict_arrays(predict, state, inputs, config.input.batch_size, mesh)
  return [postprocess.resize_prob(p, im.shape[0], im.shape[1]) for p, im in zip(probs, images)]


def lesion_crops(segmenter_workdir: str, dataset: str, splits: list[str], size: int,
                 data_dir: str | None = None, manual_dir: str | None = None,
                 artifact_dir: str | None = None, margin: float = 0.1, mesh=None) -> str:
  """Segments and crops every image of `splits` with the best checkpoint of a segmenter run
  (resumable); returns the crop store directory, to join as the classifier's images."""
  from lesion_jax.artifacts import crops, store  # pylint: disable=g-import-not-at-top
  mesh = mesh or sharding.make_mesh()
  seg_config = load_config(segmenter_workdir)
  state = restore(segmenter_workdir, seg_config, "best", mesh)
  step = int(jax.device_get(state.step))
  builder = pipeline.get_builder(dataset, data_dir, manual_dir)
  root = artifact_dir or store.default_root(data_dir)
  cstore = crops.crop_store(root, builder.info.full_name, segmenter_workdir, step, size, margin)
  predict = sharding.jit_predict_step(steps.segmentation_predict_step, state, mesh)
  segment = lambda images: segment_images(state, seg_config, images, mesh, predict)
  for split in splits:
    crops.crop_split(builder, split, cstore, segment, size, margin, threshold=seg_config.threshold,
                     clean=seg_config.postprocess)
  return cstore.directory
