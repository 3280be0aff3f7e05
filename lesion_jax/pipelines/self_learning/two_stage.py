"""The self-learning two-stage framework in one call: K-means pseudo-masks → U-Net trained on
them (no manual labels) → lesion crops (mask AND image) → classifiers on raw images and on crops,
with a report shaped like the paper's Table 2 plus K-means vs U-Net segmentation scores.

Registered as the `two_stage` pipeline (`TwoStagePipeline`), so `runner.load(workdir)` opens its
config.json: its stages are the U-Net and classifier runs, its predictor the crop classifier."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
from absl import logging

from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.artifacts import annotate, kmeans, store
from lesion_jax.data import pipeline
from lesion_jax.eval import figures, metrics, postprocess
from lesion_jax.tasks import base, classification, runner, segmentation
from lesion_jax.train import sharding
from lesion_jax.train.state import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
  name: str  # row label in the report
  model: str
  input: str  # the classifier's source: "raw" or "crops" (of the U-Net's masks; "segmented" in older records)
  num_steps: int = 800
  learning_rate: float = 1e-3
  width: float = 1.0


DEFAULT_CLASSIFIERS = (
    ClassifierSpec("LeNet-5, raw images", "lenet5", "raw", num_steps=1500),
    # A quarter-width ResNet-18 (base 16 channels): what a 2-core CPU trains in a few minutes.
    ClassifierSpec("ResNet-18, raw images", "resnet18", "raw", num_steps=600, width=0.25),
    ClassifierSpec("Proposed: U-Net crop + LeNet-5", "lenet5", "crops", num_steps=1500),
)


@dataclasses.dataclass(frozen=True)
class TwoStageConfig:
  dataset: str = "synthetic_lesions"
  data_dir: str | None = config_lib.field(None, "TFDS data directory.", location=True)
  manual_dir: str | None = config_lib.field(None, "Folder with the hand-downloaded archive.", location=True)
  artifact_dir: str | None = config_lib.field(None, "Where artifacts live.", location=True)
  seed: int = 0
  segmenter: segmentation.SegmenterConfig = segmentation.SegmenterConfig(
      run=config_lib.RunConfig(num_steps=800, eval_every=400),
      optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=100))
  kmeans: kmeans.KMeansConfig = kmeans.KMeansConfig()
  classifiers: tuple[ClassifierSpec, ...] = DEFAULT_CLASSIFIERS
  classifier_image_size: int = 64
  classifier_batch_size: int = 32
  target: str = "malignant"
  balanced: bool = True  # benign lesions outnumber malignant ones ~4:1
  train_split: str = "train"
  val_split: str = "validation"
  test_split: str = "test"


def _slug(text: str) -> str:
  return store.safe_name(text.lower().replace(" ", "_").replace(",", "").replace(":", ""))


def run(config: TwoStageConfig, workdir: str) -> dict[str, Any]:
  """Runs every stage (each resumable) and writes config.json, report.md, report.json and figures/."""
  mesh = sharding.make_mesh()
  start = time.perf_counter()
  timings: dict[str, float] = {}
  builder = pipeline.get_builder(config.dataset, config.data_dir, config.manual_dir, field="dataset")
  for task in _stage_tasks(config):  # every stage's config is checked before anything is written
    task.check(mesh, [("test_split", config.test_split)])  # the pipeline's own field
  runner.write_config(workdir, describe(config), config)
  has_masks = "mask" in builder.info.features
  root = config.artifact_dir or store.default_root(config.data_dir)
  fig_dir = os.path.join(workdir, "figures")
  splits = list(dict.fromkeys(s for s in (config.train_split, config.val_split, config.test_split) if s))

  # 1. Annotation: K-means pseudo-masks for every split (scored against ground truth if any).
  t = time.perf_counter()
  kstore = annotate.kmeans_store(root, builder.info.full_name, config.kmeans)
  annotation = {s: annotate.annotate_split(builder, s, kstore, config.kmeans, figure_dir=fig_dir)
                for s in splits}
  timings["annotate"] = time.perf_counter() - t

  # 2. U-Net trained on the pseudo-masks of train (best checkpoint by pseudo-mask JA on validation).
  t = time.perf_counter()
  seg_config = _segmenter_config(config, kstore.directory)
  seg_dir = os.path.join(workdir, "segmenter")
  seg_task = segmentation.SegmentationTask(seg_config)
  seg_state = runner.train(seg_task, seg_dir, mesh=mesh)
  timings["segmenter"] = time.perf_counter() - t

  # Segmentation: K-means vs U-Net on the test split's ground truth.
  seg_report: dict[str, Any] = {}
  if has_masks:
    unet = seg_task.evaluate(seg_state, config.test_split, mesh, keep_examples=8)
    unet_ja = unet.per_example["jaccard"]
    km = _kmeans_scores_at(kstore, builder, config.test_split, unet.ids)
    seg_report = {"kmeans": km["scores"], "unet": unet.scores,
                  "kmeans_uncertain": annotation[config.test_split].uncertain}
    figures.save_histogram(os.path.join(fig_dir, "jaccard_kmeans_vs_unet.png"),
                           {"K-means pseudo-masks": km["per_image"], "U-Net on pseudo-masks": unet_ja},
                           xlabel=f"per-image Jaccard ({config.test_split})")
    km_masks = [kstore.read_mask(i) for i in unet.ids[:8]]
    images = list(unet.examples["image"])
    panels, titles = [], []
    for i, image in enumerate(images):
      km_small = postprocess.resize_mask(km_masks[i], *image.shape[:2])
      panels += [figures.overlay(image, km_small, unet.examples["mask"][i]),
                 figures.overlay(image, unet.examples["pred"][i], unet.examples["mask"][i])]
      titles += [f"K-means {unet.ids[i]}", "U-Net"]
    figures.save_sample_grid(os.path.join(fig_dir, "kmeans_vs_unet.png"), panels, titles=titles, ncols=4)

  # 3. Lesion crops with the U-Net: mask AND image, cropped to the lesion, resized.
  t = time.perf_counter()
  crop = classification.LesionCropConfig(segmenter_workdir=seg_dir)
  crops_dir = segmentation.lesion_crops(seg_dir, builder, splits, config.classifier_image_size, root,
                                        crop.margin, crop.black_out, mesh, fallback=crop.fallback)
  timings["crops"] = time.perf_counter() - t

  # 4. Classifiers on raw images and on crops.
  rows = []
  roc_curves = {}
  for spec in config.classifiers:
    t = time.perf_counter()
    cls_config = _classifier_config(config, spec, crops_dir, crop)
    cls_dir = os.path.join(workdir, "classifiers", _slug(spec.name))
    result = runner.run(classification.ClassificationTask(cls_config), cls_dir, mesh=mesh)
    predictions = io.read_json(os.path.join(cls_dir, "predictions.json"))["test/_predictions"]
    if len(predictions["probs"][0]) == 2:
      roc_curves[spec.name] = (np.asarray(predictions["labels"]), np.asarray(predictions["probs"])[:, 1])
    rows.append({"name": spec.name, "model": spec.model, "input": spec.input,
                 "seconds": round(time.perf_counter() - t, 1),
                 **{f"{split}/{k}": result.get(f"{split}/{k}") for split in ("train", "test")
                    for k in ("accuracy", "f1", "misclassification_rate", "sensitivity", "specificity", "roc_auc")}})
    timings[f"classifier: {spec.name}"] = time.perf_counter() - t
  if roc_curves:
    figures.save_roc_curve(os.path.join(fig_dir, "roc_classifiers.png"), roc_curves)

  timings["total"] = time.perf_counter() - start
  report = {"dataset": builder.info.full_name, "target": config.target,
            "annotation": {s: dataclasses.asdict(a) for s, a in annotation.items()},
            "segmentation": seg_report, "classification": rows,
            "timings_seconds": {k: round(v, 1) for k, v in timings.items()}}
  io.write_json(os.path.join(workdir, "report.json"), report)
  io.atomic_write_bytes(os.path.join(workdir, "report.md"), render_report(report, config).encode())
  io.write_json(os.path.join(workdir, "metrics.json"), _headline_metrics(report))
  logging.info("Two-stage report: %s", os.path.join(workdir, "report.md"))
  return report


def _kmeans_scores_at(kstore, builder, split: str, ids: list[str]) -> dict[str, Any]:
  """K-means pseudo-masks scored exactly like the U-Net: against the stored ground truth at each
  image's own resolution, over the same ids in the same order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  truth = {}
  for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False).map(
      lambda e: {"id": e["id"], "mask": e["mask"]})):
    truth[ex["id"].decode()] = ex["mask"][..., 0] > 0
  acc = metrics.SegmentationAccumulator()
  for image_id in ids:
    acc.update(kstore.read_mask(image_id)[None], truth[image_id][None])
  return {"scores": acc.result(), "per_image": acc.per_image()["jaccard"]}


