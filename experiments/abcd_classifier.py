r"""The classical baselines: a scikit-learn classifier on the ABCD measurements (asymmetry, border,
colours, diameter) of a segmenter's masks, on colour statistics of the whole image, or on both.

  python -m experiments.abcd_classifier --workdir=runs/abcd --segmenter_workdir=runs/unet \
      --dataset=isic2017 --manual_dir=../shared/data/isic2017_sample --test_split=validation \
      [--model=auto|logistic|gradient_boosting|hist_gradient_boosting] [--folds=5] \
      [--masks=kmeans (instead of --segmenter_workdir)] [--features=abcd|colour|abcd+colour]

  # ISIC 2017 Part 3's three-way baseline: colour statistics, no masks, no network
  python -m experiments.abcd_classifier --workdir=runs/colour_gb --features=colour --target=label \
      --dataset=isic2017/part3_512 --manual_dir=../shared/data/isic2017_256 --test_split=validation \
      --model=hist_gradient_boosting

With abcd features the segmenter's best checkpoint segments every image of both splits once (the
lesion crop stage, resumable; train_classifier --source=crops reuses it); colour features read the
images themselves (eval/colour_features.py). The model is chosen by stratified k-fold ROC AUC on
--train_split alone, refitted on all of it and scored once on --test_split. Writes config.json,
metrics.json (test/* as train_classifier's, with ISIC 2017 Part 3's scores where the classes are
its; cv/* out-of-fold, every candidate's k-fold AUC), predictions.json (the format
experiments.ensemble and balancing_table read), provenance.json (command, date, commit, machine,
wall time, as experiments.train records them, for experiments.report) and figures/ (test ROC,
reliability diagram, confusion matrix). An image that could not be segmented is skipped and
counted.
"""
import dataclasses
import os
import time

from absl import app, flags, logging
import numpy as np

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io, provenance
from lesion_jax.artifacts import crops, stage, store
from lesion_jax.data import pipeline
from lesion_jax.eval import abcd, colour_features, figures, metrics
from lesion_jax.tasks import base, segmentation

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_string("artifact_dir", None, "Where the crops and measurements are stored (default: <data_dir>/lesion_jax_artifacts).")
common.define_config_flags(abcd.ABCDConfig(), aliases={"target": "label_key"})


def split_measurements(builder, split: str, crop_dir: str, label_key: str
                       ) -> tuple[list[str], np.ndarray, list[dict], list[str]]:
  """(ids, labels, measurement dicts) of the images of `split` the crop stage could segment, and
  the ids of those it could not."""
  ids, labels, found, missing = [], [], [], []
  for ex in pipeline.read_split(builder, split, per_process=False).as_numpy_iterator():
    image_id = base.decode_ids([ex["id"]])[0]
    path = os.path.join(crop_dir, store.safe_name(image_id) + ".json")
    if not os.path.exists(path):
      missing.append(image_id)
      continue
    record = io.read_json(path)
    if "measurements" not in record:
      raise config_lib.ConfigError(f"{path}: a lesion crop made before measurements were recorded; delete "
                                   f"{crop_dir} to recompute it")
    ids.append(image_id)
    labels.append(int(ex[label_key]))
    found.append(record["measurements"])
  if missing:
    logging.warning("%s: %d images have no crop (failed to read or segment; see the stage log), skipped: %s",
                    split, len(missing), missing[:10])
  return ids, np.asarray(labels, np.int64), found, missing


