"""Classification task: LeNet-5 / AlexNet / ResNet on raw images or lesion crops, with optional
class-balanced sampling and k-fold cross-validation, through the shared loop."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax import checkpoint, io
from lesion_jax.data import pipeline
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.eval import figures, inference, metrics
from lesion_jax.models.classifiers import build_classifier
from lesion_jax.tasks import config as config_lib
from lesion_jax.train import loop, sharding, steps
from lesion_jax.train.state import TrainState, create_train_state, learning_rate_schedule, make_optimizer


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  input: pipeline.InputConfig = pipeline.InputConfig(task="classification", label_key="malignant")
  model: str = "lenet5"
  width: float = 1.0
  dtype: str = "float32"
  optimizer: str = "adam"
  learning_rate: float = 1e-3
  lr_schedule: str = "cosine"
  warmup_steps: int = 50
  weight_decay: float = 0.0
  label_smoothing: float = 0.0
  num_steps: int = 1000
  eval_every: int = 250
  log_every: int = 50
  balanced: bool = False  # class-balanced sampling
  train_split: str = "train"
  val_split: str = "validation"  # "" = no validation: keep the last checkpoint
  best_metric: str = "roc_auc"  # picks the checkpoint; accuracy when AUC is undefined
  image_artifacts: str | None = None  # lesion crops (segmented input) instead of raw images

  @classmethod
  def from_flat_dict(cls, values: dict[str, Any]) -> "ClassifierConfig":
    values = dict(values, task="classification")
    return config_lib.from_flat_dict(cls, values)

  def effective_input(self) -> pipeline.InputConfig:
    if not self.image_artifacts:
      return self.input
    return dataclasses.replace(self.input, joins=(pipeline.ArtifactJoin("image", self.image_artifacts),))


def class_names(config: ClassifierConfig, builder=None) -> list[str]:
  builder = builder or pipeline.get_builder(config.input.dataset, config.input.data_dir, config.input.manual_dir)
  return list(builder.info.features[config.input.label_key].names)


def init_state(config: ClassifierConfig, num_classes: int, rng: jax.Array) -> TrainState:
  size = config.input.image_size
  model = build_classifier(config.model, num_classes, config.width, jnp.dtype(config.dtype))
  schedule = learning_rate_schedule(config.lr_schedule, config.learning_rate, config.num_steps, config.warmup_steps)
  tx = make_optimizer(config.optimizer, schedule, weight_decay=config.weight_decay)
  return create_train_state(model, tx, rng, jnp.zeros((1, size, size, 3), jnp.float32))


def predict_probs(state: TrainState, batches: Iterator[dict[str, np.ndarray]], mesh, predict=None
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(labels, probabilities (N, C), ids) over every real (non-padding) example of `batches`
  (of every host's batches, in a multi-host run)."""
  predict = predict or sharding.jit_predict_step(steps.classification_predict_step, state, mesh)
  labels, probs, ids = [], [], []
  for batch, out in inference.predict_over(predict, state, batches, mesh):
    real = batch["weight"] > 0
    labels.append(batch["label"][real])
    probs.append(out[real])
    ids.extend(i.decode() if isinstance(i, bytes) else str(i) for i in batch["id"][real])
  # Each host predicted its own shard of the split; every host scores all of it.
  rows = sharding.allgather_rows({"labels": np.concatenate(labels), "probs": np.concatenate(probs)})
  return rows["labels"], rows["probs"], sharding.allgather_strings(ids)


def _best_value(scores: dict[str, Any], name: str) -> float:
  value = scores.get(name)
  return float(value) if value is not None else float(scores["accuracy"])


