"""Lesion crops for the classifiers: the segmenter's mask ANDed with the image (surrounding skin
blacked out), cropped to the lesion's bounding box (plus a margin) and resized. Computed once
per (dataset, segmenter, size) by an artifact stage (`lesion_jax.artifacts.stage`), stored as
artifacts and joined by id in tf.data. Each record also keeps the ABCD measurements of the mask
at the image's own resolution (`measure.measure_lesion`), the classical classifier's features
(`lesion_jax.eval.abcd`)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from lesion_jax.artifacts import kmeans, stage
from lesion_jax.artifacts import store as store_lib
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.data.selection import split_name
from lesion_jax.eval import measure, postprocess

CROP_KIND = "lesion_crop"


def crop_store(root: str, dataset: str, segmenter_workdir: str, segmenter_step: int, size: int,
               margin: float, black_out: bool = True, fallback: bool = False) -> ArtifactStore:
  """Versioned by the segmenter run and checkpoint (so retraining never mixes crops) and by
  whether the masks went through the catastrophic-mask fallback."""
  version = (f"{store_lib.run_version(segmenter_workdir, segmenter_step)}-s{size}-m{margin:g}"
             + ("" if black_out else "-noblack") + ("-fallback" if fallback else ""))
  return ArtifactStore(root, dataset, CROP_KIND, version)


def crop_compute(segment, binarize: Callable[[np.ndarray], np.ndarray], size: int, margin: float = 0.1,
                 black_out: bool = True) -> stage.Compute:
  """The stage's batch function: one `segment` call per batch, then, on the pool, each map through
  `binarize` (the segmenter's own: `SegmentationTask.binarize`) and the crop."""

  def crop(image: np.ndarray, prob: np.ndarray) -> stage.Artifact:
    mask = np.asarray(binarize(prob), bool)
    return stage.Artifact(
        postprocess.crop_to_mask(image, mask, size, margin=margin, black_out=black_out),
        {"lesion_fraction": round(float(mask.mean()), 6),
         "bbox": list(postprocess.mask_bbox(mask, margin)), "empty_mask": not mask.any(),
         "measurements": measure.measure_lesion(mask, image)})

  def compute(examples: list[dict[str, Any]], pool) -> list[stage.Artifact]:
    images = [ex["image"] for ex in examples]
    return list(pool.map(crop, images, segment(images)))

  return compute


def crop_split(builder: tfds.core.DatasetBuilder, split: str, store: ArtifactStore, segment, binarize,
               size: int, margin: float = 0.1, black_out: bool = True, chunk: int = 64) -> dict[str, Any]:
  """Crops every image of `split` not yet in `store`. `segment(list of uint8 images)` returns
  probability maps at each image's resolution (e.g. `segmentation.segment_images`), `binarize(map)`
  its mask."""
  compute = crop_compute(segment, binarize, size, margin, black_out)
  run = stage.ArtifactStage(store, compute, "lesion crops", chunk).run_split(builder, split, ("image",))
  empty = sum(1 for i in run.computed_ids if store.read_record(i).get("empty_mask"))
  logging.info("lesion crops for %s: %d computed (%d with an empty mask: whole image kept), %d "
               "reused, %d failed, %.1fs", split_name(split), run.computed, empty, run.reused, run.failed,
               run.seconds)
  return {"split": split, "computed": run.computed, "reused": run.reused, "empty_masks": empty,
          "seconds": run.seconds, "failed": run.failed}


def kmeans_crops(builder: tfds.core.DatasetBuilder, splits: list[str], size: int, root: str,
                 config: kmeans.KMeansConfig = kmeans.KMeansConfig(), margin: float = 0.1,
                 black_out: bool = True) -> str:
  """Crops (and ABCD measurements) of every image of `splits` from its K-means pseudo-mask, stored
  once per K-means config; returns the store directory. Nothing is trained, so the masks of every
  split are equally rough: a classifier fitted on one split's measurements meets the same mask
  quality on another (a trained segmenter's masks are near-perfect on its own training images)."""
  version = f"kmeans-{config.version}-s{size}-m{margin:g}" + ("" if black_out else "-noblack")
  cstore = ArtifactStore(root, builder.info.full_name, CROP_KIND, version)
  segment = lambda images: [p.mask.astype(np.float32) for p in kmeans.kmeans_pseudo_masks(images, config)]  # noqa: E731
  for split in splits:
    crop_split(builder, split, cstore, segment, lambda prob: prob > 0.5, size, margin, black_out=black_out)
  return cstore.directory
