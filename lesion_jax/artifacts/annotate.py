"""Computes K-means pseudo-masks for a whole dataset split once, resumably, into an ArtifactStore."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from lesion_jax import io
from lesion_jax.artifacts import kmeans
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.eval import figures, metrics

KMEANS_KIND = "kmeans_mask"


def kmeans_store(root: str, dataset: str, config: kmeans.KMeansConfig) -> ArtifactStore:
  return ArtifactStore(root, dataset, KMEANS_KIND, config.version)


def _examples(builder: tfds.core.DatasetBuilder, split: str) -> Iterator[dict[str, Any]]:
  for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
    yield {"id": ex["id"].decode(), "image": ex["image"],
           "mask": ex["mask"][..., 0] > 0 if "mask" in ex else None}


@dataclasses.dataclass
class AnnotationSummary:
  split: str
  total: int
  computed: int  # this run
  reused: int  # already in the store (resumed)
  uncertain: int
  images_per_second: float
  scores: dict[str, Any] | None  # pseudo-mask vs ground truth, where the dataset has masks


def annotate_split(builder: tfds.core.DatasetBuilder, split: str, store: ArtifactStore,
                   config: kmeans.KMeansConfig, batch_size: int = 64, workers: int | None = None,
                   figure_dir: str | None = None) -> AnnotationSummary:
  """Pseudo-masks for every image of `split` not yet in `store`; then scores all of them against
  the ground truth (when present) and writes `<store>/<split>_summary.json` (+ figures)."""
  total = builder.info.splits[split].num_examples
  workers = workers or os.cpu_count() or 1
  computed = reused = 0
  acc = metrics.SegmentationAccumulator()
  uncertain_examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = []
  start = time.perf_counter()
  compute_time = 0.0
  pending: list[dict[str, Any]] = []

  def flush(pool) -> None:
    nonlocal computed, compute_time
    t = time.perf_counter()
    results = kmeans.kmeans_pseudo_masks([ex["image"] for ex in pending], config, pool)
    for ex, res in zip(pending, results):
      record: dict[str, Any] = {"uncertain": res.uncertain, "reasons": list(res.reasons), **res.facts}
      if ex["mask"] is not None:
        scores = metrics.per_image_segmentation_scores(res.mask[None], ex["mask"][None])
        record["jaccard"] = round(float(scores["jaccard"][0]), 6)
      store.write(ex["id"], res.mask, record)
      if ex["mask"] is not None:
        acc.update(res.mask[None], ex["mask"][None])
      if res.uncertain and len(uncertain_examples) < 16:
        uncertain_examples.append((ex["id"], ex["image"], res.mask, ex["mask"]))
    compute_time += time.perf_counter() - t
    computed += len(pending)
    logging.info("annotate %s: %d/%d images (%d reused), %.1f img/s", split, computed + reused,
                 total, reused, computed / max(compute_time, 1e-9))
    pending.clear()

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for ex in _examples(builder, split):
      if store.has(ex["id"]):
        reused += 1
        if ex["mask"] is not None:
          acc.update(store.read_mask(ex["id"])[None], ex["mask"][None])
        continue
      pending.append(ex)
      if len(pending) == batch_size:
        flush(pool)
    if pending:
      flush(pool)

  ids = [ex["id"] for ex in _examples_ids(builder, split)]
  uncertain = sum(1 for r in store.records(ids) if r.get("uncertain"))
  scores = acc.result() if acc.counts()["tp"].size else None
  summary = AnnotationSummary(split, total, computed, reused, uncertain,
                              computed / compute_time if compute_time else 0.0, scores)
  io.write_json(os.path.join(store.directory, f"{split}_summary.json"),
                {**dataclasses.asdict(summary), "config": dataclasses.asdict(config),
                 "wall_seconds": time.perf_counter() - start})
  if figure_dir and uncertain_examples:
    ids_, images, preds, truths = zip(*uncertain_examples)
    figures.save_overlay_grid(os.path.join(figure_dir, f"kmeans_uncertain_{split}.png"), images, preds,
                              truths if all(t is not None for t in truths) else None, titles=list(ids_))
  return summary


def _examples_ids(builder: tfds.core.DatasetBuilder, split: str) -> Iterator[dict[str, str]]:
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
                                    if isinstance(f, tfds.features.Image)})
  for ex in tfds.as_numpy(ds.map(lambda e: {"id": e["id"]})):
    yield {"id": ex["id"].decode()}
