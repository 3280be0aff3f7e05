"""Lesion Indexing Network task (pipeline 5, Li and Shen 2018): an FCRN that segments and coarsely
classifies in one per-pixel softmax (background + one class per diagnosis), trained on centre-
cropped, proportionally resized images balanced by class-specific rotations (DR; with random
flips, DM); tested at several scales whose maps are summed at each image's own resolution; the
Lesion Index Calculation Unit turns the summed maps into one index per class.

One FCRN per run (`augmentation`: dr, dm or dr+dm); `evaluate_members` scores the sum of several
runs' maps. The LIN = FCRN on DR + FCRN on DM is the `lesion_index_network` pipeline
(network.py).

Scores: the ISIC segmentation scores (JA, thresholded JA, Dice, AC, SE, SP, HD95, boundary F) of
the lesion mask (pixels where the background's share of the summed maps is below one half, holes
filled, largest component kept), and per class the ROC AUC / AP of its index with the LICU
(`licu_*`; ISIC 2017 Part 3's also as `melanoma_roc_auc`, `keratosis_roc_auc`, `mean_roc_auc`) and
without (`mean_*`: class scores averaged over the lesion).

On an archive without lesion masks (isic2017/part3_512), `segmenter_workdir` names a segmenter run
(e.g. the self-learned U-Net) whose masks, stored once as artifacts, stand in for them: the pixel
classes are built from them, and the segmentation scores then measure agreement with that
segmenter (`masks_from` says so), not with a manual truth.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any, Callable, Iterator, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lesion_jax import config as config_lib
from lesion_jax.config import field
from lesion_jax.data import ops, pipeline
from lesion_jax.eval import figures, inference, metrics, postprocess
from lesion_jax import models
from lesion_jax.pipelines.lesion_index import licu
from lesion_jax.pipelines.lesion_index import ops as lin_ops
from lesion_jax.tasks import base, runner, segmentation
from lesion_jax.train import losses, steps
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class FCRNConfig:
  variant: str = field("fcrn_small", "FCRN depth: " + ", ".join(models.names("fcrn")) + " (fcrn88: the paper's).")
  width: int = field(0, "Bottleneck width of the first stage (0: the variant's own).")
  norm: str = field("batch", "Normalisation: batch, group, layer, none.")
  upsample: str = field("depth_to_space", "Learned up-sampling: depth_to_space (fast on CPU) or transpose.")


@dataclasses.dataclass(frozen=True)
class LesionIndexConfig:
  """Everything that defines one FCRN run of the Lesion Indexing Network."""
  input: pipeline.InputConfig = pipeline.InputConfig(image_size=64, batch_size=8)
  model: FCRNConfig = FCRNConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-3, warmup_steps=50)
  label_key: str = field("label", "Diagnosis feature; pixel class = 1 + its value inside the lesion.")
  mask_key: str = field("mask", "Lesion mask feature.")
  rotation_degrees: tuple[float, ...] = field(
      (45.0, 18.0, 18.0), "DR: rotation step per class in the label's order (synthetic_lesions / isic2017: "
      "nevus, melanoma, seborrheic keratosis; the paper: 45, 18, 18); empty: no rotation balancing.")
  augmentation: str = field("dr", "dr: class-specific rotations (the paper's DR); dm: DR with random "
                            "flips (DM); dr+dm: both sets (one FCRN on DR + DM, which the paper found overfits).")
  expanded_shuffle: int = field(1024, "Shuffle buffer of the rotated copies (decoded examples).")
  test_scales: tuple[int, ...] = field((64,), "Test sides in pixels (letterboxed); maps summed at native size.")
  melanoma_class: str = field("melanoma", "Label name scored as melanoma (AUC, AP).")
  keratosis_class: str = field("seborrheic_keratosis", "Label name scored as seborrheic keratosis.")
  best_metric: str = field("jaccard", "Validation score that picks the checkpoint: jaccard (the lesion mask), "
                           "or mean_roc_auc (ISIC 2017 Part 3's ranking score of the LICU index, as a "
                           "classifier's `best_metric`).")
  segmenter_workdir: str | None = field(
      None, "Segmenter run (segmentation or Mask R-CNN) whose best checkpoint's masks stand in for the dataset's "
      "lesion masks wherever this run reads them (the pixel classes trained on, selection, and the mask the "
      "scores compare with): for an archive without masks (isic2017/part3_512). Made once by prepare (the "
      "segmenter-mask artifact stage, tasks/segmentation.segmenter_masks).", location=True)
  mask_artifacts: str | None = field(None, "Artifact store of the masks read instead of the dataset's (made by "
                                     "prepare from segmenter_workdir; recorded in config.json).")
  run: config_lib.RunConfig = config_lib.RunConfig(num_steps=2000, eval_every=500)


# --augmentation -> class_rotations' flip mode.
AUGMENTATIONS = {"dr": "none", "dm": "random", "dr+dm": "both"}
BEST_METRICS = ("jaccard", "mean_roc_auc")


def pixel_classes(batch) -> jax.Array:
  """(N, H, W) int32 targets: 0 background, 1 + label inside the lesion."""
  return jnp.where(batch["mask"][..., 0] > 0.5, batch["label"][:, None, None] + 1, 0).astype(jnp.int32)


def pixel_softmax_loss(logits: jax.Array, target: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean(axis=(1, 2))


def _train_metrics(logits, target, weights):
  pred = jnp.argmax(logits, -1)
  lesion_pred, lesion = pred > 0, target > 0
  inter = jnp.sum(lesion_pred & lesion, axis=(1, 2))
  union = jnp.sum(lesion_pred | lesion, axis=(1, 2))
  ja = jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)
  return {"jaccard": losses.weighted_mean(ja, weights),
          "pixel_accuracy": losses.weighted_mean(jnp.mean(pred == target, axis=(1, 2)), weights)}


def scale_key(size: int) -> str:
  return f"image_{size}"


def native_maps(probs_by_scale: dict[int, np.ndarray], height: int, width: int) -> np.ndarray:
  """(H, W, C) sum over scales of letterboxed (s, s, C) probability maps, each cut to the window
  the image occupied and resized (bilinear) to the image's own size."""
  total = np.zeros((height, width, next(iter(probs_by_scale.values())).shape[-1]), np.float32)
  for size, probs in probs_by_scale.items():
    top, left, nh, nw = ops.letterbox_window(height, width, size)
    window = np.ascontiguousarray(probs[top:top + nh, left:left + nw], np.float32)
    total += cv2.resize(window, (width, height), interpolation=cv2.INTER_LINEAR).reshape(total.shape)
  return total


