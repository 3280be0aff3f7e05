"""Pseudo-masks from a trained segmenter (iterative self-learning): each image of a split
segmented by one checkpoint, binarised as that run binarises, flagged uncertain where the map is
not confident, stored once per (dataset, segmenter run, step) by an artifact stage. No ground
truth is read to make or flag them; where the dataset has masks, each record also holds its
Jaccard against them, for reporting only."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from lesion_jax.artifacts import stage
from lesion_jax.artifacts import store as store_lib
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.eval import metrics

RELABEL_KIND = "segmenter_mask"


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
  min_confidence: float = 0.75  # mean |2p - 1| over the lesion and its doubtful surroundings
  min_fraction: float = 0.005  # smaller masks are no lesion: uncertain
  max_fraction: float = 0.9  # larger ones are the whole field of view: uncertain


def relabel_store(root: str, dataset: str, segmenter_workdir: str, step: int) -> ArtifactStore:
  """Versioned by the segmenter run and checkpoint, so a retrained round never mixes masks."""
  return ArtifactStore(root, dataset, RELABEL_KIND, store_lib.run_version(segmenter_workdir, step))


def map_confidence(prob: np.ndarray, mask: np.ndarray) -> float:
  """Mean |2p - 1| over the mask and every pixel with p > 0.1: 1 for a crisp map, 0 for a map of
  0.5s. Background far from any lesion (p ~ 0) is left out, or every map would look confident."""
  region = mask | (prob > 0.1)
  return float(np.abs(2.0 * prob[region] - 1.0).mean()) if region.any() else 0.0


def relabel_compute(segment: Callable[[list[np.ndarray]], list[np.ndarray]],
                    binarize: Callable[[np.ndarray], np.ndarray], config: RelabelConfig) -> stage.Compute:
  """The stage's batch function: one `segment` call per batch (maps at each image's resolution),
  then the run's own binarisation and the uncertainty flags."""

  def compute(examples: list[dict[str, Any]], pool) -> list[stage.Artifact]:
    del pool
    out = []
    for ex, prob in zip(examples, segment([ex["image"] for ex in examples])):
      mask = np.asarray(binarize(prob), bool)
      fraction, confidence = float(mask.mean()), map_confidence(prob, mask)
      reasons = ([f"confidence {confidence:.2f} < {config.min_confidence}"] if confidence < config.min_confidence
                 else []) + ([f"lesion fraction {fraction:.3f} outside [{config.min_fraction}, {config.max_fraction}]"]
                             if not config.min_fraction <= fraction <= config.max_fraction else [])
      record: dict[str, Any] = {"uncertain": bool(reasons), "reasons": reasons, "confidence": round(confidence, 4),
                                "lesion_fraction": round(fraction, 6)}
      if "mask" in ex:  # reporting only: nothing reads it to train or select
        scores = metrics.per_image_segmentation_scores(mask[None], (ex["mask"][..., 0] > 0)[None])
        record["jaccard"] = round(float(scores["jaccard"][0]), 6)
      out.append(stage.Artifact(mask, record))
    return out

  return compute


def relabel_split(builder, split: str, store: ArtifactStore, segment, binarize, config: RelabelConfig,
                  chunk: int = 32) -> dict[str, Any]:
  """Pseudo-masks for every image of `split` not yet in `store`; returns counts and, where the
  dataset has masks, the mean pseudo-mask Jaccard over the split (reporting only)."""
  features = ("image", "mask") if "mask" in builder.info.features else ("image",)
  run = stage.ArtifactStage(store, relabel_compute(segment, binarize, config), "relabel", chunk).run_split(
      builder, split, features)
  records = store.records(stage.split_ids(builder, split))
  mean_jaccard = lambda rows: float(np.mean([r["jaccard"] for r in rows])) if rows else None  # noqa: E731
  scored = [r for r in records if "jaccard" in r]
  return {"split": split, "images": len(records), "computed": run.computed, "reused": run.reused,
          "failed": run.failed, "uncertain": sum(bool(r.get("uncertain")) for r in records),
          "pseudo_mask_jaccard": mean_jaccard(scored),
          "pseudo_mask_jaccard_confident": mean_jaccard([r for r in scored if not r.get("uncertain")])}
