"""Lesion Feature Network task (Li and Shen 2018, ISIC 2017 task 2: dermoscopic features): every
superpixel of an image becomes a patch (`ops.superpixel_patches`: its bounding box, pixels outside
it zeroed, resized to `patch.size`), labelled background or the feature it shows, and a plain CNN
(`models/lfn.py`) classifies the patches.

Superpixels. The dataset's own `superpixels` feature where it has one (`isic2017_features`: the
official ones), else SLIC superpixel artifacts (`artifacts/superpixels.py`, computed per split
before its stream is built, resumable) joined by id as PNGs in ISIC 2017's RGB index encoding
(`superpixel_source` chooses).

Labels. 0 = background, then `patch.features` (by name; default the ISIC 2017 four: pigment
network, negative network, milia-like cysts, streaks). A name is found among the dataset's
`feature_masks` channels by `patch.mask_channels` (empty: the dataset's own, from its metadata
`feature_names` or `synthetic.FEATURE_NAMES`). A superpixel shows a feature when at least
`patch.min_fraction` of its pixels are in the feature's mask; where several qualify,
`patch.priority` decides (default rarest first as the paper's class weights rank them:
streaks, negative network, milia-like cysts, pigment network).

Training, as the paper: patches balanced in the op (background kept with probability
`balance.keep_probability[0]`, drawn from the op's seed; the `balance.rotate` classes emitted 4
times, rotated by 0/90/180/270 degrees), shuffled in a buffer of `balance.expanded_shuffle`
patches; a class-weighted softmax cross-entropy (`class_weights`, the paper's 1, 1, 5, 3, 8 for
background, pigment network, negative network, milia-like cysts, streaks; `weighted_loss=False`
for the ablation); SGD with momentum 0.9 from 0.01, the rate multiplied by `decay_factor` every
`decay_every` steps (the optimizer's `step_decay` schedule, OptimizerConfig.build, with these two
fields; `decay_every=0` uses optimizer.lr_schedule).

Evaluation scores every patch of the split (no balancing, no rotations): per feature the
one-vs-rest ROC AUC, average precision, sensitivity and specificity (`metrics.classification_scores`;
None where the split has no patch of the feature), their means over the features (`mean_auc`
picks the best checkpoint), the overall accuracy and the confusion matrix. Figures: a grid of
example patches per class and the confusion matrix. Evaluation is single-host (the pipeline's
`eval_iterator` does not split a one-to-many op's outputs over hosts), so `check` refuses a
multi-host run up front.

`input.image_size` and `input.augment` are not read: images are used at their stored resolution
(the superpixel maps join them pixel for pixel) and patches have side `patch.size`.

On a user's photo (`predict_images`): SLIC superpixels at the run's `superpixels` settings (a run
on the dataset's own superpixels too: a photo has none), every superpixel's patch as evaluation
makes it, and per feature the photo's score: the largest probability of the feature over its
superpixels (evaluation ranks the same per-superpixel probabilities in its AUCs).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lesion_jax import config as config_lib
from lesion_jax.artifacts import superpixels as superpixels_lib
from lesion_jax.artifacts.superpixels import SuperpixelConfig
from lesion_jax.config import field
from lesion_jax.data import ops, pipeline
from lesion_jax.eval import figures, metrics
from lesion_jax import models
from lesion_jax.pipelines.lesion_index import ops as lin_ops
from lesion_jax.tasks import base, runner
from lesion_jax.train import losses, steps
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state

ISIC2017_FEATURES = ("pigment_network", "negative_network", "milia_like_cyst", "streaks")
SUPERPIXEL_SOURCES = ("auto", "dataset", "slic")
PATCHES_PER_CLASS_IN_FIGURE = 6


@dataclasses.dataclass(frozen=True)
class LFNModelConfig:
  variant: str = field("lfn", "LFN width: " + ", ".join(models.names("lfn")) + " (models/lfn.py).")
  batchnorm: bool = field(True, "BatchNorm after every conv (--nobatchnorm: the ablation).")


@dataclasses.dataclass(frozen=True)
class PatchConfig:
  size: int = field(56, "Patch side in pixels (the paper's 56).")
  features: tuple[str, ...] = field(ISIC2017_FEATURES, "Feature classes 1..K after background (0), by name.")
  mask_channels: tuple[str, ...] = field((), "Names of the dataset's feature_masks channels in order (empty: "
                                         "the dataset's own: its metadata feature_names, or "
                                         "synthetic.FEATURE_NAMES for synthetic_lesions).")
  min_fraction: float = field(0.5, "A superpixel shows a feature when at least this fraction of its "
                              "pixels is in the feature's mask.")
  priority: tuple[str, ...] = field(("streaks", "negative_network", "milia_like_cyst", "pigment_network"),
                                    "Which feature wins when several qualify, first = highest (rarest first).")


@dataclasses.dataclass(frozen=True)
class BalanceConfig:
  keep_probability: tuple[float, ...] = field(
      (0.1, 1.0, 1.0, 1.0, 1.0), "Training: probability of keeping a patch, per class (background first); "
      "below 1 subsamples the class.")
  rotate: tuple[str, ...] = field(("negative_network", "milia_like_cyst", "streaks"),
                                  "Training: small classes whose patches are emitted rotated by 0/90/180/270.")
  expanded_shuffle: int = field(2048, "Shuffle buffer of the training patches.")


@dataclasses.dataclass(frozen=True)
class FeatureNetworkConfig:
  """Everything that defines one Lesion Feature Network run."""
  input: pipeline.InputConfig = pipeline.InputConfig(dataset="synthetic_lesions/features64", batch_size=64)
  model: LFNModelConfig = LFNModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig(name="sgd", learning_rate=0.01, lr_schedule="constant",
                                               momentum=0.9)
  decay_every: int = field(1000, "Step decay: multiply the learning rate by decay_factor every this many "
                           "steps (0: use optimizer.lr_schedule instead).")
  decay_factor: float = field(0.1, "Step decay factor.")
  class_weights: tuple[float, ...] = field(
      (1.0, 1.0, 5.0, 3.0, 8.0), "Softmax cross-entropy weight per class (background first; the paper's "
      "for background, pigment network, negative network, milia-like cysts, streaks).")
  weighted_loss: bool = field(True, "Weight the loss by class_weights (--noweighted_loss: the ablation).")
  patch: PatchConfig = PatchConfig()
  balance: BalanceConfig = BalanceConfig()
  superpixel_source: str = field("auto", "Superpixels: auto (the dataset's `superpixels` feature where it "
                                 "has one, else SLIC), dataset, or slic (SLIC artifacts).")
  superpixels: SuperpixelConfig = SuperpixelConfig()
  run: config_lib.RunConfig = config_lib.RunConfig(num_steps=3000, eval_every=1000)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: jax.Array | None) -> jax.Array:
  """Per example w[label] * softmax cross-entropy (w = 1 without `class_weights`); the train step
  averages it over the batch (as Caffe's weighted softmax loss: normalised by the number of
  examples, not by the sum of weights)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  if class_weights is None:
    return ce
  return jnp.asarray(class_weights, jnp.float32)[labels] * ce