def train(config: ClassifierConfig, workdir: str, mesh=None) -> TrainState:
  """Trains (or resumes) in `workdir`; returns the best state by validation `best_metric`."""
  mesh = mesh or sharding.make_mesh()
  data = config.effective_input()
  builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir)
  names = class_names(config, builder)
  rng_init, rng_train = jax.random.split(jax.random.key(data.seed))
  state = init_state(config, len(names), rng_init)
  eval_input = dataclasses.replace(data, augment=AugmentConfig.off())
  predict = sharding.jit_predict_step(steps.classification_predict_step, sharding.replicate(state, mesh), mesh)

  def validate(s: TrainState) -> dict[str, float]:
    labels, probs, _ = predict_probs(s, pipeline.eval_batches(eval_input, config.val_split, builder), mesh, predict)
    scores = metrics.classification_scores(labels, probs, names)
    out = {f"val/{k}": float(scores[k]) for k in ("accuracy", "f1", "sensitivity", "specificity",
                                                 "roc_auc") if scores.get(k) is not None}
    out["val/best_metric"] = _best_value(scores, config.best_metric)
    return out

  loop_config = loop.LoopConfig(num_steps=config.num_steps, batch_size=data.batch_size,
                                eval_every=config.eval_every, log_every=config.log_every,
                                best_metric=_best_metric(config), best_mode="max")
  loop.train(state, steps.make_classification_train_step(config.label_smoothing),
             lambda start: pipeline.train_batches(data, start, config.train_split, builder, config.balanced),
             validate if config.val_split else None, workdir, loop_config, rng_train, mesh)
  return restore(workdir, config, len(names), "best", mesh)


def _best_metric(config: ClassifierConfig) -> str | None:
  """Checkpoints are ranked on the validation split; without one the latest is "best"."""
  return "val/best_metric" if config.val_split else None


def restore(workdir: str, config: ClassifierConfig, num_classes: int, which: checkpoint.Which = "best",
            mesh=None) -> TrainState:
  mesh = mesh or sharding.make_mesh()
  template = sharding.replicate(init_state(config, num_classes, jax.random.key(0)), mesh)
  with checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), _best_metric(config), read_only=True) as c:
    return c.restore(template, which)  # into the mesh's sharding, as segmentation.restore


def score_split(state: TrainState, config: ClassifierConfig, split: str, mesh=None,
                figure_dir: str | None = None, prefix: str | None = None) -> dict[str, Any]:
  """Classification scores on `split` (metrics.classification_scores), with ROC and confusion
  figures when `figure_dir` is given; keys prefixed with `prefix` (default: the split)."""
  mesh = mesh or sharding.make_mesh()
  data = dataclasses.replace(config.effective_input(), augment=AugmentConfig.off())
  builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir)
  names = class_names(config, builder)
  labels, probs, ids = predict_probs(state, pipeline.eval_batches(data, split, builder), mesh)
  scores = metrics.classification_scores(labels, probs, names)
  prefix = prefix or split
  if figure_dir:
    figures.save_confusion_matrix(os.path.join(figure_dir, f"{prefix}_confusion.png"),
                                  np.asarray(scores["confusion_matrix"]), names)
    if len(names) == 2:
      figures.save_roc_curve(os.path.join(figure_dir, f"{prefix}_roc.png"), labels, probs[:, 1],
                             label=f"{config.model} ({prefix})")
  out = {f"{prefix}/{k}": v for k, v in scores.items()}
  out[f"{prefix}/_predictions"] = {"ids": ids, "labels": labels.tolist(), "probs": probs.tolist()}
  return out


def fold_splits(split: str, num_examples: int, folds: int, fold: int) -> tuple[str, str]:
  """(train, held-out) TFDS split strings of fold `fold` of a `folds`-fold split of `split`
  (contiguous index ranges, so every example is held out exactly once)."""
  if not 0 <= fold < folds or folds < 2:
    raise ValueError(f"fold {fold} of {folds} is not valid (need folds >= 2 and 0 <= fold < folds)")
  a, b = fold * num_examples // folds, (fold + 1) * num_examples // folds
  train = "+".join(p for p in ((f"{split}[:{a}]" if a > 0 else ""),
                               (f"{split}[{b}:]" if b < num_examples else "")) if p)
  return train, f"{split}[{a}:{b}]"


SUMMARY_KEYS = ("accuracy", "misclassification_rate", "f1", "precision", "recall", "sensitivity",
                "specificity", "roc_auc", "average_precision")


