r"""The classical baseline: a scikit-learn classifier on the ABCD measurements (asymmetry, border,
colours, diameter) of a segmenter's masks.

  python -m experiments.abcd_classifier --workdir=runs/abcd --segmenter_workdir=runs/unet \
      --dataset=isic2017 --manual_dir=../shared/data/isic2017_sample --test_split=validation \
      [--model=auto|logistic|gradient_boosting] [--folds=5] [--masks=kmeans (instead of --segmenter_workdir)]

The segmenter's best checkpoint segments every image of both splits once (the lesion crop stage,
resumable; train_classifier --source=crops reuses it). The model is chosen by stratified k-fold
ROC AUC on --train_split alone, refitted on all of it and scored once on --test_split. Writes
config.json, metrics.json (test/* as train_classifier's, cv/* out-of-fold, every candidate's
k-fold AUC), predictions.json (the format experiments.ensemble and balancing_table read) and
figures/test_roc.png. An image that could not be segmented is skipped and counted.
"""
import dataclasses
import os

from absl import app, flags, logging
import numpy as np

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.artifacts import crops, store
from lesion_jax.data import pipeline
from lesion_jax.eval import abcd, figures, metrics
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


def main(argv):
  del argv
  config = common.config_from_flags(abcd.ABCDConfig())
  if config.masks not in ("segmenter", "kmeans"):
    raise app.UsageError(f"--masks={config.masks!r}: choose segmenter or kmeans")
  if config.masks == "segmenter" and not config.segmenter_workdir:
    raise app.UsageError("--segmenter_workdir is required (a train_segmenter run), or --masks=kmeans")
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
  if config.masks == "kmeans":
    crop_dir = crops.kmeans_crops(builder, splits, config.crop_size, root)
  else:
    crop_dir = segmentation.lesion_crops(config.segmenter_workdir, builder, splits, config.crop_size, root,
                                         fallback=config.fallback)
  names = list(features[config.label_key].names)
  train_ids, train_labels, train_m, train_missing = split_measurements(builder, config.train_split, crop_dir, config.label_key)
  test_ids, test_labels, test_m, test_missing = split_measurements(builder, config.test_split, crop_dir, config.label_key)
  try:
    model, report = abcd.select_and_fit(abcd.feature_table(train_m), train_labels, config.model, config.folds,
                                        config.seed)
  except ValueError as e:
    raise config_lib.ConfigError(f"--train_split={config.train_split!r}: {e}") from e
  logging.info("k-fold ROC AUC on %s: %s; chosen %s", config.train_split, report["cv_roc_auc"], report["chosen"])
  test_probs = model.predict_proba(abcd.feature_table(test_m))
  out = {"model": report["chosen"], "candidates_cv_roc_auc": report["cv_roc_auc"], "features": list(abcd.FEATURE_NAMES),
         "train/skipped": len(train_missing), "test/skipped": len(test_missing)}
  out.update({f"cv/{k}": v for k, v in metrics.classification_scores(train_labels, report["cv_probs"], names).items()})
  out.update({f"test/{k}": v for k, v in metrics.classification_scores(test_labels, test_probs, names).items()})
  predictions = {"cv/_predictions": {"ids": train_ids, "labels": train_labels.tolist(),
                                     "probs": report["cv_probs"].tolist()},
                 "test/_predictions": {"ids": test_ids, "labels": test_labels.tolist(), "probs": test_probs.tolist()}}
  io.write_json(os.path.join(FLAGS.workdir, "predictions.json"), predictions)
  io.write_json(os.path.join(FLAGS.workdir, "metrics.json"), out)
  fig_dir = os.path.join(FLAGS.workdir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  if len(names) == 2:
    figures.save_roc_curve(os.path.join(fig_dir, "test_roc.png"), test_labels, test_probs[:, 1],
                           label=f"ABCD {report['chosen']} ({config.test_split})")
  common.print_scores({k: v for k, v in out.items() if isinstance(v, float)})


if __name__ == "__main__":
  common.run(main)
