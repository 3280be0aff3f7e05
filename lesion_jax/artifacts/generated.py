"""Generated images (pipeline 3, part 2): samples of a trained GAN (pipelines/gan/task.py) per class, stored
by id as RGB PNGs with a record each (class, nearest training image and its MSE, near-copy flag),
then used to fill scarce classes of a classifier's training set (`balance_with_generated`).

The duplicate check (the paper's Fig. 5) runs as the images are made: every generated image's
MSE (per value, images in [0, 1]) to every training image of its class, on device, chunked
(`eval.duplicates`). An image is a near-copy when it is closer to a training image than the two
closest training images of its class are to each other (or under an absolute threshold, when
given); near-copies are flagged and never used for balancing.

Layout: `<gan workdir>/generated/images/step<N>/` (an `ArtifactStore`: atomic writes, records
last, so an interrupted run resumes) and `summary.json` + figures in the same folder.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from absl import logging

from lesion_jax import io
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.eval import duplicates, figures


def generated_store(gan_workdir: str, step: int) -> ArtifactStore:
  """The samples of checkpoint `step` of a GAN run."""
  return ArtifactStore(gan_workdir, "generated", "images", f"step{step}")


def generated_id(class_name: str, index: int) -> str:
  return f"gen_{class_name}_{index:05d}"


def _to01(images: np.ndarray) -> np.ndarray:
  return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def real_to_real_nearest(images01: np.ndarray) -> np.ndarray:
  """Each training image's MSE to its nearest other training image of the set (leave-one-out)."""
  n = len(images01)
  if n < 2:
    return np.full(n, np.inf, np.float32)
  flat = images01.reshape(n, -1).astype(np.float64)
  sq = (flat * flat).sum(1)
  d = (sq[:, None] + sq[None, :] - 2 * flat @ flat.T) / flat.shape[1]
  np.fill_diagonal(d, np.inf)
  return np.maximum(d.min(1), 0.0).astype(np.float32)


def write_generated(store: ArtifactStore, samples: dict[str, np.ndarray], training: dict[str, np.ndarray],
                    training_ids: dict[str, Sequence[str]], class_records: dict[str, dict[str, int]],
                    threshold: float | None = None, chunk: int = 256) -> dict[str, Any]:
  """Runs the duplicate check and stores every sample.

  Args:
    store: where the images go (ids `gen_<class>_<i>`; complete ones are kept, not rewritten).
    samples: per class name, generated images (N, S, S, 3) in [-1, 1].
    training: per class name, that class's training images at the same size, in [-1, 1].
    training_ids: their ids, for the records.
    class_records: per class name, the class features every record carries (e.g. {"label": 4,
      "malignant": 1}), what a classifier trained with them reads.
    threshold: absolute near-copy MSE threshold; None: per class, the smallest training-to-training
      nearest-neighbour MSE.

  Returns the summary written to `<store>/summary.json`.
  """
  summary: dict[str, Any] = {"threshold": threshold, "classes": {}}
  closest: list[list[tuple[float, np.ndarray, np.ndarray, str]]] = []
  histogram = {}
  for name, images in samples.items():
    gen01, real01 = _to01(images), _to01(training[name])
    nn = duplicates.nearest_neighbours(gen01, real01, chunk)
    reference = real_to_real_nearest(real01)
    limit = float(threshold) if threshold is not None else float(reference.min())
    copies = duplicates.near_copies(nn.mse, limit)
    ids = [generated_id(name, i) for i in range(len(images))]
    for i, image_id in enumerate(ids):
      if store.has(image_id):
        continue
      store.write(image_id, np.round(gen01[i] * 255).astype(np.uint8),
                  {"class": name, **class_records[name], "nearest_mse": float(nn.mse[i]),
                   "nearest_id": str(training_ids[name][nn.index[i]]), "near_copy": bool(copies[i])})
    summary["classes"][name] = {
        "generated": len(images), "near_copies": int(copies.sum()), "threshold": limit,
        "training_images": len(real01), "min_mse": float(nn.mse.min()),
        "median_mse": float(np.median(nn.mse)), "real_to_real_min_mse": float(reference.min()),
        "real_to_real_median_mse": float(np.median(reference)) if np.isfinite(reference).all() else None}
    histogram[f"{name}: generated"] = nn.mse
    if np.isfinite(reference).all():
      histogram[f"{name}: real to real"] = reference
    closest.append([(float(nn.mse[i]), gen01[i], real01[nn.index[i]], str(training_ids[name][nn.index[i]]))
                    for i in np.argsort(nn.mse)[:3]])
    logging.info("generated %s: %d images, %d near-copies (MSE < %.5f), nearest MSE min %.5f median %.5f",
                 name, len(images), int(copies.sum()), limit, float(nn.mse.min()), float(np.median(nn.mse)))
  io.write_json(os.path.join(store.directory, "summary.json"), summary)
  figures.save_histogram(os.path.join(store.directory, "duplicate_check_histogram.png"),
                         {k: np.log10(np.maximum(v, 1e-8)) for k, v in histogram.items()},
                         "log10 MSE to the nearest training image of the class")
  # A row per class: its three closest (generated, nearest training image) pairs.
  columns, titles = {}, {}
  for j in range(max((len(c) for c in closest), default=0)):
    for side, key in ((1, f"generated {j + 1}"), (2, f"nearest training {j + 1}")):
      columns[key] = [c[j][side] if j < len(c) else np.zeros_like(c[0][1]) for c in closest]
      titles[key] = [(f"MSE {c[j][0]:.4f}" if side == 1 else c[j][3]) if j < len(c) else "" for c in closest]
  figures.save_column_grid(os.path.join(store.directory, "duplicate_check_closest.png"), columns,
                           titles=list(samples), cell_titles=titles, cell=1.6,
                           suptitle="Closest generated / training pairs, a row per class")
  return summary


def generated_records(store: ArtifactStore) -> list[dict[str, Any]]:
  """Every complete record in the store, in id order."""
  if not os.path.isdir(store.directory):
    raise FileNotFoundError(f"no generated images in {store.directory}: run experiments.train_gan first")
  names = sorted(f[:-5] for f in os.listdir(store.directory) if f.endswith(".json") and f != "summary.json")
  return [store.read_record(n) for n in names]


def balance_with_generated(counts: Sequence[int], records: list[dict[str, Any]], label_key: str
                           ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Which generated images fill each class of `label_key` up to the largest class.

  counts: real training images per class index. records: generated images' records (with
  `label_key` and `near_copy`). Near-copies are never used; a class with too few generated images
  gets all it has. Returns (chosen records in a fixed order, the plan: per class real / wanted /
  used / short, and the number of near-copies left out).
  """
  counts = np.asarray(counts, np.int64)
  target = int(counts.max())
  usable = [r for r in records if not r.get("near_copy")]
  chosen, plan = [], {"target": target, "near_copies_left_out": len(records) - len(usable), "classes": {}}
  for c, n in enumerate(counts):
    pool = [r for r in usable if int(r[label_key]) == c]
    wanted = target - int(n)
    used = pool[:wanted]
    chosen.extend(used)
    plan["classes"][str(c)] = {"real": int(n), "wanted": wanted, "available": len(pool), "used": len(used),
                               "short": wanted - len(used)}
  return chosen, plan
