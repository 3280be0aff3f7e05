"""Purified images (pipeline 3): each image with its detected occlusions (hairs, ruler marks)
filled in by a trained inpainter, as an artifact stage (`lesion_jax.artifacts.stage`): computed
once per (dataset, occlusion detector, inpainter checkpoint), stored by id as RGB PNGs, joined as a
classifier's images (`--input=purified`). Pixels outside the detected mask are kept as they were.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import numpy as np
from absl import logging

from lesion_jax.artifacts import occlusion, stage
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.data.selection import split_name

PURIFIED_KIND = "purified"

# inpaint(images, hole masks) -> images with the holes filled (e.g. InpaintingTask.inpaint_images)
Inpaint = Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]]


def purified_store(root: str, dataset: str, inpainter_workdir: str, inpainter_step: int,
                   occlusions: ArtifactStore) -> ArtifactStore:
  """Versioned by the inpainter run and checkpoint and by the occlusion store it reads, so a
  retrained inpainter or another detector never mixes images."""
  run = hashlib.sha1(os.path.abspath(inpainter_workdir).encode()).hexdigest()[:10]
  return ArtifactStore(root, dataset, PURIFIED_KIND, f"inp{run}-step{inpainter_step}-{occlusions.version}")


def purify_compute(occlusions: ArtifactStore, inpaint: Inpaint) -> stage.Compute:
  """The stage's batch function: read each image's occlusion mask, inpaint the batch in one call."""

  def compute(examples: list[dict[str, Any]], pool) -> list[stage.Artifact]:
    del pool  # the inpainter batches itself
    masks = [occlusion.read_occlusion_mask(occlusions, ex["id"]) for ex in examples]
    for ex, mask in zip(examples, masks):
      if mask.shape != ex["image"].shape[:2]:
        raise ValueError(f"{ex['id']}: occlusion mask {mask.shape} does not match the image "
                         f"{ex['image'].shape[:2]} (stale store {occlusions.directory}?)")
    images = [ex["image"] for ex in examples]
    todo = [i for i, m in enumerate(masks) if m.any()]  # nothing to fill: the image is its own purified copy
    filled = inpaint([images[i] for i in todo], [masks[i] for i in todo]) if todo else []
    out = list(images)
    for i, image in zip(todo, filled):
      out[i] = image
    return [stage.Artifact(np.asarray(im, np.uint8), {"occluded_fraction": round(float(m.mean()), 6)})
            for im, m in zip(out, masks)]

  return compute


def purify_split(builder, split: str, store: ArtifactStore, occlusions: ArtifactStore,
                 occlusion_config: occlusion.OcclusionConfig, inpaint: Inpaint,
                 batch_size: int = 16) -> dict[str, Any]:
  """Purifies every image of `split` not yet in `store` (resumable); the occlusion masks are
  detected first where missing (their own stage, also resumable)."""
  occlusion.occlusion_masks_for_split(builder, split, occlusions, occlusion_config)
  run = stage.ArtifactStage(store, purify_compute(occlusions, inpaint), "purified images",
                            batch_size).run_split(builder, split, ("image",))
  logging.info("purified images for %s: %d computed, %d reused, %d failed, %.1fs", split_name(split), run.computed,
               run.reused, run.failed, run.seconds)
  return {"split": split, "computed": run.computed, "reused": run.reused, "failed": run.failed,
          "seconds": run.seconds}
