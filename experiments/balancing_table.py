r"""The data-generation comparison: classifiers trained on imbalanced data without balancing, with a
class-weighted loss, with online class-balanced minibatches, and with de-coupled / coupled GAN
images filling the scarce classes, scored as ISIC 2017 Part 3 and ISIC 2018 Task 3 rank them.

  python -m experiments.balancing_table --workdir=runs/balancing_table \
      --classifiers=none:runs/clf_none,weighted:runs/clf_weighted,online:runs/clf_balanced,\
decoupled_gan:runs/clf_gan_decoupled,coupled_gan:runs/clf_gan_coupled [--split=test]

Each classifier is a finished train_classifier run (its metrics.json and predictions.json).
Writes <workdir>/balancing_table.json, balancing_table.md (balanced accuracy, macro ROC AUC,
melanoma and keratosis ROC AUC and their mean, melanoma specificity at 82 / 89 / 95 %
sensitivity, per-class ROC AUC), and figures/melanoma_roc.png (every run's melanoma-vs-rest ROC).
"""
import os

import numpy as np
from absl import flags

from experiments import common
from lesion_jax import io
from lesion_jax.eval import figures
from lesion_jax.eval import metrics as metrics_lib

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_list("classifiers", None, "name:workdir of train_classifier runs.")
flags.mark_flag_as_required("classifiers")
flags.DEFINE_string("split", "test", "Metrics prefix scored (the runs' final split).")


def _fmt(v) -> str:
  return "–" if v is None else f"{v:.3f}"


def row_of(metrics: dict, split: str) -> dict:
  """The table's entries of one run's metrics.json."""
  # The ISIC 2017 Part 3 scores are top-level keys; runs written before that kept them under "isic2017".
  isic = metrics.get(f"{split}/isic2017") or {k: metrics.get(f"{split}/{k}") for k in metrics_lib.ISIC2017_KEYS}
  sas = isic.get("melanoma_specificity_at_sensitivity") or {}
  per_class = metrics.get(f"{split}/per_class", {})
  return {"accuracy": metrics.get(f"{split}/accuracy"), "balanced_accuracy": metrics.get(f"{split}/balanced_accuracy"),
          "macro_roc_auc": metrics.get(f"{split}/roc_auc"), "melanoma_roc_auc": isic.get("melanoma_roc_auc"),
          "keratosis_roc_auc": isic.get("keratosis_roc_auc"), "mean_roc_auc": isic.get("mean_roc_auc"),
          **{f"melanoma_spec_at_sens_{k}": v for k, v in sas.items()},
          "per_class_roc_auc": {k: v.get("roc_auc") for k, v in per_class.items()},
          "per_class_recall": {k: v.get("recall") for k, v in per_class.items()}}


def main(argv):
  del argv
  common.run_directory(FLAGS.workdir)
  rows, curves = {}, {}
  for item in FLAGS.classifiers:
    name, _, workdir = item.partition(":")
    path = os.path.join(workdir, "metrics.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found: --classifiers={item} is not a finished train_classifier run")
    metrics = io.read_json(path)
    rows[name] = row_of(metrics, FLAGS.split)
    predictions = os.path.join(workdir, "predictions.json")
    names = metrics.get(f"{FLAGS.split}/class_names", [])
    melanoma = [n for n in metrics_lib.ISIC2017_MELANOMA if n in names]
    if os.path.exists(predictions) and melanoma:
      p = io.read_json(predictions)[f"{FLAGS.split}/_predictions"]
      k = names.index(melanoma[0])
      curves[name] = ((np.asarray(p["labels"]) == k).astype(int), np.asarray(p["probs"])[:, k])
  classes = sorted({c for r in rows.values() for c in r["per_class_roc_auc"]})
  spec_keys = sorted({k for r in rows.values() for k in r if k.startswith("melanoma_spec_at_sens_")})
  head = ["run", "accuracy", "balanced acc.", "macro AUC", "MEL AUC", "SK AUC", "mean AUC",
          *[f"MEL spec @ {k.rsplit('_', 1)[1]}" for k in spec_keys]]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, r in rows.items():
    values = [r["accuracy"], r["balanced_accuracy"], r["macro_roc_auc"], r["melanoma_roc_auc"],
              r["keratosis_roc_auc"], r["mean_roc_auc"], *[r.get(k) for k in spec_keys]]
    lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |")
  lines += ["", "Per-class ROC AUC / recall:", "",
            "| run | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
  for name, r in rows.items():
    lines.append(f"| {name} | " + " | ".join(
        f"{_fmt(r['per_class_roc_auc'].get(c))} / {_fmt(r['per_class_recall'].get(c))}" for c in classes) + " |")
  io.write_json(os.path.join(FLAGS.workdir, "balancing_table.json"), rows)
  io.atomic_write_bytes(os.path.join(FLAGS.workdir, "balancing_table.md"), ("\n".join(lines) + "\n").encode())
  if curves:
    figures.save_roc_curve(os.path.join(FLAGS.workdir, "figures", "melanoma_roc.png"), curves)
  print("\n".join(lines))


if __name__ == "__main__":
  common.run(main)