def _train_metrics(logits, labels, weights):
  return {"accuracy": losses.weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)}


def _mean_defined(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


@base.register
class FeatureNetworkTask(base.Task):
  name = "feature_network"
  config_cls = FeatureNetworkConfig
  predicts = frozenset({"scores"})

  # --- labels and superpixels -----------------------------------------------------------------
  @property
  def class_names(self) -> list[str]:
    return ["background", *self.config.patch.features]

  @functools.cached_property
  def mask_channel_names(self) -> tuple[str, ...]:
    """The names of the dataset's feature_masks channels, in order."""
    c = self.config.patch
    if c.mask_channels:
      return tuple(c.mask_channels)
    names = (self.builder.info.metadata or {}).get("feature_names")
    if names:
      return tuple(names)
    if self.builder.info.name == "synthetic_lesions":
      from lesion_jax.data import synthetic  # pylint: disable=g-import-not-at-top
      return tuple(synthetic.FEATURE_NAMES)
    raise config_lib.ConfigError(f"`patch.mask_channels`: {self.builder.info.full_name} does not name its "
                                 "feature_masks channels; give their names in order")

  def _class_of(self, name: str) -> int:
    return 1 + list(self.config.patch.features).index(name)

  @property
  def uses_dataset_superpixels(self) -> bool:
    source = self.config.superpixel_source
    return source == "dataset" or (source == "auto" and "superpixels" in self.builder.info.features)

  @functools.cached_property
  def superpixel_store(self):
    c = self.config
    return superpixels_lib.superpixel_store(c.input.artifact_root(),
                                            self.builder.info.full_name, c.superpixels)

  def ensure_superpixels(self, split: str) -> None:
    """SLIC superpixels of every image of `split` (computed where missing; resumable)."""
    if self.uses_dataset_superpixels:
      return
    done = self.__dict__.setdefault("_superpixel_splits", set())
    if split not in done:
      superpixels_lib.superpixels_for_split(self.builder, split, self.superpixel_store, self.config.superpixels)
      done.add(split)

  def _input(self) -> pipeline.InputConfig:
    joins = () if self.uses_dataset_superpixels else (
        pipeline.ArtifactJoin(feature="superpixels", directory=self.superpixel_store.directory),)
    return dataclasses.replace(self.config.input, joins=joins)

  # --- the contract ------------------------------------------------------------------------------
  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    err = config_lib.ConfigError
    if jax.process_count() > 1:
      # Refused before anything is written or trained: the run would die at its first validation.
      raise err(f"the Lesion Feature Network runs on one host only (this run has {jax.process_count()} "
                "processes): its evaluation emits a variable number of patches per image (a one-to-many "
                "op), so hosts cannot agree in advance on how many batches each evaluates "
                "(pipeline.eval_iterator); run it as a single process (it may use every local device)")
    if models.family_of(c.model.variant) != "lfn":
      raise err(f"`model.variant`={c.model.variant!r}: choose one of {list(models.names('lfn'))}")
    p = c.patch
    if p.size < 8:
      raise err(f"`patch.size`={p.size}: must be at least 8 (three 2x2 poolings)")
    if not p.features or len(set(p.features)) != len(p.features):
      raise err(f"`patch.features`={list(p.features)}: give one or more distinct feature names")
    if not 0.0 < p.min_fraction <= 1.0:
      raise err(f"`patch.min_fraction`={p.min_fraction}: must be in (0, 1]")
    if sorted(p.priority) != sorted(p.features):
      raise err(f"`patch.priority`={list(p.priority)}: must order exactly the features {list(p.features)}")
    k = len(p.features)
    for field, values in (("class_weights", c.class_weights), ("balance.keep_probability", c.balance.keep_probability)):
      if len(values) != k + 1:
        raise err(f"`{field}`={list(values)}: give {k + 1} values (background, then {list(p.features)})")
    if any(w < 0 for w in c.class_weights):
      raise err(f"`class_weights`={list(c.class_weights)}: must not be negative")
    if any(not 0.0 <= q <= 1.0 for q in c.balance.keep_probability):
      raise err(f"`balance.keep_probability`={list(c.balance.keep_probability)}: probabilities in [0, 1]")
    unknown = [r for r in c.balance.rotate if r not in p.features]
    if unknown:
      raise err(f"`balance.rotate`={list(c.balance.rotate)}: {unknown} not among the features {list(p.features)}")
    if c.superpixel_source not in SUPERPIXEL_SOURCES:
      raise err(f"`superpixel_source`={c.superpixel_source!r}: choose one of {list(SUPERPIXEL_SOURCES)}")
    features = self.builder.info.features
    if "feature_masks" not in features:
      raise err(f"`input.dataset`={c.input.dataset!r}: has no feature_masks (use e.g. synthetic_lesions/features64 "
                "or isic2017_features)")
    if c.superpixel_source == "dataset" and "superpixels" not in features:
      raise err(f"`superpixel_source`=dataset: {self.builder.info.full_name} has no superpixels feature")
    channels = self.mask_channel_names
    if len(channels) != features["feature_masks"].shape[-1]:
      raise err(f"`patch.mask_channels`={list(channels)}: {len(channels)} names for the "
                f"{features['feature_masks'].shape[-1]} feature_masks channels")
    missing = [f for f in p.features if f not in channels]
    if missing:
      raise err(f"`patch.features`: {missing} not among {self.builder.info.full_name}'s feature_masks channels "
                f"{list(channels)}")
    super().check(mesh, extra_splits)

  def model(self):
    m = self.config.model
    return models.get(m.variant, num_classes=len(self.class_names), use_batchnorm=m.batchnorm,
                      dtype=self.policy.compute_dtype)

  def init_state(self, rng: jax.Array) -> TrainState:
    c = self.config
    if c.decay_every > 0:  # the paper's step decay: the optimizer's step_decay schedule, with the LFN's fields
      tx = dataclasses.replace(c.optimizer, lr_schedule="step_decay", decay_every=c.decay_every,
                               decay_factor=c.decay_factor).build(c.run.num_steps)
    else:
      tx = c.optimizer.build(c.run.num_steps)
    size = c.patch.size
    return create_train_state(self.model(), tx, rng, jnp.zeros((1, size, size, 3), jnp.float32))

  def train_step(self) -> Callable:
    c = self.config
    weights = tuple(c.class_weights) if c.weighted_loss else None
    return steps.make_supervised_train_step(
        "label", lambda logits, labels: weighted_cross_entropy(logits, labels, weights), _train_metrics)

  def patch_op(self, train: bool) -> ops.Op:
    """The superpixel patch op: balanced (training) or every patch once (evaluation)."""
    c = self.config
    p, b = c.patch, c.balance
    channels = [self.mask_channel_names.index(f) for f in p.features]
    return lin_ops.superpixel_patches(
        channels, size=p.size, min_fraction=p.min_fraction, priority=[self._class_of(f) for f in p.priority],
        keep_probability=tuple(b.keep_probability) if train else (),
        rotate_classes=tuple(self._class_of(f) for f in b.rotate) if train else ())

  def _ops(self, train: bool) -> list:
    return [ops.decode_image("image"), lin_ops.decode_superpixels("superpixels"), self.patch_op(train),
            ops.keep(("id", "image", "label", "patch_index"))]

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    c = self.config
    self.ensure_superpixels(c.run.train_split)
    return pipeline.train_iterator(self._input(), self._ops(train=True), c.run.train_split, start_step, self.builder,
                                   expanded_shuffle=c.balance.expanded_shuffle)

  def eval_batches(self, split: str) -> Iterator[base.Batch]:
    self.ensure_superpixels(split)
    return pipeline.eval_iterator(self._input(), self._ops(train=False), split, self.builder)

  def predict_fns(self) -> dict[str, Callable]:
    return {"predict": steps.classification_predict_step}

  def example_input(self, image: np.ndarray) -> base.Batch:
    """A uint8 RGB patch image (e.g. one superpixel's crop) resized to the patch size."""
    return {"image": pipeline.preprocess_image(image, self.config.patch.size)}

  def photo_patches(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(superpixel label map (H, W), patches (M, size, size, 3), superpixel of each patch (M,))
    of one uint8 RGB photo: SLIC superpixels at the run's `superpixels` settings (as its artifacts
    are made) and one patch per superpixel, made by the evaluation's own op (`patch_op(False)`;
    the photo has no feature masks, so its labels are background and are not returned)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    image = np.asarray(image)
    labels = superpixels_lib.slic_labels(image, self.config.superpixels)
    example = {"id": tf.constant(""), "image": tf.constant(image), "superpixels": tf.constant(labels),
               "feature_masks": tf.zeros(labels.shape + (len(self.mask_channel_names),), tf.uint8)}
    out = self.patch_op(train=False)(example, tf.zeros([2], tf.int64))
    return labels, out["image"].numpy(), out["patch_index"].numpy()

  def predict_images(self, state, images, predict="predict") -> list[dict[str, Any]]:
    """Per photo, "scores": {feature: the largest probability of the feature over the photo's
    superpixels} (`photo_patches`; evaluation's test/<feature>_auc ranks the same per-superpixel
    probabilities over every superpixel of the split, so this is their photo-level summary: does
    any part of the photo show the feature)."""
    patches = [self.photo_patches(im)[1] for im in images]
    flat = [{"image": p} for ps in patches for p in ps]
    probs = np.asarray(runner.predict_examples(self, state, flat, predict=predict), np.float64) if flat else None
    records, start = [], 0
    for ps in patches:
      p = probs[start:start + len(ps)]
      start += len(ps)
      records.append({"scores": {name: float(p[:, k].max()) for k, name in enumerate(self.class_names) if k}})
    return records

  def best_metric(self) -> tuple[str, str]:
    return "val/best_metric", "max"

  def per_example(self, batch, outputs, real, kept) -> dict[str, np.ndarray]:
    """Each patch's label, class probabilities and superpixel index; with figures asked for, the
    first PATCHES_PER_CLASS_IN_FIGURE patches of each class (not the first few patches: most are
    background)."""
    for i in real if kept.limit else ():
      label = int(batch["label"][i])
      if kept.lists.get("label", []).count(label) < PATCHES_PER_CLASS_IN_FIGURE:
        kept.add(image=batch["image"][i], label=label, pred=int(np.argmax(outputs[i])))
    return {"labels": batch["label"][real].astype(np.int64), "probs": outputs[real].astype(np.float64),
            "patch_index": batch["patch_index"][real].astype(np.int64)}

  def summarize(self, rows, ids, examples) -> base.Evaluation:
    k = len(self.class_names)
    rows = rows or {"labels": np.zeros(0, np.int64), "probs": np.zeros((0, k)), "patch_index": np.zeros(0, np.int64)}
    if examples:  # grouped by class, in reading order within each
      order = np.argsort(examples["label"], kind="stable")
      examples = {"image": examples["image"][order], "label": examples["label"][order].astype(np.int64),
                  "pred": examples["pred"][order].astype(np.int64)}
    return base.Evaluation(self.scores_of(rows["labels"], rows["probs"], len(set(ids))), rows, ids, examples)

  def scores_of(self, labels: np.ndarray, probs: np.ndarray, num_images: int) -> dict:
    """Per feature AUC / AP / sensitivity / specificity (one-vs-rest), their means over the
    features, accuracy, confusion matrix (rows = true class) and patch counts."""
    names = self.class_names
    out = {"num_images": num_images, "num_patches": int(len(labels))}
    if not len(labels):
      return out
    s = metrics.classification_scores(labels, probs, class_names=names)
    out.update(accuracy=s["accuracy"], confusion_matrix=s["confusion_matrix"],
               support={n: s["per_class"][n]["support"] for n in names})
    for name in names:
      entry = s["per_class"][name]
      out[f"{name}_auc"] = entry["roc_auc"]
      out[f"{name}_ap"] = entry["average_precision"]
      out[f"{name}_sensitivity"] = entry["sensitivity"]
      out[f"{name}_specificity"] = entry["specificity"]
    features = names[1:]
    for metric in ("auc", "ap", "sensitivity", "specificity"):
      out[f"mean_{metric}"] = _mean_defined([out[f"{f}_{metric}"] for f in features])
    return out

  def validation_metrics(self, evaluation: base.Evaluation) -> dict[str, float]:
    scores = evaluation.scores
    keys = ["accuracy", "mean_auc", "mean_ap"] + [f"{f}_auc" for f in self.config.patch.features]
    out = {f"val/{k}": float(scores[k]) for k in keys if scores.get(k) is not None}
    best = scores.get("mean_auc")
    out["val/best_metric"] = float(best) if best is not None else float(scores.get("accuracy", 0.0))
    return out

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    names = self.class_names
    if "confusion_matrix" in evaluation.scores:
      figures.save_confusion_matrix(os.path.join(fig_dir, f"{prefix}_confusion.png"),
                                    np.asarray(evaluation.scores["confusion_matrix"]), names)
    ex = evaluation.examples
    if len(ex.get("image", ())):
      titles = [f"{names[t][:12]} -> {names[p][:12]}" for t, p in zip(ex["label"], ex["pred"])]
      shown = np.clip((ex["image"] + 1.0) / 2.0, 0.0, 1.0)  # model input [-1, 1] -> [0, 1]
      figures.save_sample_grid(os.path.join(fig_dir, f"{prefix}_patches.png"), list(shown), titles=titles,
                               ncols=PATCHES_PER_CLASS_IN_FIGURE)