def split_colour_features(builder, split: str, label_key: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(ids, labels, colour feature table) of every image of `split`."""
  ids, labels, rows = [], [], []
  for ex in stage.read_examples(builder, split, features=("id", "image", label_key)):
    ids.append(ex["id"])
    labels.append(int(ex[label_key]))
    rows.append(colour_features.colour_features(ex["image"]))
  return ids, np.asarray(labels, np.int64), np.stack(rows) if rows else np.zeros((0, len(colour_features.FEATURE_NAMES)))


def split_features(builder, split: str, config: abcd.ABCDConfig, crop_dir: str | None
                   ) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
  """(ids, labels, feature table, ids skipped) of `split` for `config.features`: abcd needs the
  image's lesion crop record (images without one are skipped), colour only the image."""
  use_abcd, use_colour = "abcd" in config.features, "colour" in config.features
  if use_abcd:
    ids, labels, measured, missing = split_measurements(builder, split, crop_dir, config.label_key)
    table = abcd.feature_table(measured)
  if use_colour:
    colour_ids, colour_labels, colour_table = split_colour_features(builder, split, config.label_key)
    if not use_abcd:
      return colour_ids, colour_labels, colour_table, []
    row = {image_id: k for k, image_id in enumerate(colour_ids)}
    table = np.concatenate([table, colour_table[[row[i] for i in ids]].reshape(len(ids), -1)], axis=1)
  return ids, labels, table, missing


def feature_names(features: str) -> list[str]:
  return (list(abcd.FEATURE_NAMES) if "abcd" in features else []) + (
      list(colour_features.FEATURE_NAMES) if "colour" in features else [])


def main(argv):
  del argv
  started = time.perf_counter()
  config = common.config_from_flags(abcd.ABCDConfig())
  if config.features not in abcd.FEATURE_SETS:
    raise app.UsageError(f"--features={config.features!r}: choose one of {', '.join(abcd.FEATURE_SETS)}")
  if config.masks not in ("segmenter", "kmeans"):
    raise app.UsageError(f"--masks={config.masks!r}: choose segmenter or kmeans")
  use_abcd = "abcd" in config.features
  if use_abcd and config.masks == "segmenter" and not config.segmenter_workdir:
    raise app.UsageError(f"--segmenter_workdir is required for --features={config.features} (a train_segmenter "
                         "run), or --masks=kmeans, or --features=colour (no masks)")
  builder = pipeline.get_builder(config.dataset, config.data_dir, config.manual_dir, field="dataset")
  features = builder.info.features
  if config.label_key not in features or not hasattr(features[config.label_key], "names"):
    raise config_lib.ConfigError(f"--target={config.label_key!r}: {builder.info.full_name} has no such class feature")
  for flag in ("train_split", "test_split"):
    split = getattr(config, flag)
    try:
      pipeline.num_examples(builder, split)
    except (KeyError, ValueError) as e:
      raise config_lib.ConfigError(f"--{flag}={split!r}: not a split of {builder.info.full_name} ({e})") from e
  common.run_directory(FLAGS.workdir)
  io.write_json(os.path.join(FLAGS.workdir, "config.json"), {"task": "abcd_classifier", "config": dataclasses.asdict(config)})
  root = FLAGS.artifact_dir or store.default_root(config.data_dir)
  splits = [config.train_split, config.test_split]
  crop_dir = None
  if use_abcd and config.masks == "kmeans":
    crop_dir = crops.kmeans_crops(builder, splits, config.crop_size, root)
  elif use_abcd:
    crop_dir = segmentation.lesion_crops(config.segmenter_workdir, builder, splits, config.crop_size, root,
                                         fallback=config.fallback)
  names = list(features[config.label_key].names)
  train_ids, train_labels, train_x, train_missing = split_features(builder, config.train_split, config, crop_dir)
  test_ids, test_labels, test_x, test_missing = split_features(builder, config.test_split, config, crop_dir)
  try:
    model, report = abcd.select_and_fit(train_x, train_labels, config.model, config.folds, config.seed)
  except ValueError as e:
    raise config_lib.ConfigError(f"--train_split={config.train_split!r}: {e}") from e
  logging.info("k-fold ROC AUC on %s: %s; chosen %s", config.train_split, report["cv_roc_auc"], report["chosen"])
  test_probs = model.predict_proba(test_x)
  out = {"model": report["chosen"], "candidates_cv_roc_auc": report["cv_roc_auc"],
         "features": feature_names(config.features), "train/skipped": len(train_missing),
         "test/skipped": len(test_missing), "test/split": config.test_split}
  out.update({f"cv/{k}": v for k, v in metrics.classification_scores(train_labels, report["cv_probs"], names).items()})
  out.update({f"test/{k}": v for k, v in metrics.classification_scores(test_labels, test_probs, names).items()})
  predictions = {"cv/_predictions": {"ids": train_ids, "labels": train_labels.tolist(),
                                     "probs": report["cv_probs"].tolist()},
                 "test/_predictions": {"ids": test_ids, "labels": test_labels.tolist(), "probs": test_probs.tolist()}}
  io.write_json(os.path.join(FLAGS.workdir, "predictions.json"), predictions)
  io.write_json(os.path.join(FLAGS.workdir, "metrics.json"), out)
  fig_dir = os.path.join(FLAGS.workdir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  label = f"{config.features} {report['chosen']} ({config.test_split})"
  if len(names) == 2:
    figures.save_roc_curve(os.path.join(fig_dir, "test_roc.png"), test_labels, test_probs[:, 1], label=label)
  else:  # one-vs-rest per class, as train_classifier draws them
    figures.save_roc_curve(os.path.join(fig_dir, "test_roc.png"),
                           {f"{name} vs rest": ((test_labels == k).astype(int), test_probs[:, k])
                            for k, name in enumerate(names)})
  figures.save_reliability_diagram(os.path.join(fig_dir, "test_reliability.png"), test_labels, test_probs,
                                   title=label)
  figures.save_confusion_matrix(os.path.join(fig_dir, "test_confusion.png"),
                                np.asarray(out["test/confusion_matrix"]), names)
  provenance.record(FLAGS.workdir, None, {}, time.perf_counter() - started)
  common.print_scores({k: v for k, v in out.items() if isinstance(v, float)})


if __name__ == "__main__":
  common.run(main)
