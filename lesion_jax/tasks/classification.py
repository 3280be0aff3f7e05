"""Classification task: LeNet-5 / AlexNet / ResNet on raw images or lesion crops, with optional
class-balanced sampling and k-fold cross-validation (runner.cross_validate)."""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lesion_jax import config as config_lib
from lesion_jax.artifacts import occlusion as occlusion_lib
from lesion_jax.config import field
from lesion_jax.data import ops, pipeline, selection
from lesion_jax.eval import figures, metrics, postprocess
from lesion_jax import models
from lesion_jax.tasks import base, calibration, runner, segmentation
from lesion_jax.train import sharding, steps
from lesion_jax.train.state import OptimizerConfig, TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class ClassifierModelConfig:
  name: str = field("lenet5", "Classifier network: " + ", ".join(models.names("classifier")) + ".")
  width: float = field(1.0, "Channel multiplier (AlexNet conv channels; ResNet base width 64*width).")
  init_weights: str | None = field(None, "Initial ResNet weights from a local torchvision state dict (.npz from "
                                   "experiments/export_torchvision_weights.py, or .pth with torch installed); the "
                                   "model then pads as torchvision does and uses its 7x7 stem. The head is kept "
                                   "fresh when its class count differs.", location=True)
  init_from: str | None = field(None, "A train_classifier run of the same network (e.g. on synthetic_lesions) "
                                "whose best checkpoint initialises this one (pretrain, then fine-tune): every "
                                "weight and BatchNorm statistic of the same path and shape is copied, the rest "
                                "(a head for another class count) stays freshly initialised.", location=True)


@dataclasses.dataclass(frozen=True)
class LesionCropConfig:
  """Segmented input: the segmenter's mask ANDed with the image, cropped to the lesion's box
  (plus a margin) and resized (artifacts/crops.py); the same function serves training and predict."""
  segmenter_workdir: str | None = field(None, "train_segmenter run whose best checkpoint makes the crops.",
                                        location=True)
  margin: float = field(0.1, "Margin around the lesion's bounding box, fraction of its size.")
  black_out: bool = field(True, "Black out the skin around the lesion (mask AND image).")
  fallback: bool = field(False, "Replace the segmenter's catastrophic masks (empty / whole field of view) "
                         "by its map cut at its own threshold before cropping, as evaluate --fallback does "
                         "(training crops and predict alike).")


@dataclasses.dataclass(frozen=True)
class PurifyConfig:
  """Purified input (pipeline 3): hairs and ruler marks detected classically (artifacts/occlusion.py)
  and filled by an inpainter run; stored once as artifacts, and replayed by predict on each photo."""
  inpainter_workdir: str | None = field(None, "train_inpainter run whose best checkpoint fills the detected "
                                        "occlusions.", location=True)
  occlusion: occlusion_lib.OcclusionConfig = occlusion_lib.OcclusionConfig()


SOURCES = ("raw", "crops", "purified")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  input: pipeline.InputConfig = pipeline.InputConfig(batch_size=32)
  model: ClassifierModelConfig = ClassifierModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-3, warmup_steps=50)  # Adam's; SGD's: OPTIMIZER_DEFAULTS
  label_key: str = field("malignant", "Target feature: malignant (benign/malignant) or label (diagnosis).")
  label_smoothing: float = field(0.0, "Label smoothing.")
  run: config_lib.RunConfig = config_lib.RunConfig(num_steps=800, eval_every=200)
  balanced: bool = field(True, "Class-balanced sampling (online: every class equally often per minibatch); "
                         "on by default, as dermoscopy archives are skewed (--nobalanced: the split's own ratio).")
  class_weighting: str = field("none", "Loss weights per class: none, or inverse_frequency (n / (C n_c) "
                               "from the train split).")
  generated: str | None = field(None, "train_gan run whose generated images fill the scarce classes of the "
                                "train split up to the largest (near-copies left out).", location=True)
  folds: int = field(1, "k-fold cross-validation over the train split (the AlexNet paper used 5).")
  best_metric: str = field("roc_auc", "Validation score that picks the checkpoint (accuracy where undefined); "
                           "mean_roc_auc: ISIC 2017 Part 3's ranking score (melanoma and keratosis ROC AUC).")
  source: str = field("raw", "What the classifier reads, in training and in predict: raw (the images), crops "
                      "(lesion crops made with crop.segmenter_workdir's masks) or purified (occlusions filled by "
                      "purify.inpainter_workdir).")
  image_artifacts: str | None = field(None, "Artifact store of the crops or purified images read instead of the "
                                      "images (made by the task's prepare; set for evaluation only).")
  crop: LesionCropConfig = LesionCropConfig()
  purify: PurifyConfig = PurifyConfig()
  calibrate: bool = field(False, "After training, fit softmax temperatures on the selection split (`run.val_split`, "
                          "e.g. `run.holdout`'s part; never the reported split) by their NLL, one for the plain and "
                          "one for the TTA predictions, kept in calibration.json: the final splits report "
                          "ece_calibrated beside ece and a reliability diagram, and evaluate and predict (with or "
                          "without --tta) give the calibrated probabilities.")