def _headline_metrics(report: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for name, scores in report["segmentation"].items():
    if isinstance(scores, dict):
      out.update({f"segmentation/{name}/{k}": v for k, v in scores.items() if k != "num_images"})
  for row in report["classification"]:
    slug = _slug(row["name"])
    out.update({f"classification/{slug}/{k}": v for k, v in row.items()
                if "/" in k and v is not None})
  out["seconds_total"] = report["timings_seconds"]["total"]
  return out


def _fmt(value: Any, pct: bool = False) -> str:
  if value is None:
    return "—"
  return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def render_report(report: dict[str, Any], config: TwoStageConfig) -> str:
  lines = [f"# Self-learning two-stage framework — {report['dataset']}", ""]
  lines += ["No manual masks are used for training: the U-Net learns from K-means pseudo-masks, and "
            "its masks crop the lesions the classifiers see.", ""]
  seg = report["segmentation"]
  if seg:
    lines += [f"## Segmentation ({config.test_split} split, against the ground truth)", "",
              "| method | JA | thresholded JA | Dice | sensitivity | specificity |", "|---|---|---|---|---|---|"]
    for name, label in (("kmeans", "K-means (k=5) pseudo-masks"), ("unet", "U-Net trained on pseudo-masks")):
      s = seg[name]
      lines.append(f"| {label} | {_fmt(s['jaccard'])} | {_fmt(s['jaccard_thresholded'])} | "
                   f"{_fmt(s['dice'])} | {_fmt(s['sensitivity'])} | {_fmt(s['specificity'])} |")
    lines += ["", f"K-means polarity decisions flagged uncertain on {config.test_split}: "
              f"{seg['kmeans_uncertain']}.", "",
              "![K-means vs U-Net](figures/kmeans_vs_unet.png)", ""]
  lines += [f"## Classification ({report['target']}; Table 2 of the paper)", "",
            "| method | train accuracy | test accuracy | test F1 | test misclassification | test sensitivity | test specificity | test ROC AUC |",
            "|---|---|---|---|---|---|---|---|"]
  for row in report["classification"]:
    lines.append(f"| {row['name']} | {_fmt(row['train/accuracy'], True)} | {_fmt(row['test/accuracy'], True)} | "
                 f"{_fmt(row['test/f1'])} | {_fmt(row['test/misclassification_rate'], True)} | "
                 f"{_fmt(row['test/sensitivity'])} | {_fmt(row['test/specificity'])} | {_fmt(row['test/roc_auc'])} |")
  lines += ["", "![ROC](figures/roc_classifiers.png)", "", "## Time (seconds)", ""]
  lines += [f"- {k}: {v}" for k, v in report["timings_seconds"].items()]
  return "\n".join(lines) + "\n"


def _segmenter_config(config: TwoStageConfig, mask_artifacts: str | None) -> segmentation.SegmenterConfig:
  seg_input = dataclasses.replace(config.segmenter.input, dataset=config.dataset, data_dir=config.data_dir,
                                  manual_dir=config.manual_dir, seed=config.seed)
  run = dataclasses.replace(config.segmenter.run, train_split=config.train_split, val_split=config.val_split,
                            test_split=config.test_split)
  return dataclasses.replace(config.segmenter, input=seg_input, mask_artifacts=mask_artifacts, run=run)


def _classifier_config(config: TwoStageConfig, spec: ClassifierSpec, crops_dir: str | None,
                       crop: classification.LesionCropConfig) -> classification.ClassifierConfig:
  cls_input = pipeline.InputConfig(
      dataset=config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir,
      image_size=config.classifier_image_size, batch_size=config.classifier_batch_size, seed=config.seed)
  segmented = spec.input in ("crops", "segmented")
  return classification.ClassifierConfig(
      input=cls_input, label_key=config.target,
      model=classification.ClassifierModelConfig(spec.model, width=spec.width),
      optimizer=dataclasses.replace(classification.ClassifierConfig().optimizer, learning_rate=spec.learning_rate),
      run=config_lib.RunConfig(num_steps=spec.num_steps, eval_every=max(1, spec.num_steps // 4),
                               train_split=config.train_split, val_split=config.val_split,
                               test_split=config.test_split),
      balanced=config.balanced, source="crops" if segmented else "raw",
      image_artifacts=crops_dir if segmented else None,
      crop=crop if segmented else classification.LesionCropConfig())


def _stage_tasks(config: TwoStageConfig) -> list:
  crop = classification.LesionCropConfig()
  # The crops' segmenter is this pipeline's own U-Net, trained first: a classifier stage is checked
  # here as if on raw images, its crops when the stage runs.
  return [segmentation.SegmentationTask(_segmenter_config(config, None))] + [
      classification.ClassificationTask(dataclasses.replace(_classifier_config(config, spec, None, crop), source="raw"))
      for spec in config.classifiers]


def describe(config: TwoStageConfig) -> dict[str, Any]:
  """What the framework's top-level config.json records (each stage records its own run)."""
  return TwoStagePipeline(config).describe()


@base.register
class TwoStagePipeline(base.Pipeline):
  """The two-stage framework as a pipeline: `runner.load(workdir)` opens its config.json. Stages:
  the U-Net ("segmenter", trained on the K-means pseudo-masks) and one classifier per spec
  ("classifiers/<slug>"). Its prediction on a photo is the first classifier on U-Net lesion crops
  (the framework's proposed method: the U-Net's mask, then the class of the crop it makes), or the
  U-Net's mask where the config has no crop classifier."""
  name = "two_stage"
  config_cls = TwoStageConfig

  def run(self, workdir: str) -> dict[str, Any]:
    """Every stage (each resumable; `run`); returns what metrics.json holds."""
    return _headline_metrics(run(self.config, workdir))

  def stages(self, workdir: str) -> dict[str, str]:
    return {"segmenter": os.path.join(workdir, "segmenter"),
            **{f"classifiers/{_slug(spec.name)}": os.path.join(workdir, "classifiers", _slug(spec.name))
               for spec in self.config.classifiers}}

  def predictor(self, workdir: str, predict: str = "predict") -> tuple[base.Task, Any]:
    """(task, best state) of the first crop classifier (its predict_images crops each photo with
    the U-Net, as its training crops were made), else of the U-Net; PredictionUnsupported while
    that stage has not finished."""
    crops = [spec for spec in self.config.classifiers if spec.input in ("crops", "segmented")]
    if crops:
      stage_dir = self.stages(workdir)[f"classifiers/{_slug(crops[0].name)}"]
      if not os.path.exists(os.path.join(stage_dir, "metrics.json")):
        raise base.PredictionUnsupported(f"the crop classifier {crops[0].name!r} has not finished ({stage_dir}): "
                                         "run the two-stage pipeline to the end first")
      task = runner.load(stage_dir, classification.ClassificationTask)
    else:
      stage_dir = self.stages(workdir)["segmenter"]
      if not _has_checkpoint(stage_dir):
        raise base.PredictionUnsupported(f"the U-Net stage has no checkpoint yet ({stage_dir}): run the "
                                         "two-stage pipeline first")
      task = runner.load(stage_dir, segmentation.SegmentationTask)
    return task.with_post_hoc(stage_dir, "best", predict), runner.restore(task, stage_dir, "best")


def _has_checkpoint(workdir: str) -> bool:
  ckpt_dir = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir))
