"""Inpainting task (pipeline 3, data purification): a partial-convolution U-Net (Liu et al. 2018)
learns to fill occluded pixels (hairs, ruler marks) from the rest of the image, with the paper's
loss (L1 on valid and hole pixels, total variation, perceptual and style terms).

Training pairs: a clean image (synthetic `image_clean`; on real data, the image itself) with
holes = random strokes, hair-like curves and blobs (holes.py, the paper's random masking),
united with the detected occlusion mask of the same image when an occlusion artifact store is
given (the shapes real hairs and rulers have). The model only sees the valid pixels.

Two phases, as the purification paper trains it: Adam first (`num_steps`), then a second run
with `finetune_from` = the first run's workdir: SGD with momentum (`finetune`), the encoder's
BatchNorm frozen (running statistics, as Liu et al. fine-tune). experiments/train_inpainter.py
chains them.

Evaluation: holes = the true occlusion mask (`eval_holes="occlusion_mask"`, synthetic data), the
detected one ("detected") or random ones ("random", real data without a clean truth); the
network's output and OpenCV's Telea and Navier-Stokes inpainting of the same input and masks are
scored inside the holes (PSNR, SSIM, L1 against the target), side by side.

Perceptual and style terms need a fixed feature network. No pretrained VGG can be downloaded
here: `perceptual_workdir` takes the first convolutions (ReLU'd) of one of this project's own
trained classifiers (a train_classifier workdir); without it both terms are off.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from lesion_jax import config as config_lib
from lesion_jax.artifacts import occlusion as occlusion_lib
from lesion_jax.config import field
from lesion_jax.data import ops, pipeline
from lesion_jax.eval import figures, inference
from lesion_jax.models.inpainting import PConvUNet
from lesion_jax.pipelines.purification import holes as holes_lib
from lesion_jax.pipelines.purification import losses, metrics, steps
from lesion_jax.pipelines.purification import ops as purification_ops
from lesion_jax.tasks import base, runner
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state

EVAL_HOLES = ("occlusion_mask", "detected", "random")
NETWORK = "pconv"
METHODS = (NETWORK, *metrics.OPENCV_METHODS)
FIGURE_ROWS = 8
DETECTED_KEY = "detected_occlusion"


@dataclasses.dataclass(frozen=True)
class InpainterModelConfig:
  features: int = field(32, "Width of the first encoder layer (the paper: 64); doubles per level up to 8x.")
  levels: int = field(5, "Stride-2 partial-conv encoder layers (the paper: 8 at 512 px); the image side "
                      "must divide by 2^levels.")


@dataclasses.dataclass(frozen=True)
class InpainterConfig:
  input: pipeline.InputConfig = pipeline.InputConfig(dataset="synthetic_lesions/s128", image_size=128,
                                                     batch_size=8)
  model: InpainterModelConfig = InpainterModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=2e-4, warmup_steps=50)
  finetune: OptimizerConfig = OptimizerConfig(name="sgd", learning_rate=1e-2, momentum=0.9,
                                              lr_schedule="constant", warmup_steps=0)
  loss: losses.InpaintingLossWeights = losses.InpaintingLossWeights()
  perceptual_workdir: str | None = field(
      None, "train_classifier run whose first convolutions give the perceptual and style features "
      "(no pretrained VGG offline); unset: those two terms are off.", location=True)
  perceptual_layers: int = field(3, "How many of that classifier's first convolutions (ReLU'd) to use.")
  target_key: str = field("image_clean", "Feature of the clean target: image_clean (synthetic), or "
                          "image on real data (its own pixels are the truth outside the holes).")
  holes: holes_lib.HoleConfig = holes_lib.HoleConfig()
  occlusion_artifacts: str | None = field(
      None, "Occlusion-mask artifact store (artifacts/occlusion.py) whose masks are added to the random "
      "holes in training, and are the holes with --eval_holes=detected.")
  eval_holes: str = field("occlusion_mask", "Holes scored in evaluation: occlusion_mask (the truth), "
                          "detected (occlusion_artifacts) or random.")
  finetune_from: str | None = field(None, "Workdir of the initial (Adam) run: start from its best state, "
                                    "train with the `finetune` optimiser and the encoder BatchNorm frozen.",
                                    location=True)
  finetune_steps: int = field(500, "train_two_phase: steps of the SGD fine-tuning phase (0: none, one Adam run).")
  detected_holes: bool = field(False, "Add each image's detected occlusion mask (`occlusion`) to its random holes.")
  occlusion: occlusion_lib.OcclusionConfig = field(
      occlusion_lib.OcclusionConfig(), "The classical occlusion detector: detected holes, eval_holes=detected, "
      "and the holes predict fills on a photo.")
  run: config_lib.RunConfig = config_lib.RunConfig(num_steps=2000, eval_every=500)


def classifier_features(workdir: str, num_layers: int) -> Callable[[jax.Array], list[jax.Array]]:
  """`fn(images in [-1, 1]) -> [ReLU(conv_k(...)) for the first num_layers convolutions]` of the
  best checkpoint of a classification run: a fixed network for the perceptual and style losses."""
  from lesion_jax.tasks import classification  # pylint: disable=g-import-not-at-top
  _, variables, apply_fn = classification.restored_classifier(workdir, "perceptual_workdir")

  def features(images: jax.Array) -> list[jax.Array]:
    captured: list[jax.Array] = []

    def keep_convs(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
        captured.append(out)
      return out

    with nn.intercept_methods(keep_convs):
      apply_fn(jax.lax.stop_gradient(variables), images, train=False)
    if len(captured) < num_layers:
      raise ValueError(f"{workdir}: the classifier has {len(captured)} convolutions, fewer than "
                       f"perceptual_layers={num_layers}")
    return [nn.relu(x.astype(jnp.float32)) for x in captured[:num_layers]]

  return features


def _valid_from_holes(*hole_keys: str) -> ops.Op:
  """'mask' = 1 where no hole key is set (1 = valid pixel, the partial convolution's convention)."""

  def fn(example, _):
    holes = functools.reduce(tf.maximum, [example[k] for k in hole_keys])
    return {**example, "mask": 1.0 - holes}

  return ops.Op(fn, name=f"valid_from_holes{hole_keys}", needs=hole_keys)


@base.register
class InpaintingTask(base.Task):
  name = "inpainting"
  config_cls = InpainterConfig
  # Its input images are also its targets (and predict copies the valid pixels through exactly), so
  # they stay float32 on the way to the device; the network casts them to its compute dtype itself.
  input_keys = ()

  @property
  def finetuning(self) -> bool:
    return bool(self.config.finetune_from)

  def model(self) -> PConvUNet:
    m = self.config.model
    return PConvUNet(features=m.features, levels=m.levels, freeze_encoder_bn=self.finetuning,
                     dtype=self.policy.compute_dtype)

  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    size, factor = c.input.image_size, 2 ** c.model.levels
    if size < factor or size % factor:
      raise config_lib.ConfigError(f"`input.image_size`={size}: a partial-conv U-Net with `model.levels`="
                                   f"{c.model.levels} needs a multiple of {factor}")
    if c.eval_holes not in EVAL_HOLES:
      raise config_lib.ConfigError(f"`eval_holes`={c.eval_holes!r}: choose one of {list(EVAL_HOLES)}")
    features = self.builder.info.features
    for key in (c.target_key, *(["occlusion_mask"] if c.eval_holes == "occlusion_mask" else [])):
      if key not in features:
        raise config_lib.ConfigError(
            f"{self.builder.info.full_name} has no {key!r} feature (features: {sorted(features)}); on "
            "real data use `target_key`=image and `eval_holes`=random or detected")
    if c.finetune_from and not os.path.isdir(c.finetune_from):
      raise config_lib.ConfigError(f"`finetune_from`={c.finetune_from}: no such workdir")
    super().check(mesh, extra_splits)

  def prepare(self, splits) -> "InpaintingTask":
    """The detected occlusion masks of every split read (an artifact stage, stored once), where
    the holes (`detected_holes`) or the evaluation (`eval_holes=detected`) use them."""
    c = self.config
    if c.occlusion_artifacts or not (c.detected_holes or c.eval_holes == "detected"):
      return self
    masks = occlusion_lib.occlusion_store(c.input.artifact_root(), self.builder.info.full_name, c.occlusion)
    for split in splits:
      occlusion_lib.occlusion_masks_for_split(self.builder, split, masks, c.occlusion)
    return InpaintingTask(dataclasses.replace(c, occlusion_artifacts=masks.directory))

  predicts = frozenset({"purified", "scores"})

  def predict_images(self, state, images, predict="predict", occlusion=None) -> list[dict[str, Any]]:
    """Per photo: the "purified" photo (occlusions detected by `occlusion`, default the run's own
    detector, filled by the network; every other pixel kept) and "scores" {"occluded_fraction"}."""
    if predict != "predict":
      raise base.PredictionUnsupported(f"an inpainter has no {predict!r} prediction")
    detector = occlusion or self.config.occlusion
    holes = [occlusion_lib.detect_occlusions(im, detector) for im in images]
    filled = self.inpaint_images(state, list(images), holes)
    return [{"purified": f, "scores": {"occluded_fraction": float(np.mean(h))}} for f, h in zip(filled, holes)]

  def init_state(self, rng: jax.Array) -> TrainState:
    c = self.config
    size = c.input.image_size
    optimizer = c.finetune if self.finetuning else c.optimizer
    return create_train_state(self.model(), optimizer.build(c.run.num_steps), rng,
                              jnp.zeros((1, size, size, 3), jnp.float32), jnp.ones((1, size, size, 1), jnp.float32))

  def warm_start(self, state: TrainState) -> TrainState:
    """Fine-tuning starts from the initial run's best weights (only training reads that run, so
    restoring a fine-tuned inpainter never needs it)."""
    c = self.config
    if not self.finetuning:
      return state
    initial_task = runner.load(c.finetune_from, InpaintingTask, "finetune_from")
    initial = jax.device_get(runner.restore(initial_task, c.finetune_from, "best"))
    return state.replace(params=initial.params, batch_stats=initial.batch_stats,
                         opt_state=state.tx.init(initial.params))

  @functools.cached_property
  def _feature_fn(self):
    c = self.config
    return classifier_features(c.perceptual_workdir, c.perceptual_layers) if c.perceptual_workdir else None

  def train_step(self) -> Callable:
    return steps.make_train_step(self.config.loss, self._feature_fn)

  def _joins(self) -> tuple[pipeline.ArtifactJoin, ...]:
    c = self.config
    return (pipeline.ArtifactJoin(DETECTED_KEY, c.occlusion_artifacts),) if c.occlusion_artifacts else ()

  def _train_ops(self) -> list:
    c = self.config
    size = c.input.image_size
    hole_keys = ("holes", DETECTED_KEY) if c.occlusion_artifacts else ("holes",)
    out = [ops.decode_image(c.target_key, out="target"), ops.resize_image("target", size),
           purification_ops.random_holes(size, c.holes, out="holes")]
    if c.occlusion_artifacts:
      out += [ops.decode_mask(DETECTED_KEY), ops.resize_mask(DETECTED_KEY, size)]
    out += [ops.augment(c.input.augment, image_key="target", spatial_keys=hole_keys, center_key=None),
            _valid_from_holes(*hole_keys), ops.normalize("target"), ops.keep(("id", "target", "mask"))]
    return out

  def _eval_ops(self) -> list:
    c = self.config
    size = c.input.image_size
    out = [ops.decode_image("image"), ops.resize_image("image", size)]
    if c.target_key == "image":
      out.append(ops.copy("image", "target"))
    else:
      out += [ops.decode_image(c.target_key, out="target"), ops.resize_image("target", size)]
    if c.eval_holes == "random":
      out.append(purification_ops.random_holes(size, c.holes, out="holes"))
    else:
      key = "occlusion_mask" if c.eval_holes == "occlusion_mask" else DETECTED_KEY
      out += [ops.decode_mask(key, out="holes"), ops.resize_mask("holes", size)]
    if c.eval_holes == "random" and c.target_key != "image":
      out.append(ops.copy("target", "image"))  # random holes in the clean image, scored against it
    return out + [_valid_from_holes("holes"), ops.normalize("image"), ops.normalize("target"),
                  ops.keep(("id", "image", "target", "mask"))]

  def _input(self) -> pipeline.InputConfig:
    return dataclasses.replace(self.config.input, joins=self._joins())

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    return pipeline.train_iterator(self._input(), self._train_ops(), self.config.run.train_split, start_step,
                                   self.builder)

  def eval_batches(self, split: str) -> Iterator[base.Batch]:
    return pipeline.eval_iterator(self._input(), self._eval_ops(), split, self.builder)

  def predict_fns(self) -> dict[str, Callable]:
    return {"predict": steps.predict_step}

  def best_metric(self) -> tuple[str, str]:
    return f"val/{NETWORK}_psnr", "max"

  def validate(self, state, mesh, predict) -> dict[str, float]:
    return self.validation_metrics(self.evaluate_batches(state, self.eval_batches(self.config.run.val_split),
                                                         mesh, predict, baselines=False))

  def evaluate_batches(self, state, batches, mesh, predict, keep_examples=0, baselines=True) -> base.Evaluation:
    """Hole PSNR / SSIM / L1 of the network (and of OpenCV's methods on the same inputs and masks)."""
    methods = METHODS if baselines else (NETWORK,)
    outputs = inference.predict_over(predict, state, batches, mesh, self.host_inputs)
    rows, ids, examples = base.gather_examples(outputs, functools.partial(self.per_example, methods=methods),
                                               keep_examples)
    return self.summarize(rows, ids, examples, methods)

  def per_example(self, batch, outputs, real, kept, methods=METHODS) -> dict[str, np.ndarray]:
    """Each image's hole scores of `methods` (the network's output and OpenCV's fills); figures
    show only images with holes."""
    acc = metrics.InpaintingAccumulator(methods)
    for j, i in enumerate(real):
      image, target = (figures.to_uint8_rgb((batch[k][i] + 1) / 2) for k in ("image", "target"))
      holes = batch["mask"][i, ..., 0] < 0.5
      filled = {NETWORK: figures.to_uint8_rgb(np.clip((outputs[i] + 1) / 2, 0, 1))}
      filled.update({m: metrics.opencv_inpaint(image, holes, m) for m in methods if m != NETWORK})
      acc.update(filled, target, holes)
      if kept.wants(j) and holes.any():
        kept.add(image=image, holes=holes, target=target, **filled)
    return acc.per_image()

  def summarize(self, rows, ids, examples, methods=METHODS) -> base.Evaluation:
    rows = rows or metrics.InpaintingAccumulator(methods).per_image()
    return base.Evaluation(metrics.InpaintingAccumulator.summarize(rows, methods), rows, ids, examples)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    ex = evaluation.examples
    if not len(ex.get("image", ())):
      return
    n = min(FIGURE_ROWS, len(ex["image"]))
    columns = {"input": ex["image"][:n], "holes": ex["holes"][:n]}
    columns.update({name: ex[name][:n] for name in METHODS if name in ex})
    columns["truth"] = ex["target"][:n]
    figures.save_column_grid(os.path.join(fig_dir, f"{prefix}_inpainting.png"), columns)

  def inpaint_images(self, state, images: list[np.ndarray], holes: list[np.ndarray], mesh=None,
                     predict=None) -> list[np.ndarray]:
    """uint8 RGB images of any size with their bool hole masks (True = occluded) → the images with
    the holes filled: the network runs at the run's image size, its output is resized back and
    replaces only the hole pixels (every other pixel is kept as it was)."""
    import cv2  # pylint: disable=g-import-not-at-top
    size = self.config.input.image_size
    examples = []
    for image, hole in zip(images, holes):
      small = cv2.resize(np.asarray(hole, np.uint8), (size, size), interpolation=cv2.INTER_AREA) > 0
      examples.append({"image": pipeline.preprocess_image(image, size),
                       "mask": (~small).astype(np.float32)[..., None]})
    outs = runner.predict_examples(self, state, examples, mesh, predict or "predict")
    filled = []
    for image, hole, out in zip(images, holes, outs):
      out = figures.to_uint8_rgb(np.clip((np.asarray(out) + 1) / 2, 0, 1))
      out = cv2.resize(out, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)
      result = np.array(image, np.uint8, copy=True)
      hole = np.asarray(hole, bool)
      result[hole] = out[hole]
      filled.append(result)
    return filled


def train_two_phase(config: InpainterConfig, workdir: str, mesh=None) -> dict[str, Any]:
  """Pipeline 3's inpainter as the purification paper trains it: Adam (`run.num_steps`) in
  <workdir>/initial, then `finetune_steps` of SGD with momentum and the encoder BatchNorm frozen
  from its best state, in <workdir> itself (which holds the final model). finetune_steps=0 trains
  the Adam phase straight into <workdir>. Both phases resume. Returns the final run's metrics."""
  if config.finetune_steps > 0:
    initial = os.path.join(workdir, "initial")
    runner.run(InpaintingTask(config), initial, mesh=mesh)
    run = dataclasses.replace(config.run, num_steps=config.finetune_steps,
                              eval_every=min(config.run.eval_every, config.finetune_steps))
    config = dataclasses.replace(config, finetune_from=initial, run=run)
  return runner.run(InpaintingTask(config), workdir, mesh=mesh)


def inpainter_from_workdir(workdir: str, mesh=None) -> tuple[InpaintingTask, Any]:
  """(task, best state) of a train_inpainter run, with a clear error for another kind of run."""
  task = runner.load(workdir, InpaintingTask, "purify.inpainter_workdir")
  return task, runner.restore(task, workdir, "best", mesh)


def purified_images(inpainter_workdir: str, builder, splits: list[str], root: str,
                    occlusion_config, mesh=None) -> str:
  """Detects the occlusions of every image of `splits` and fills them with the best checkpoint of
  an inpainter run (artifact stages: resumable); returns the purified-image store directory, to
  join as a classifier's images."""
  from lesion_jax.artifacts import occlusion, purify  # pylint: disable=g-import-not-at-top
  task = runner.load(inpainter_workdir, InpaintingTask, "purify.inpainter_workdir")
  state, local, predict, step = runner.process_local_predictor(task, inpainter_workdir, mesh)
  dataset = builder.info.full_name
  occlusions = occlusion.occlusion_store(root, dataset, occlusion_config)
  store = purify.purified_store(root, dataset, inpainter_workdir, step, occlusions)
  inpaint = lambda images, masks: task.inpaint_images(state, images, masks, local, predict)
  for split in splits:
    purify.purify_split(builder, split, store, occlusions, occlusion_config, inpaint)
  return store.directory