CALIBRATION_FILE = calibration.CALIBRATION_FILE


# Defaults that depend on the optimiser: ClassifierConfig's own (learning rate 1e-3) are sized for
# Adam; SGD with momentum 0.9 at 1e-3 moves AlexNet's weights ~20x less per step than Adam does (it
# stays at chance, predicting one class). The SGD values are AlexNet's own recipe (Krizhevsky et
# al. 2012: rate 0.01, momentum 0.9, weight decay 5e-4; the mask-then-AlexNet paper gives no rate).
# with_optimizer_defaults applies them to the fields not set explicitly; the resolved values are
# what config.json records and what runs.
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"learning_rate": 1e-2, "momentum": 0.9, "weight_decay": 5e-4},
}


def with_optimizer_defaults(config: ClassifierConfig, given: Iterable[str] = ()) -> ClassifierConfig:
  """`config` with OPTIMIZER_DEFAULTS[config.optimizer.name] in the optimizer fields (names of
  OptimizerConfig fields) that are not in `given`, the ones set explicitly (e.g. by a flag)."""
  given = set(given)
  defaults = OPTIMIZER_DEFAULTS.get(config.optimizer.name, {})
  overrides = {k: v for k, v in defaults.items() if k not in given}
  return dataclasses.replace(config, optimizer=dataclasses.replace(config.optimizer, **overrides)) if overrides else config