def run(config: ClassifierConfig, workdir: str, folds: int = 1, test_split: str = "test",
        mesh=None) -> dict[str, Any]:
  """Trains and scores a classifier; with `folds` > 1, k-fold cross-validation over the train
  split (fold models in `workdir`/fold_i), reporting the pooled held-out predictions and the
  mean/std over folds. Writes `metrics.json` and figures; returns the metrics."""
  mesh = mesh or sharding.make_mesh()
  fig_dir = os.path.join(workdir, "figures")
  if folds <= 1:
    state = train(config, workdir, mesh)
    result = {}
    result.update(score_split(state, config, config.train_split, mesh, prefix="train"))
    result.update(score_split(state, config, test_split, mesh, fig_dir, prefix="test"))
    _save_history_figure(workdir)
  else:
    data = config.effective_input()
    builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir)
    n = builder.info.splits[config.train_split].num_examples
    per_fold, pooled = [], {"ids": [], "labels": [], "probs": []}
    for fold in range(folds):
      train_split, held_out = fold_splits(config.train_split, n, folds, fold)
      fold_config = dataclasses.replace(config, train_split=train_split, val_split=held_out)
      fold_dir = os.path.join(workdir, f"fold_{fold}")
      state = train(fold_config, fold_dir, mesh)
      scores = {}
      scores.update(score_split(state, fold_config, train_split, mesh, prefix="train"))
      scores.update(score_split(state, fold_config, held_out, mesh, prefix="cv"))
      scores.update(score_split(state, fold_config, test_split, mesh, os.path.join(fold_dir, "figures"), prefix="test"))
      io.write_json(os.path.join(fold_dir, "metrics.json"), scores)
      per_fold.append(scores)
      for k in pooled:
        pooled[k].extend(scores["cv/_predictions"][k])
    names = class_names(config, builder)
    pooled_scores = metrics.classification_scores(np.asarray(pooled["labels"]), np.asarray(pooled["probs"]), names)
    result = {f"cv/{k}": v for k, v in pooled_scores.items()}
    for prefix in ("train", "cv", "test"):
      for k in SUMMARY_KEYS:
        values = [f[f"{prefix}/{k}"] for f in per_fold if f.get(f"{prefix}/{k}") is not None]
        if values:
          result[f"{prefix}/{k}_fold_mean"] = float(np.mean(values))
          result[f"{prefix}/{k}_fold_std"] = float(np.std(values))
    result["folds"] = folds
    figures.save_confusion_matrix(os.path.join(fig_dir, "cv_confusion.png"),
                                  np.asarray(pooled_scores["confusion_matrix"]), names)
    if len(names) == 2:
      figures.save_roc_curve(os.path.join(fig_dir, "cv_roc.png"), np.asarray(pooled["labels"]),
                             np.asarray(pooled["probs"])[:, 1], label=f"{config.model} (pooled CV)")
  predictions = {k: result.pop(k) for k in list(result) if k.endswith("/_predictions")}
  io.write_json(os.path.join(workdir, "predictions.json"), predictions)
  io.write_json(os.path.join(workdir, "metrics.json"), result)
  return result


def _save_history_figure(workdir: str) -> None:
  path = os.path.join(workdir, "history.json")
  if os.path.exists(path):
    figures.save_curves(os.path.join(workdir, "figures", "curves.png"), io.read_json(path))


def load_config(workdir: str) -> ClassifierConfig:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} the --workdir of a train_classifier run?")
  return ClassifierConfig.from_flat_dict(io.read_json(path))


def classify_images(state: TrainState, config: ClassifierConfig, images: list[np.ndarray],
                    mesh=None) -> list[np.ndarray]:
  """Class probabilities for uint8 RGB model inputs (raw images, or lesion crops for a classifier
  trained on segmented input), preprocessed exactly as in training."""
  mesh = mesh or sharding.make_mesh()
  predict = sharding.jit_predict_step(steps.classification_predict_step, state, mesh)
  inputs = [pipeline.preprocess_image(im, config.input.image_size) for im in images]
  return inference.predict_arrays(predict, state, inputs, config.input.batch_size, mesh)