def lesion_mask(maps: np.ndarray) -> np.ndarray:
  """Lesion where background holds under half of the summed maps; holes filled, largest kept."""
  return postprocess.clean_mask(maps[..., 0] < 0.5 * maps.sum(-1))


def index_records(maps: Sequence[np.ndarray]) -> list[dict[str, Any]]:
  """`predict_images`' records of summed (H, W, 1 + classes) maps: "mask" and the LICU index as
  "probabilities", as evaluation scores them (`LesionIndexTask.per_example`)."""
  records = []
  for m in maps:
    mask = lesion_mask(m)
    records.append({"mask": mask, "probabilities": licu.lesion_index(m, mask)})
  return records


@base.register
class LesionIndexTask(base.Task):
  name = "lesion_index"
  config_cls = LesionIndexConfig
  evaluation_overrides = frozenset({"test_scales"})  # the multi-scale test of the paper
  predicts = frozenset({"mask", "probabilities"})

  @property
  def class_names(self) -> list[str]:
    return list(self.builder.info.features[self.config.label_key].names)

  @property
  def input_keys(self) -> tuple[str, ...]:
    """Training's image, and evaluation's letterboxed image at each test scale."""
    return ("image", *(scale_key(s) for s in self.config.test_scales))

  def model(self):
    m = self.config.model
    return models.get(m.variant, num_classes=1 + len(self.class_names), norm=m.norm, upsample=m.upsample,
                      dtype=self.policy.compute_dtype, width=m.width or None)

  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    if models.family_of(c.model.variant) != "fcrn":
      raise config_lib.ConfigError(f"`model.variant`={c.model.variant!r}: choose one of {list(models.names('fcrn'))}")
    if c.augmentation not in AUGMENTATIONS:
      raise config_lib.ConfigError(f"`augmentation`={c.augmentation!r}: choose one of {list(AUGMENTATIONS)}")
    if c.rotation_degrees and len(c.rotation_degrees) != len(self.class_names):
      raise config_lib.ConfigError(
          f"`rotation_degrees`: {len(c.rotation_degrees)} steps for the {len(self.class_names)} classes "
          f"{self.class_names}")
    if not c.test_scales or min(c.test_scales) < 32:
      raise config_lib.ConfigError(f"`test_scales`={list(c.test_scales)}: give sides of at least 32 px")
    for name in (c.melanoma_class, c.keratosis_class):
      if name not in self.class_names:
        raise config_lib.ConfigError(f"`melanoma_class` / `keratosis_class`: {name!r} is not a {c.label_key!r} of {c.input.dataset} "
                                     f"({self.class_names})")
    if c.best_metric not in BEST_METRICS:
      raise config_lib.ConfigError(f"`best_metric`={c.best_metric!r}: choose one of {list(BEST_METRICS)}")
    if c.segmenter_workdir:
      segmentation.load_segmenter(c.segmenter_workdir, "segmenter_workdir")
    elif c.mask_key not in self.builder.info.features and not c.mask_artifacts:
      raise config_lib.ConfigError(
          f"`input.dataset`={c.input.dataset!r} has no lesion masks (no {c.mask_key!r} feature) to build the pixel "
          "classes from: set `segmenter_workdir` (a segmenter run, e.g. the self-learned U-Net, whose masks are "
          "used), or use a dataset config with masks")
    super().check(mesh, extra_splits)

  def prepare(self, splits) -> "LesionIndexTask":
    """With `segmenter_workdir`: its masks of every split the run reads, stored once (resumable);
    the task then reads them as its masks (`mask_artifacts`, which config.json records)."""
    c = self.config
    if not c.segmenter_workdir or c.mask_artifacts:
      return self
    store = segmentation.segmenter_masks(c.segmenter_workdir, self.builder, list(splits), c.input.artifact_root(),
                                         "segmenter_workdir")
    return LesionIndexTask(dataclasses.replace(c, mask_artifacts=store))

  def _input(self) -> pipeline.InputConfig:
    """The input, with the stored masks joined as `mask_key` where the run reads a segmenter's."""
    c = self.config
    joins = (pipeline.ArtifactJoin(c.mask_key, c.mask_artifacts),) if c.mask_artifacts else ()
    return dataclasses.replace(c.input, joins=joins)

  def init_state(self, rng: jax.Array) -> TrainState:
    size = self.config.input.image_size
    tx = self.config.optimizer.build(self.config.run.num_steps)
    return create_train_state(self.model(), tx, rng, jnp.zeros((1, size, size, 3), jnp.float32))

  def train_step(self) -> Callable:
    return steps.make_supervised_train_step(pixel_classes, pixel_softmax_loss, _train_metrics)

  def _train_ops(self) -> list:
    c = self.config
    size = c.input.image_size
    out = [ops.decode_image("image"), ops.decode_mask(c.mask_key, out="mask"),
           ops.center_crop(("image", "mask")), ops.resize_image("image", size), ops.resize_mask("mask", size),
           ops.label(c.label_key, "label")]
    if c.rotation_degrees:
      out.append(lin_ops.class_rotations("label", c.rotation_degrees, flip=AUGMENTATIONS[c.augmentation]))
    return out + [ops.normalize("image"), ops.keep(("id", "image", "mask", "label"))]

  def _eval_ops(self) -> list:
    c = self.config
    out = [ops.copy(c.mask_key, "mask_encoded"), ops.decode_image("image"), ops.label(c.label_key, "label")]
    for size in c.test_scales:
      out += [ops.letterbox("image", size, out=scale_key(size)), ops.normalize(scale_key(size))]
    return out + [ops.keep(("id", "label", "mask_encoded") + tuple(scale_key(s) for s in c.test_scales))]

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    c = self.config
    return pipeline.train_iterator(self._input(), self._train_ops(), c.run.train_split, start_step, self.builder,
                                   expanded_shuffle=c.expanded_shuffle if c.rotation_degrees else 0)

  def eval_batches(self, split: str) -> Iterator[base.Batch]:
    return pipeline.eval_iterator(self._input(), self._eval_ops(), split, self.builder)

  def predict_fns(self) -> dict[str, Callable]:
    scales = tuple(self.config.test_scales)

    def predict(state, batch):
      out = {}
      for size in scales:
        logits, _ = steps.apply_model(state, state.params, batch[scale_key(size)], train=False)
        out[scale_key(size)] = jax.nn.softmax(logits, axis=-1)
      return out

    return {"predict": predict}

  def example_input(self, image: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    example = {"image": tf.convert_to_tensor(image)}
    for size in self.config.test_scales:
      example = ops.chain([ops.letterbox("image", size, out=scale_key(size)), ops.normalize(scale_key(size))])(
          example, tf.zeros([2], tf.int64))
    return {scale_key(s): example[scale_key(s)].numpy() for s in self.config.test_scales}

  def image_maps(self, state, images: Sequence[np.ndarray], mesh=None, predict: str = "predict"
                 ) -> list[np.ndarray]:
    """(H, W, 1 + classes) maps of uint8 RGB photos of any size, each at the photo's own
    resolution: the sum over `test_scales` of the FCRN's softmax maps, letterboxed and mapped back
    exactly as in evaluation (`native_maps`)."""
    scales = self.config.test_scales
    outputs = runner.predict_examples(self, state, [self.example_input(im) for im in images], mesh, predict)
    return [native_maps({s: out[scale_key(s)] for s in scales}, *im.shape[:2]) for out, im in zip(outputs, images)]

  def predict_images(self, state, images, predict="predict") -> list[dict[str, Any]]:
    """Per photo, from this FCRN's maps summed over its test scales at the photo's resolution:
    "mask" (`lesion_mask`: the photo's own height x width) and "probabilities": the LICU lesion
    index of each of `class_names` (the diagnoses), which sums to 1 by construction
    (`licu.lesion_index`: per-pixel class shares weighted by distance to the lesion border); the
    index the licu_* AUCs rank."""
    return index_records(self.image_maps(state, images, predict=predict))

  def best_metric(self) -> tuple[str, str]:
    return f"val/{self.config.best_metric}", "max"

  def outputs_over(self, state, split, mesh, predict):
    """This FCRN's native maps: `summed_maps` of one member (`evaluate_members` sums several)."""
    return summed_maps([(self, state, predict)], split, mesh)

  def per_example(self, batch, outputs, real, kept) -> dict[str, np.ndarray]:
    """Each image's lesion mask counts and class indices (with the LICU and without), from the
    maps `summed_maps` gives: `outputs` is (truth mask, maps) per real image."""
    acc = metrics.SegmentationAccumulator(boundary=True)
    labels, licu_rows, mean_rows = [], [], []
    for j, (i, (truth, maps)) in enumerate(zip(real, outputs)):
      mask = lesion_mask(maps)
      acc.update(mask[None], truth[None])
      labels.append(int(batch["label"][i]))
      licu_rows.append(licu.lesion_index(maps, mask))
      mean_rows.append(licu.mean_index(maps, mask))
      if kept.wants(j):
        kept.add(image=self.figure_image(batch, i, truth.shape),
                 pred=postprocess.resize_mask(mask, FIGURE_SIZE, FIGURE_SIZE),
                 mask=postprocess.resize_mask(truth, FIGURE_SIZE, FIGURE_SIZE), index=licu_rows[-1])
    n = len(self.class_names)
    return {**acc.counts(), "label": np.asarray(labels, np.int64).reshape(-1),
            "licu": np.asarray(licu_rows, np.float64).reshape(-1, n),
            "mean": np.asarray(mean_rows, np.float64).reshape(-1, n)}

  def summarize(self, rows, ids, examples) -> base.Evaluation:
    c = self.config
    rows = rows or self.per_example({}, [], np.zeros(0, np.int64), base.Kept(0))  # an empty split
    per_image = metrics.scores_from_counts(rows)
    scores = metrics.summarize_segmentation(per_image)
    scores.update(classification_summary(rows["label"], rows["licu"], rows["mean"], self.class_names,
                                         c.melanoma_class, c.keratosis_class))
    if c.mask_artifacts:  # the mask scores measure agreement with that segmenter's masks, not a manual truth
      scores["masks_from"] = c.segmenter_workdir or c.mask_artifacts
    per_image.update(label=rows["label"], licu=rows["licu"], mean=rows["mean"])
    return base.Evaluation(scores, per_image, ids, examples)

  def figure_image(self, batch, i: int, shape: tuple[int, int]) -> np.ndarray:
    """Example `i` of `batch` (its first test scale's input, the image's window of it) as a
    FIGURE_SIZE uint8 RGB image."""
    size = self.config.test_scales[0]
    top, left, nh, nw = ops.letterbox_window(*shape, size)
    shown = (batch[scale_key(size)][i][top:top + nh, left:left + nw] + 1.0) / 2.0
    shown = cv2.resize(np.ascontiguousarray(shown, np.float32), (FIGURE_SIZE, FIGURE_SIZE))
    return figures.to_uint8_rgb(np.clip(shown, 0, 1))

  def validate(self, state, mesh, predict) -> dict[str, float]:
    return self.validation_metrics(self.evaluate(state, self.config.run.val_split, mesh, predict))

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    write_lesion_index_figures(evaluation, fig_dir, prefix, self.class_names, self.config.melanoma_class)


# ----------------------------------------------------------------------------------------------
# Scoring one FCRN or the sum of several (the LIN)


FIGURE_SIZE = 128


def member_maps(task: LesionIndexTask, state, predict, split: str, mesh
                ) -> Iterator[tuple[base.Batch, list[tuple[str, np.ndarray, np.ndarray]]]]:
  """Per host batch of `split` for one FCRN: (the batch, [(id, truth mask, summed native maps)
  per real image])."""
  scales = task.config.test_scales
  for batch, probs in inference.predict_over(predict, state, task.eval_batches(split), mesh, task.host_inputs):
    real = np.flatnonzero(batch["weight"] > 0)
    images = []
    for i, image_id in zip(real, base.decode_ids(batch["id"][real])):
      truth = postprocess.decode_mask(batch["mask_encoded"][i])
      images.append((image_id, truth, native_maps({s: probs[scale_key(s)][i] for s in scales}, *truth.shape)))
    yield batch, images


def summed_maps(members: Sequence[tuple[LesionIndexTask, Any, Callable]], split: str, mesh
                ) -> Iterator[tuple[base.Batch, list[tuple[np.ndarray, np.ndarray]]]]:
  """(host batch, [(truth mask, maps) per real image]) over `split`, batched as the first member
  reads it, each image's maps the sum of every member's native maps (the LIN). The other members
  are read image by image: their batch sizes and scales may differ from the first's."""
  streams = [member_maps(task, state, predict, split, mesh) for task, state, predict in members]
  others = [itertools.chain.from_iterable(images for _, images in stream) for stream in streams[1:]]
  for batch, images in streams[0]:
    summed = []
    for image in images:
      rows = [image] + [next(other, (None, None, None)) for other in others]
      if any(r[0] != image[0] for r in rows):
        raise RuntimeError(f"members read {split} in different orders ({[r[0] for r in rows]})")
      summed.append((image[1], sum(r[2] for r in rows)))
    yield batch, summed


def evaluate_members(members: Sequence[tuple[LesionIndexTask, Any, Callable]], split: str, mesh,
                     keep_examples: int = 0) -> base.Evaluation:
  """Scores the sum of the members' native maps (one member: that FCRN alone, as its `evaluate`)."""
  first = members[0][0]
  for task, _, _ in members[1:]:
    if task.class_names != first.class_names or task.config.input.dataset != first.config.input.dataset:
      raise config_lib.ConfigError("LIN members must be runs on one dataset with the same classes")
  rows, ids, examples = base.gather_examples(summed_maps(members, split, mesh), first.per_example, keep_examples)
  return first.summarize(rows, ids, examples)


def classification_summary(labels, licu_index, mean_index, names, melanoma: str, keratosis: str
                           ) -> dict[str, Any]:
  """Melanoma and seborrheic keratosis ROC AUC, AP and specificity at 82/89/95 % sensitivity of
  the index with the LICU (licu_*) and without (mean_*), their mean AUC (the ISIC 2017 rank), and
  the 3-class accuracy of the largest index; None where a class is missing from the labels. The
  LICU's melanoma, keratosis and mean AUC again as melanoma_roc_auc, keratosis_roc_auc and
  mean_roc_auc (a classifier's names for them)."""
  out: dict[str, Any] = {}
  if not len(labels):
    return out
  for kind, index in (("licu", licu_index), ("mean", mean_index)):
    scores = metrics.classification_scores(labels, index, class_names=names)
    for short, name in (("melanoma", melanoma), ("keratosis", keratosis)):
      entry = scores["per_class"][name]
      out[f"{kind}_{short}_auc"] = entry["roc_auc"]
      out[f"{kind}_{short}_ap"] = entry["average_precision"]
      if short == "melanoma":
        for sens, spec in entry["specificity_at_sensitivity"].items():
          out[f"{kind}_melanoma_spec_at_sens{sens}"] = spec
    aucs = [out[f"{kind}_melanoma_auc"], out[f"{kind}_keratosis_auc"]]
    out[f"{kind}_mean_auc"] = float(np.mean(aucs)) if None not in aucs else None
    out[f"{kind}_accuracy"] = scores["accuracy"]
  # The LICU index is what the LIN predicts ("probabilities"): its ISIC 2017 Part 3 scores also go
  # by the names a classifier's do, so an FCRN or the LIN is a row of the same Task 3 table (and
  # `best_metric`=mean_roc_auc selects on them).
  out.update(melanoma_roc_auc=out["licu_melanoma_auc"], keratosis_roc_auc=out["licu_keratosis_auc"],
             mean_roc_auc=out["licu_mean_auc"])
  return out


def write_lesion_index_figures(evaluation, fig_dir, prefix, names, melanoma) -> None:
  per = evaluation.per_example
  if not len(per["jaccard"]):
    return
  ex = evaluation.examples
  if len(ex.get("pred", ())):
    n = len(ex["pred"])
    titles = [f"{i} {names[int(l)][:4]} JA {j:.2f} mel {ix[names.index(melanoma)]:.2f}"
              for i, l, j, ix in zip(evaluation.ids[:n], per["label"][:n], per["jaccard"][:n], ex["index"])]
    figures.save_overlay_grid(os.path.join(fig_dir, f"{prefix}_overlays.png"), ex["image"], ex["pred"],
                              ex["mask"], titles=titles)
  y = (per["label"] == names.index(melanoma)).astype(np.int64)
  if 0 < y.sum() < len(y):
    c = names.index(melanoma)
    figures.save_roc_curve(os.path.join(fig_dir, f"{prefix}_melanoma_roc.png"),
                           {"with LICU": (y, per["licu"][:, c]), "without LICU": (y, per["mean"][:, c])})