@base.register
class ClassificationTask(base.Task):
  name = "classification"
  config_cls = ClassifierConfig
  geometries = ("stretch", "letterbox")
  color_constancy = True
  averages_outputs = True  # class probabilities: fold models and seed ensembles average them
  # Scored on other images than those trained on (e.g. purified ones: purification_table).
  evaluation_overrides = frozenset({"image_artifacts"})
  # The softmax temperature fitted after training (`calibrate`, calibration.json) that predict and
  # the ece_calibrated score apply, fitted for the predict function `calibrated_for` ("predict" or
  # "tta": each has its own); None: the network's own probabilities.
  temperature: float | None = None
  calibrated_for: str = "predict"
  summary_keys = ("accuracy", "balanced_accuracy", "misclassification_rate", "f1", "precision", "recall", "sensitivity",
                  "specificity", "roc_auc", "average_precision", "melanoma_roc_auc", "keratosis_roc_auc", "mean_roc_auc")

  @functools.cached_property
  def class_names(self) -> list[str]:
    return list(self.builder.info.features[self.config.label_key].names)

  @classmethod
  def with_dependent_defaults(cls, config: ClassifierConfig, given: Iterable[str]) -> ClassifierConfig:
    """A changed `optimizer.name` brings its OPTIMIZER_DEFAULTS (SGD's rate, momentum and weight
    decay) into the optimizer fields not given too; the config as it is otherwise."""
    given = set(given)
    if "optimizer.name" not in given:
      return config
    return with_optimizer_defaults(config, {p.split(".", 1)[1] for p in given if p.startswith("optimizer.")})

  @property
  def folds(self) -> int:
    return self.config.folds

  @property
  def stratify_key(self) -> str:
    return self.config.label_key

  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    if models.family_of(c.model.name) != "classifier":
      raise config_lib.ConfigError(f"`model.name`={c.model.name!r}: not a classifier; choose one of "
                                   f"{list(models.names('classifier'))}")
    if c.input.image_size < 1:
      raise config_lib.ConfigError(f"`input.image_size`={c.input.image_size}: must be at least 1")
    features = self.builder.info.features
    if c.label_key not in features or not hasattr(features[c.label_key], "names"):
      raise config_lib.ConfigError(f"`label_key`={c.label_key!r}: {self.builder.info.full_name} has no such class "
                                   f"feature (features: {sorted(features)})")
    if c.model.init_weights and not c.model.name.startswith("resnet"):
      raise config_lib.ConfigError(f"`model.init_weights`: torchvision weights load into resnet18 / resnet50, not {c.model.name!r}")
    if c.model.init_weights and not os.path.exists(c.model.init_weights):
      raise config_lib.ConfigError(f"`model.init_weights`={c.model.init_weights}: no such file")
    if c.model.init_from and c.model.init_weights:
      raise config_lib.ConfigError("`model.init_from` and `model.init_weights`: give one initialisation, not both")
    if c.model.init_from:
      self._check_init_from()
    if c.class_weighting not in ("none", "inverse_frequency"):
      raise config_lib.ConfigError(f"`class_weighting`={c.class_weighting!r}: choose none or inverse_frequency")
    if c.generated and not os.path.exists(os.path.join(c.generated, "config.json")):
      raise config_lib.ConfigError(f"`generated`={c.generated}: not a GAN run's workdir (no config.json)")
    self._check_calibration(extra_splits)
    self._check_source()
    super().check(mesh, extra_splits)

  def _check_calibration(self, extra_splits) -> None:
    """`calibrate` needs a selection split of its own: not folds, not the reported split."""
    c = self.config
    if not c.calibrate:
      return
    if c.folds > 1:
      raise config_lib.ConfigError(f"`calibrate` with `folds`={c.folds}: a cross-validated run's fold models have no "
                                   "common selection split to fit one temperature on")
    if not c.run.val_split:
      raise config_lib.ConfigError("`calibrate` needs a selection split to fit the temperature on: set "
                                   "`run.val_split` or `run.holdout`")
    reported = [split for field_name, split in extra_splits if field_name == "run.test_split"]
    if c.run.val_split in reported:
      raise config_lib.ConfigError(f"`calibrate`: `run.val_split`={c.run.val_split!r} is the reported split "
                                   "(`run.test_split`): its calibrated scores would be fitted to it; select on "
                                   "another split (`run.holdout`)")

  def _check_source(self) -> None:
    """The run a crops / purified source reads exists and is of the right kind (before any cropping)."""
    c = self.config
    if c.source not in SOURCES:
      raise config_lib.ConfigError(f"`source`={c.source!r}: choose one of {list(SOURCES)}")
    if c.source == "crops":
      if not c.crop.segmenter_workdir:
        raise config_lib.ConfigError("`source`=crops needs `crop.segmenter_workdir` (a segmenter run: "
                                     "segmentation or Mask R-CNN)")
      segmentation.load_segmenter(c.crop.segmenter_workdir, "crop.segmenter_workdir")
    if c.source == "purified":
      if not c.purify.inpainter_workdir:
        raise config_lib.ConfigError("`source`=purified needs `purify.inpainter_workdir` (an inpainter run)")
      from lesion_jax.pipelines.purification import task as inpainting  # pylint: disable=g-import-not-at-top  (inpainting reads classifiers)
      runner.load(c.purify.inpainter_workdir, inpainting.InpaintingTask, "purify.inpainter_workdir")

  @property
  def source(self) -> str:
    """What the classifier reads. Records written before `source` existed name only the crop
    store (`image_artifacts` with the crop's segmenter run): their source is "crops"."""
    c = self.config
    if c.source == "raw" and c.image_artifacts and c.crop.segmenter_workdir:
      return "crops"
    return c.source

  def prepare(self, splits) -> "ClassificationTask":
    """Crops or purified images of every split the run reads, stored once (resumable artifact
    stages, under `input.artifact_root()`); the task then reads them instead of the images."""
    c = self.config
    if c.source == "raw" or c.image_artifacts:
      return self
    builder, root = self.builder, c.input.artifact_root()
    if c.source == "crops":
      store = segmentation.lesion_crops(c.crop.segmenter_workdir, builder, list(splits), c.input.image_size, root,
                           c.crop.margin, c.crop.black_out, fallback=c.crop.fallback)
    else:
      from lesion_jax.pipelines.purification import task as inpainting  # pylint: disable=g-import-not-at-top
      store = inpainting.purified_images(c.purify.inpainter_workdir, builder, list(splits), root,
                                         c.purify.occlusion)
    return ClassificationTask(dataclasses.replace(c, image_artifacts=store))

  def _check_init_from(self) -> None:
    c = self.config
    if not os.path.exists(os.path.join(c.model.init_from, "config.json")):
      raise config_lib.ConfigError(f"`model.init_from`={c.model.init_from}: not a classifier run's workdir (no config.json)")
    source = runner.load(c.model.init_from, ClassificationTask, "model.init_from")
    if (source.config.model.name, source.config.model.width) != (c.model.name, c.model.width):
      raise config_lib.ConfigError(
          f"`model.init_from`={c.model.init_from}: a {source.config.model.name} of width {source.config.model.width:g}, "
          f"not the {c.model.name} of width {c.model.width:g} asked for")

  def init_state(self, rng: jax.Array) -> TrainState:
    c = self.config
    size = c.input.image_size
    model = models.get(c.model.name, num_classes=len(self.class_names), width=c.model.width,
                       dtype=self.policy.compute_dtype, torchvision_padding=bool(c.model.init_weights))
    return create_train_state(model, c.optimizer.build(c.run.num_steps), rng, jnp.zeros((1, size, size, 3), jnp.float32))

  def warm_start(self, state: TrainState) -> TrainState:
    c = self.config
    from lesion_jax import pretrained  # pylint: disable=g-import-not-at-top
    if c.model.init_weights:
      variables, report = pretrained.load_torchvision_resnet(
          c.model.init_weights, {"params": state.params, "batch_stats": state.batch_stats}, return_report=True)
      logging.info("Initial weights from %s: %s", c.model.init_weights, report)
      state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
    if c.model.init_from:  # check() has vetted the run (network, width)
      _, variables, _ = restored_classifier(c.model.init_from, "model.init_from")
      target = model_variables(state)
      try:
        copied, report = pretrained.copy_matching(variables, target)
      except ValueError as e:
        raise config_lib.ConfigError(f"`model.init_from`={c.model.init_from}: {e}") from e
      logging.info("Initial weights from %s: %d leaves copied, kept fresh: %s", c.model.init_from,
                   report["copied"], report["fresh"] or "none")
      state = state.replace(params=copied["params"], batch_stats=copied.get("batch_stats", state.batch_stats))
    return state

  @functools.cached_property
  def class_counts(self) -> np.ndarray:
    c = self.config
    return pipeline.class_counts(self.builder, c.run.train_split, c.label_key, self._joins())

  def class_weights(self) -> tuple[float, ...] | None:
    """inverse_frequency: n / (C n_c) over the classes present (absent ones get 0): each class
    contributes equally to the expected loss."""
    if self.config.class_weighting == "none":
      return None
    counts = self.class_counts.astype(np.float64)
    present = counts > 0
    weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    return tuple(float(w) for w in weights)

  def train_step(self) -> Callable:
    return steps.make_classification_train_step(self.config.label_smoothing, self.class_weights())

  @functools.cached_property
  def generated_examples(self) -> tuple[list[dict], dict]:
    """(records of the generated images that balance the train split, the plan: counts per class)."""
    from lesion_jax.artifacts import generated  # pylint: disable=g-import-not-at-top
    c = self.config
    gan_task = runner.load(c.generated)
    with base.loop.checkpoints_for(c.generated, gan_task.loop_config(), read_only=True) as ckpts:
      step = ckpts.best_step()
    store = generated.generated_store(c.generated, step)
    records = [r for r in generated.generated_records(store) if c.label_key in r]
    chosen, plan = generated.balance_with_generated(self.class_counts, records, c.label_key)
    plan["store"] = store.directory
    plan["classes"] = {self.class_names[int(k)]: v for k, v in plan["classes"].items()}
    return [{**r, "image": open(store.png_path(r["id"]), "rb").read()} for r in chosen], plan

  def _joins(self) -> tuple[pipeline.ArtifactJoin, ...]:
    c = self.config
    return (pipeline.ArtifactJoin("image", c.image_artifacts),) if c.image_artifacts else ()

  def _ops(self, train: bool) -> list:
    c = self.config
    return ops.classification_ops(c.input.image_size, c.input.augment if train else None, label_key=c.label_key,
                                  **pipeline.image_prep(c.input))

  def _input(self) -> pipeline.InputConfig:
    return dataclasses.replace(self.config.input, joins=self._joins())

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    c = self.config
    extra = None
    if c.generated:
      chosen, plan = self.generated_examples
      logging.info("Balancing %s with generated images: %s", selection.split_name(c.run.train_split), plan)
      extra = pipeline.extra_examples(chosen, (c.label_key,)) if chosen else None
    return pipeline.train_iterator(self._input(), self._ops(train=True), c.run.train_split, start_step, self.builder,
                                   balance_key=c.label_key if c.balanced else None, extra=extra)

  def eval_batches(self, split: str) -> Iterator[base.Batch]:
    return pipeline.eval_iterator(self._input(), self._ops(train=False), split, self.builder)

  def predict_fns(self) -> dict[str, Callable]:
    return {"predict": steps.classification_predict_step, "tta": steps.classification_predict_step_tta}

  def best_metric(self) -> tuple[str, str]:
    return "val/best_metric", "max"

  def per_example(self, batch, outputs, real, kept) -> dict[str, np.ndarray]:
    return {"labels": batch["label"][real], "probs": outputs[real]}

  def summarize(self, rows, ids, examples) -> base.Evaluation:
    return self.evaluation_of(rows["labels"], rows["probs"], ids)

  def evaluation_of(self, labels: np.ndarray, probs: np.ndarray, ids: list[str]) -> base.Evaluation:
    scores = metrics.classification_scores(labels, probs, self.class_names)
    if self.temperature is not None:
      # Only the calibration error is rescored: the temperature keeps every argmax, and the ranking
      # scores stay those of the network's own probabilities (metrics.calibration).
      scores["ece_calibrated"] = metrics.expected_calibration_error(labels, self.calibrated(probs))
      scores["temperature"] = self.temperature
    return base.Evaluation(scores, {"labels": labels, "probs": probs}, ids,
                           predictions={"ids": ids, "labels": labels.tolist(), "probs": probs.tolist()})

  def pooled(self, evaluations: list[base.Evaluation]) -> base.Evaluation:
    """One Evaluation of the held-out predictions of every cross-validation fold."""
    return self.evaluation_of(np.concatenate([e.per_example["labels"] for e in evaluations]),
                              np.concatenate([e.per_example["probs"] for e in evaluations]),
                              [i for e in evaluations for i in e.ids])

  def validation_metrics(self, evaluation: base.Evaluation) -> dict[str, float]:
    scores = evaluation.scores
    out = {f"val/{k}": float(scores[k]) for k in ("accuracy", "balanced_accuracy", "f1", "sensitivity", "specificity",
                                                 "roc_auc", "melanoma_roc_auc", "mean_roc_auc")
           if scores.get(k) is not None}
    best = scores.get(self.config.best_metric)
    out["val/best_metric"] = float(best) if best is not None else float(scores["accuracy"])
    return out

  # --- calibration (`calibrate`): a temperature fitted on the selection split after training ---
  def calibrated(self, probs: np.ndarray) -> np.ndarray:
    """`probs` (N, C) at the fitted temperature; as they are where none was fitted."""
    return probs if self.temperature is None else metrics.apply_temperature(probs, self.temperature).astype(probs.dtype)

  def with_temperature(self, temperature: float | None, predict: str = "predict") -> "ClassificationTask":
    """This task predicting with `temperature`, fitted for the predict function `predict`."""
    task = ClassificationTask(self.config)
    task.temperature, task.calibrated_for = temperature, predict
    return task

  def with_overrides(self, **changes: Any) -> "ClassificationTask":
    """base.Task's, keeping the fitted temperature (what the network learnt, not a setting)."""
    return super().with_overrides(**changes).with_temperature(self.temperature, self.calibrated_for)

  def fit_post_hoc(self, state, workdir, mesh) -> "ClassificationTask":
    """With `calibrate`: for each predict function (plain, TTA), the temperature minimising the NLL
    of its probabilities on the selection split, kept in `workdir`/calibration.json
    (tasks/calibration.py); the task returned scores the final splits with the plain one's."""
    c = self.config
    if not c.calibrate:
      return self
    predictions = {}
    for name in self.predict_fns():
      evaluation = self.evaluate(state, c.run.val_split, mesh, self.jit_predict(state, mesh, name))
      predictions[name] = evaluation.per_example["labels"], evaluation.per_example["probs"]
    record = calibration.fit(workdir, predictions, c.run.val_split, int(jax.device_get(state.step)))
    return self.with_temperature(record["predictors"]["predict"]["temperature"])

  def with_post_hoc(self, workdir, which="best", predict="predict") -> "ClassificationTask":
    """With `calibrate`: the temperature of `workdir`/calibration.json for the checkpoint and the
    predict function it was fitted for (another checkpoint predicts with the network's own
    probabilities)."""
    if not self.config.calibrate:
      return self
    return self.with_temperature(calibration.temperature_for(workdir, which, predict), predict)

  def final_splits(self, test_split: str) -> list[tuple[str, str]]:
    return [("train", self.config.run.train_split)] + ([("test", test_split)] if test_split else [])

  def with_splits(self, train_split: str, val_split: str) -> "ClassificationTask":
    run = dataclasses.replace(self.config.run, train_split=train_split, val_split=val_split)
    return ClassificationTask(dataclasses.replace(self.config, run=run, folds=1))

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    names = self.class_names
    figures.save_confusion_matrix(os.path.join(fig_dir, f"{prefix}_confusion.png"),
                                  np.asarray(evaluation.scores["confusion_matrix"]), names)
    label = f"{self.config.model.name} ({'pooled CV' if prefix == 'cv' else prefix})"
    labels, probs = evaluation.per_example["labels"], evaluation.per_example["probs"]
    series = {"network": probs}
    if self.temperature is not None:
      series[f"temperature {self.temperature:.3g}"] = self.calibrated(probs)
    figures.save_reliability_diagram(os.path.join(fig_dir, f"{prefix}_reliability.png"), labels, series, title=label)
    if len(names) == 2:
      figures.save_roc_curve(os.path.join(fig_dir, f"{prefix}_roc.png"), evaluation.per_example["labels"],
                             evaluation.per_example["probs"][:, 1], label=label)
    else:
      labels, probs = evaluation.per_example["labels"], evaluation.per_example["probs"]
      figures.save_roc_curve(os.path.join(fig_dir, f"{prefix}_roc.png"),  # one-vs-rest per class
                             {f"{name} vs rest": ((labels == k).astype(int), probs[:, k]) for k, name in enumerate(names)})

  def classify_images(self, state, images: list[np.ndarray], mesh=None, predict: str = "predict") -> list[np.ndarray]:
    """Class probabilities for uint8 RGB model inputs (what the classifier reads: raw images, lesion
    crops or purified images), preprocessed exactly as in training; `predict`: one of predict_fns
    ("tta": averaged over flips and quarter turns). `state` may be a tuple of
    states (the folds of a cross-validated run, an ensemble): their probabilities are averaged."""
    ensemble = isinstance(state, tuple)
    predict = self.jit_predict(state, mesh or sharding.make_mesh(), name=predict, ensemble=ensemble)
    return runner.predict_examples(self, state, [self.example_input(im) for im in images], mesh, predict)

  @functools.cached_property
  def _source_run(self) -> tuple[base.Task, Any] | None:
    """(task, best state) of the run the source replays on a photo (the crop's segmenter, the
    purifying inpainter); None for raw input."""
    c = self.config
    if self.source == "crops":
      try:
        task = segmentation.load_segmenter(c.crop.segmenter_workdir, "crop.segmenter_workdir")
      except (config_lib.ConfigError, FileNotFoundError) as e:
        raise base.PredictionUnsupported(f"its lesion crops cannot be replayed: {e}") from None
      if c.crop.fallback != task.config.fallback:  # the crops it trained on went through the fallback iff crop.fallback
        task = task.with_overrides(fallback=c.crop.fallback)
      return task, runner.restore(task, c.crop.segmenter_workdir, "best")
    if self.source == "purified":
      from lesion_jax.pipelines.purification import task as inpainting  # pylint: disable=g-import-not-at-top
      try:
        return inpainting.inpainter_from_workdir(c.purify.inpainter_workdir)
      except (config_lib.ConfigError, FileNotFoundError) as e:
        raise base.PredictionUnsupported(f"its purification cannot be replayed: {e}") from None
    if c.image_artifacts:
      raise base.PredictionUnsupported(
          f"this classifier read images from {c.image_artifacts} and its record does not say how they were "
          "made (a run from before the source field): retrain it with `source`=crops or `source`=purified")
    return None

  def check_predict(self) -> None:
    self._source_run  # pylint: disable=pointless-statement  (the crop's segmenter / the inpainter, restored once)

  @property
  def predicts(self) -> frozenset[str]:
    return frozenset({"probabilities"} | ({"mask"} if self.source == "crops" else set())
                     | ({"purified"} if self.source == "purified" else set()))

  def predict_images(self, state, images, predict="predict") -> list[dict[str, Any]]:
    """Per photo: "probabilities" over `class_names` (at the run's fitted temperature where it was
    calibrated, `calibrate`), after replaying the run's source: with
    crops, the segmenter's "mask" (the photo's size) and the crop it makes; purified, the
    "purified" photo (occlusions detected and filled). `state` may be a tuple (fold models)."""
    if predict not in self.predict_fns():
      raise base.PredictionUnsupported(f"a classifier has no {predict!r} prediction")
    if self.temperature is not None and predict != self.calibrated_for:
      # A temperature is fitted for one predict function (with_post_hoc's `predict`): the plain
      # predictions' would over-soften TTA's averaged probabilities.
      raise ValueError(f"this classifier's temperature was fitted for {self.calibrated_for!r} predictions, "
                       f"not {predict!r}: load it with with_post_hoc(..., predict={predict!r})")
    records: list[dict[str, Any]] = [{} for _ in images]
    inputs = list(images)
    if self.source == "crops":
      seg_task, seg_state = self._source_run
      c = self.config.crop
      for record, found in zip(records, seg_task.predict_images(seg_state, images)):
        record["mask"] = found["mask"]
      # The same crop as the stored training crops (artifacts/crops.py).
      inputs = [postprocess.crop_to_mask(im, r["mask"], self.config.input.image_size, c.margin, c.black_out)
                for im, r in zip(images, records)]
    elif self.source == "purified":
      inpainter, inpainter_state = self._source_run
      for record, found in zip(records, inpainter.predict_images(inpainter_state, images,
                                                                 occlusion=self.config.purify.occlusion)):
        record["purified"] = found["purified"]
      inputs = [r["purified"] for r in records]
    else:
      self._source_run  # pylint: disable=pointless-statement  (refuses records it cannot replay)
    for record, p in zip(records, self.classify_images(state, inputs, predict=predict)):
      record["probabilities"] = self.calibrated(np.asarray(p)[None])[0]
    return records


def restored_classifier(workdir: str, field: str) -> tuple["ClassificationTask", dict, Callable]:
  """(task, variables, apply_fn) of the best checkpoint of a train_classifier run, on the host: a
  fixed network other tasks read features from (perceptual losses, FD-derm). `field` names the
  config field that gave `workdir`, for the error when it holds another kind of run."""
  task = runner.load(workdir, ClassificationTask, field)
  state = jax.device_get(runner.restore(task, workdir, "best"))
  return task, model_variables(state), state.apply_fn


def model_variables(state: TrainState) -> dict:
  """The Flax variables dict of a train state: params, and batch_stats where the model has them."""
  return {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
