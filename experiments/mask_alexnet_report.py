r"""Pipeline 4's report (the mask-then-AlexNet paper's Tables I and II) from finished runs.

  python -m experiments.mask_alexnet_report --workdir=runs/mask_alexnet \
      --segmenters=maskrcnn:runs/maskrcnn,unet:runs/unet \
      --classifiers=raw:runs/alexnet_raw,unet:runs/alexnet_unet,maskrcnn:runs/alexnet_maskrcnn

Segmenters are finished train_maskrcnn / train_segmenter runs (their metrics.json); classifiers are
finished `train_classifier --folds=5` runs. Writes <workdir>/report.md and report.json:
- segmentation (JA, thresholded JA, Dice, box AP at IoU 0.5 / 0.75 and images without a lesion
  found, where the run is a detector) and Table I, the lesion / background pixel confusion;
- Table II per classifier: the confusion matrix of the pooled held-out folds, then accuracy,
  sensitivity, specificity, precision and ROC AUC as mean +- std over the folds, on the held-out
  fold (which also picked each fold's checkpoint, so optimistic) and on the test split (not used
  for any choice).
"""
import os

from absl import app, flags

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_list("segmenters", [], "name:workdir of train_maskrcnn / train_segmenter runs.")
flags.DEFINE_list("classifiers", [], "name:workdir of cross-validated train_classifier runs.")
flags.DEFINE_string("split", "test", "Metrics prefix of the segmenters' final split.")

SEGMENTATION_KEYS = ("jaccard", "jaccard_thresholded", "dice", "box_ap50", "box_ap75", "no_lesion_images")
CLASSIFIER_KEYS = ("accuracy", "sensitivity", "specificity", "precision", "roc_auc")


def _read_metrics(item: str, flag: str) -> tuple[str, dict]:
  name, sep, workdir = item.partition(":")
  path = os.path.join(workdir, "metrics.json")
  if not sep or not name:
    raise config_lib.ConfigError(f"--{flag}={item}: expected name:workdir")
  if not os.path.exists(path):
    raise config_lib.ConfigError(f"--{flag}={item}: {path} not found (not a finished run)")
  return name, io.read_json(path)


def _fmt(v, digits: int = 3) -> str:
  if v is None:
    return "–"
  return str(v) if isinstance(v, int) else f"{v:.{digits}f}"


def segmentation_rows(segmenters: list[str], split: str) -> dict[str, dict]:
  rows = {}
  for item in segmenters:
    name, m = _read_metrics(item, "segmenters")
    if f"{split}/jaccard" not in m:
      raise config_lib.ConfigError(f"--segmenters={item}: its metrics.json has no {split}/jaccard (not a segmentation run?)")
    rows[name] = {k: m.get(f"{split}/{k}") for k in SEGMENTATION_KEYS}
    rows[name]["num_images"] = m.get(f"{split}/num_images")
    rows[name]["pixel_confusion"] = m.get(f"{split}/pixel_confusion")
  return rows


def classifier_rows(classifiers: list[str]) -> dict[str, dict]:
  rows = {}
  for item in classifiers:
    name, m = _read_metrics(item, "classifiers")
    if "folds" not in m:
      raise config_lib.ConfigError(f"--classifiers={item}: not a cross-validated run (train_classifier --folds=5)")
    rows[name] = {"folds": m["folds"], "confusion_matrix": m.get("cv/confusion_matrix"),
                  **{f"{p}/{k}": (m.get(f"{p}/{k}_fold_mean"), m.get(f"{p}/{k}_fold_std"))
                     for p in ("cv", "test") for k in CLASSIFIER_KEYS}}
  return rows


def render(seg: dict[str, dict], cls: dict[str, dict], split: str) -> str:
  lines = ["# Mask-then-AlexNet (pipeline 4)", ""]
  if seg:
    lines += [f"## Segmentation ({split} split, each image at its own resolution)", "",
              "| segmenter | JA | thresholded JA | Dice | box AP50 | box AP75 | no lesion found |",
              "|---|---|---|---|---|---|---|"]
    for name, r in seg.items():
      found = "–" if r["no_lesion_images"] is None else f"{r['no_lesion_images']} of {r['num_images']}"
      lines.append(f"| {name} | " + " | ".join(_fmt(r[k]) for k in SEGMENTATION_KEYS[:5]) + f" | {found} |")
    lines += ["", "Table I: pixels, lesion vs background (summed over the split).", "",
              "| segmenter | lesion as lesion | lesion as background | background as lesion | "
              "background as background | accuracy | sensitivity | specificity | precision |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in seg.items():
      c = r["pixel_confusion"] or {}
      lines.append(f"| {name} | " + " | ".join(_fmt(c.get(k)) for k in (
          "lesion_as_lesion", "lesion_as_background", "background_as_lesion", "background_as_background",
          "accuracy", "sensitivity", "specificity", "precision")) + " |")
    lines.append("")
  if cls:
    lines += ["## Table II: AlexNet, benign vs malignant, k-fold cross-validation", "",
              "Confusion matrix of the pooled held-out folds (rows: true benign, malignant; columns: "
              "predicted). Scores are mean ± std over the folds.", ""]
    for part, title in (("cv", "held-out fold (it also picked the fold's checkpoint)"),
                        ("test", "test split (used for nothing else)")):
      lines += [f"On the {title}:", "", "| input | confusion | " + " | ".join(CLASSIFIER_KEYS) + " |",
                "|---|---|" + "---|" * len(CLASSIFIER_KEYS)]
      for name, r in cls.items():
        cm = r["confusion_matrix"]
        cm_text = "–" if not cm or part != "cv" else " / ".join(" ".join(str(int(v)) for v in row) for row in cm)
        cells = [f"{_fmt(mean)} ± {_fmt(std)}" if mean is not None else "–"
                 for mean, std in (r[f"{part}/{k}"] for k in CLASSIFIER_KEYS)]
        lines.append(f"| {name} ({r['folds']} folds) | {cm_text} | " + " | ".join(cells) + " |")
      lines.append("")
  return "\n".join(lines)


def main(argv):
  del argv
  if not FLAGS.segmenters and not FLAGS.classifiers:
    raise config_lib.ConfigError("give --segmenters and/or --classifiers (name:workdir, comma-separated)")
  seg = segmentation_rows(FLAGS.segmenters, FLAGS.split)
  cls = classifier_rows(FLAGS.classifiers)
  common.run_directory(FLAGS.workdir)
  text = render(seg, cls, FLAGS.split)
  io.write_json(os.path.join(FLAGS.workdir, "report.json"), {"segmentation": seg, "classification": cls})
  io.atomic_write_bytes(os.path.join(FLAGS.workdir, "report.md"), text.encode())
  print(text)


if __name__ == "__main__":
  common.run(main)
