"""Computes K-means pseudo-masks for a whole dataset split once, resumably, into an ArtifactStore
(an artifact stage, `lesion_jax.artifacts.stage`), then scores them against the ground truth."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from lesion_jax import io
from lesion_jax.artifacts import kmeans, stage
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.data.selection import split_name
from lesion_jax.eval import figures, metrics

KMEANS_KIND = "kmeans_mask"
FIGURE_EXAMPLES = 16  # uncertain examples shown in the figure


def kmeans_store(root: str, dataset: str, config: kmeans.KMeansConfig) -> ArtifactStore:
  return ArtifactStore(root, dataset, KMEANS_KIND, config.version)


@dataclasses.dataclass
class AnnotationSummary:
  split: str
  total: int
  computed: int  # this run
  reused: int  # already in the store (resumed)
  uncertain: int
  images_per_second: float
  scores: dict[str, Any] | None  # pseudo-mask vs ground truth, where the dataset has masks
  failed: int = 0  # images K-means raised on: no pseudo-mask (retried next run)


def _truth(example: dict[str, Any]) -> np.ndarray | None:
  return example["mask"][..., 0] > 0 if "mask" in example else None


def kmeans_compute(config: kmeans.KMeansConfig) -> stage.Compute:
  """The stage's batch function: pseudo-masks, and each one's Jaccard where there is a truth."""

  def compute(examples: list[dict[str, Any]], pool) -> list[stage.Artifact]:
    results = kmeans.kmeans_pseudo_masks([ex["image"] for ex in examples], config, pool)
    artifacts = []
    for ex, res in zip(examples, results):
      record: dict[str, Any] = {"uncertain": res.uncertain, "reasons": list(res.reasons), **res.facts}
      truth = _truth(ex)
      if truth is not None:
        scores = metrics.per_image_segmentation_scores(res.mask[None], truth[None])
        record["jaccard"] = round(float(scores["jaccard"][0]), 6)
      artifacts.append(stage.Artifact(res.mask, record))
    return artifacts

  return compute


def annotate_split(builder: tfds.core.DatasetBuilder, split: str, store: ArtifactStore,
                   config: kmeans.KMeansConfig, batch_size: int = 64, workers: int | None = None,
                   figure_dir: str | None = None) -> AnnotationSummary:
  """Pseudo-masks for every image of `split` not yet in `store`; then scores all of them against
  the ground truth (when present) and writes `<store>/<split>_summary.json` (+ a figure of the
  first uncertain ones, when this run computed any)."""
  start = time.perf_counter()
  has_truth = "mask" in builder.info.features
  ids = stage.split_ids(builder, split)
  run = stage.ArtifactStage(store, kmeans_compute(config), "annotate", batch_size, workers).run_split(
      builder, split, ("image", "mask") if has_truth else ("image",), ids)

  acc = metrics.SegmentationAccumulator()
  if has_truth:
    for ex in stage.read_examples(builder, split, features=("mask",)):
      if store.has(ex["id"]):
        acc.update(store.read_mask(ex["id"])[None], _truth(ex)[None])
  records = store.records(ids)
  uncertain_ids = [r["id"] for r in records if r.get("uncertain")]
  scores = acc.result() if acc.counts()["tp"].size else None
  summary = AnnotationSummary(split, builder.info.splits[split].num_examples, run.computed,
                              run.reused, len(uncertain_ids), run.images_per_second, scores,
                              run.failed)
  io.write_json(os.path.join(store.directory, f"{stage.split_tag(split)}_summary.json"),
                {**dataclasses.asdict(summary), "config": dataclasses.asdict(config),
                 "failures": run.failures, "wall_seconds": time.perf_counter() - start})
  if figure_dir and uncertain_ids and run.computed:
    shown = list(stage.read_examples(builder, split, uncertain_ids[:FIGURE_EXAMPLES],
                                     ("image", "mask") if has_truth else ("image",)))
    figures.save_overlay_grid(os.path.join(figure_dir, f"kmeans_uncertain_{stage.split_tag(split)}.png"),
                              [ex["image"] for ex in shown], [store.read_mask(ex["id"]) for ex in shown],
                              [_truth(ex) for ex in shown] if has_truth else None,
                              titles=[ex["id"] for ex in shown])
  return summary


def ensure_kmeans_masks(builder: tfds.core.DatasetBuilder, splits: list[str], root: str,
                        config: kmeans.KMeansConfig) -> str:
  """The K-means pseudo-mask store of the builder's dataset and `config` under `root`, with
  every image of `splits` annotated (those not yet done; resumable); returns its directory."""
  store = kmeans_store(root, builder.info.full_name, config)
  for split in dict.fromkeys(s for s in splits if s):
    summary = annotate_split(builder, split, store, config, figure_dir=os.path.join(store.directory, "figures"))
    ja = f", JA vs ground truth {summary.scores['jaccard']:.4f}" if summary.scores else ""
    logging.info("K-means pseudo-masks for %s: %d images, %d uncertain%s", split_name(split), summary.total,
                 summary.uncertain, ja)
  return store.directory


MANUAL_OVER_PSEUDO_KIND = "manual_over_pseudo_mask"


def manual_over_pseudo(pseudo_directory: str, manual: tfds.core.DatasetBuilder, split: str, root: str) -> str:
  """A mask store holding the pseudo-masks of `pseudo_directory` (e.g. K-means'), except that the
  images of `manual`'s `split` that it also holds get their manual mask instead (resized to the
  pseudo-mask's size, recorded `manual: true`, never uncertain): semi-supervised training on a few
  manual masks among many pseudo-masks. Stored once under `root` (resumable); returns its directory."""
  import glob  # pylint: disable=g-import-not-at-top
  import cv2  # pylint: disable=g-import-not-at-top
  parts = os.path.normpath(pseudo_directory).split(os.sep)
  dataset, version = parts[-3], f"{parts[-2]}-{parts[-1]}+{manual.info.full_name}-{split}"
  store = ArtifactStore(root, dataset, MANUAL_OVER_PSEUDO_KIND, version)
  pseudo_ids = {}
  for path in glob.glob(os.path.join(pseudo_directory, "*.json")):
    record = io.read_json(path)
    if isinstance(record, dict) and "id" in record and os.path.exists(path[:-len(".json")] + ".png"):
      pseudo_ids[record["id"]] = path[:-len(".json")]
  replaced = 0
  for ex in stage.read_examples(manual, split, ids=list(pseudo_ids), features=("mask",)):
    if not store.has(ex["id"]):
      shape = io.read_mask_file(pseudo_ids[ex["id"]] + ".png").shape
      mask = cv2.resize((ex["mask"][..., 0] > 0).astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
      store.write(ex["id"], mask, {"manual": True, "uncertain": False, "source": f"{manual.info.full_name} {split}"})
    replaced += 1
  os.makedirs(store.directory, exist_ok=True)
  for image_id, stem in pseudo_ids.items():
    if not store.has(image_id):
      dest = os.path.join(store.directory, os.path.basename(stem))
      for suffix in (".png", ".json"):  # the record last: it marks the copy complete
        with open(stem + suffix, "rb") as f:
          io.atomic_write_bytes(dest + suffix, f.read())
  logging.info("%s: %d pseudo-masks, %d of them replaced by the manual masks of %s %s", store.directory,
               len(pseudo_ids), replaced, manual.info.full_name, split)
  return store.directory

