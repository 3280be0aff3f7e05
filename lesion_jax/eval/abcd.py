"""The classical lesion classifiers: scikit-learn (logistic regression, gradient boosting) on
hand-made features of each image, the baselines a network has to beat.

Features (`ABCDConfig.features`): `abcd`, the ABCD measurements of a segmenter's masks
(asymmetry, border: compactness, solidity, colour: the dermoscopic colours present and their
spread, and diameter, as dermatologists' ABCD rule scores them; the ones the lesion crop stage
already records per image, `artifacts.crops`, `measure.measure_lesion` at the image's own
resolution, so one segmenter pass serves the crop classifiers and this baseline); `colour`, colour
statistics of the whole image, no mask needed (`eval/colour_features.py`); or both.

The model (and its regularisation) is chosen by stratified k-fold ROC AUC on the training split
only (one-vs-rest macro mean with more than two classes), then refitted on all of it; the
reported split picks nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from lesion_jax.config import field
from lesion_jax.eval import measure

COLOUR_FEATURES = tuple(f"colour_{name}" for name in measure.DERMOSCOPIC_COLOURS)
# Scale-free by construction: ISIC photographs come at many resolutions and zooms.
FEATURE_NAMES = ("area_fraction", "relative_diameter", "axis_ratio", "asymmetry_major", "asymmetry_minor",
                 "compactness", "solidity", "num_colours", "colour_spread") + COLOUR_FEATURES + ("no_lesion",)


@dataclasses.dataclass(frozen=True)
class ABCDConfig:
  dataset: str = field("isic2017", "TFDS dataset name[/config].")
  data_dir: str | None = field(None, "TFDS data directory (default: ~/tensorflow_datasets).", location=True)
  manual_dir: str | None = field(None, "Folder with the hand-downloaded archive (real datasets).", location=True)
  features: str = field("abcd", "What the model reads: abcd (the ABCD measurements of `masks`), colour (colour "
                        "statistics of the whole image, no mask: eval/colour_features.py) or abcd+colour.")
  masks: str = field("segmenter", "Masks measured for abcd features: segmenter (--segmenter_workdir's best "
                     "checkpoint) or kmeans (K-means pseudo-masks: nothing trained, so every split's masks are "
                     "equally rough).")
  segmenter_workdir: str | None = field(None, "train_segmenter run whose best checkpoint gives the masks measured.",
                                        location=True)
  train_split: str = field("train", "Split the model is chosen on (k-fold) and fitted to.")
  test_split: str = field("test", "Split scored once at the end.")
  label_key: str = field("malignant", "Target feature: malignant (benign/malignant) or label (diagnosis).")
  model: str = field("auto", "logistic, gradient_boosting, hist_gradient_boosting, or auto (the candidate with "
                     "the best k-fold AUC).")
  folds: int = field(5, "Stratified folds over the train split for the model choice.")
  seed: int = field(0, "Seed of the folds and of gradient boosting.")
  crop_size: int = field(64, "Side of the lesion crops stored beside the measurements (shared with "
                         "train_classifier --input=segmented of the same size).")
  fallback: bool = field(False, "Replace the segmenter's catastrophic masks (empty / whole field of view) "
                         "before measuring, as evaluate --fallback does.")


def abcd_features(m: Mapping[str, Any]) -> np.ndarray:
  """The FEATURE_NAMES vector of one `measure.measure_lesion` dict (zeros and no_lesion = 1 for an
  empty mask)."""
  area_fraction = float(m.get("area_fraction", 0.0))
  area = float(m.get("area", 0.0))
  if area <= 0 or area_fraction <= 0:
    return np.array([0.0] * (len(FEATURE_NAMES) - 1) + [1.0])
  image_side = np.sqrt(area / area_fraction)  # sqrt of the image's pixel count, in the mask's unit
  fractions = m.get("colour_fractions", {})
  major = float(m.get("major_axis", 0.0))
  return np.array([area_fraction, float(m["diameter"]) / image_side,
                   float(m["minor_axis"]) / major if major > 0 else 1.0,
                   float(m["asymmetry_major"]), float(m["asymmetry_minor"]), float(m["compactness"]),
                   float(m["solidity"]), float(m["num_colours"]), float(m["colour_spread"])]
                  + [float(fractions.get(name, 0.0)) for name in measure.DERMOSCOPIC_COLOURS] + [0.0])


def feature_table(measurements: Sequence[Mapping[str, Any]]) -> np.ndarray:
  """(N, len(FEATURE_NAMES)) float64."""
  return np.stack([abcd_features(m) for m in measurements]) if measurements else np.zeros((0, len(FEATURE_NAMES)))


FEATURE_SETS = ("abcd", "colour", "abcd+colour")


def candidates(seed: int = 0) -> dict[str, Any]:
  """The scikit-learn models compared: small ones for ~100 training lesions (logistic regression,
  gradient boosting), and histogram gradient boosting on a small grid of learning rates and tree
  sizes for the thousands of an archive (ISIC 2017's 2000), class-balanced like the logistic ones
  (the archives are skewed: the argmax then serves every class, the balanced accuracy)."""
  from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  out = {f"logistic_C{c:g}": make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced",
                                                                                max_iter=2000))
         for c in (0.1, 1.0)}
  out["gradient_boosting"] = GradientBoostingClassifier(n_estimators=100, max_depth=2, learning_rate=0.05,
                                                        subsample=0.8, random_state=seed)
  for iterations in (50, 150):
    for leaves in (7, 15):
      # The number of trees is a grid value, not early stopping: that would hold out a part of
      # each fold's few training examples of the rarest class. l2 and the minimum leaf size keep
      # ~100 features on ~2000 images from memorising them.
      out[f"hist_gradient_boosting_it{iterations}_leaves{leaves}"] = HistGradientBoostingClassifier(
          learning_rate=0.1, max_iter=iterations, max_leaf_nodes=leaves, min_samples_leaf=20,
          l2_regularization=1.0, early_stopping=False, class_weight="balanced", random_state=seed)
  return out


def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  if probs.shape[1] == 2:
    return float(roc_auc_score(labels, probs[:, 1]))
  return float(roc_auc_score(labels, probs, multi_class="ovr"))


def select_and_fit(features: np.ndarray, labels: np.ndarray, model: str = "auto", folds: int = 5,
                   seed: int = 0) -> tuple[Any, dict[str, Any]]:
  """(fitted model, report): each candidate (or the one named) scored by stratified k-fold ROC AUC
  on (features, labels), the best refitted on all of them. The report holds every candidate's
  k-fold AUC, the choice, and its out-of-fold probabilities (`cv_probs`)."""
  from sklearn.base import clone  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import StratifiedKFold, cross_val_predict
  import threadpoolctl
  pool = candidates(seed)
  if model != "auto":
    names = [n for n in pool if n == model or n.startswith(model + "_")]
    if not names:
      raise ValueError(f"model {model!r}: choose auto, logistic, gradient_boosting or hist_gradient_boosting")
    pool = {n: pool[n] for n in names}
  smallest = int(np.bincount(labels).min()) if len(labels) else 0
  if len(np.unique(labels)) < 2 or smallest < folds:
    raise ValueError(f"{folds}-fold selection needs at least {folds} examples of every class; the train split "
                     f"has {np.bincount(labels).tolist()}")
  cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
  scores, oof = {}, {}
  # One OpenMP thread (histogram gradient boosting's): fits this small gain little from threads,
  # and on a busy machine their spin-waiting costs far more (a 120-example fit measured 54 s with
  # the default threads against 1.3 s with one, on 2 cores shared with training runs).
  with threadpoolctl.threadpool_limits(1, user_api="openmp"):
    for name, estimator in pool.items():
      oof[name] = cross_val_predict(clone(estimator), features, labels, cv=cv, method="predict_proba")
      scores[name] = _auc(labels, oof[name])
    best = max(scores, key=lambda n: (scores[n], -list(pool).index(n)))
    fitted = clone(pool[best]).fit(features, labels)
  return fitted, {"cv_roc_auc": scores, "chosen": best, "cv_probs": oof[best]}
