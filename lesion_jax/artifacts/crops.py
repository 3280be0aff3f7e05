"""Lesion crops for the classifiers: the segmenter's mask ANDed with the image (surrounding skin
blacked out), cropped to the lesion's bounding box (plus a margin) and resized. Computed once
per (dataset, segmenter, size), stored as artifacts and joined by id in tf.data."""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.eval import postprocess

CROP_KIND = "lesion_crop"


def crop_store(root: str, dataset: str, segmenter_workdir: str, segmenter_step: int, size: int,
               margin: float, black_out: bool = True) -> ArtifactStore:
  """Versioned by the segmenter run and checkpoint, so retraining never mixes crops."""
  run = hashlib.sha1(os.path.abspath(segmenter_workdir).encode()).hexdigest()[:10]
  version = f"seg{run}-step{segmenter_step}-s{size}-m{margin:g}" + ("" if black_out else "-noblack")
  return ArtifactStore(root, dataset, CROP_KIND, version)


def crop_split(builder: tfds.core.DatasetBuilder, split: str, store: ArtifactStore, segment,
               size: int, margin: float = 0.1, black_out: bool = True, threshold: float = 0.5,
               clean: bool = True, chunk: int = 64) -> dict[str, Any]:
  """Crops every image of `split` not yet in `store`. `segment(list of uint8 images)` returns
  probability maps at each image's resolution (e.g. `segmentation.segment_images`)."""
  done = computed = empty = 0
  start = time.perf_counter()
  pending: list[tuple[str, Any]] = []

  def flush():
    nonlocal computed, empty
    probs = segment([im for _, im in pending])
    for (image_id, image), prob in zip(pending, probs):
      mask = postprocess.binarize(prob, threshold)
      if clean:
        mask = postprocess.clean_mask(mask)
      empty += int(not mask.any())
      crop = postprocess.crop_to_mask(image, mask, size, margin=margin, black_out=black_out)
      store.write(image_id, crop, {"lesion_fraction": round(float(mask.mean()), 6),
                                   "bbox": list(postprocess.mask_bbox(mask, margin)),
                                   "empty_mask": not mask.any()})
    computed += len(pending)
    pending.clear()

  ds = builder.as_dataset(split=split, shuffle_files=False)
  for ex in tfds.as_numpy(ds.map(lambda e: {"id": e["id"], "image": e["image"]})):
    image_id = ex["id"].decode()
    if store.has(image_id):
      done += 1
      continue
    pending.append((image_id, ex["image"]))
    if len(pending) == chunk:
      flush()
  if pending:
    flush()
  seconds = time.perf_counter() - start
  logging.info("lesion crops for %s: %d computed (%d with an empty mask: whole image kept), %d "
               "reused, %.1fs", split, computed, empty, done, seconds)
  return {"split": split, "computed": computed, "reused": done, "empty_masks": empty, "seconds": seconds}
