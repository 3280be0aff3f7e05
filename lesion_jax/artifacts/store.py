"""The one way artifacts (per-image, non-learned products) are written and read.

Layout: `<root>/<dataset>/<kind>/<version>/<id>.png` (+ `<id>.json` with per-image facts), where
`version` names the parameters that made them, so changing a parameter never mixes old and new
artifacts. Writes are atomic; `missing(ids)` tells a re-run what is left to do (resume).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable

import numpy as np

from lesion_jax import io

UNSAFE_PATTERN = r"[^A-Za-z0-9._-]"
_UNSAFE = re.compile(UNSAFE_PATTERN)


def safe_name(text: str) -> str:
  """A file-name-safe version of an image id or dataset name (the tf.data join applies the same
  rule with tf.strings.regex_replace, so keep the two in step)."""
  return _UNSAFE.sub("_", text) or "_"


def default_root(data_dir: str | None) -> str:
  """Artifacts live beside the prepared TFDS datasets."""
  base = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
  return os.path.join(base, "lesion_jax_artifacts")


@dataclasses.dataclass(frozen=True)
class ArtifactStore:
  root: str
  dataset: str  # e.g. "synthetic_lesions/s64"
  kind: str  # e.g. "kmeans_mask"
  version: str  # e.g. "k5-lab-xy0.5" (the parameters that made them)

  @property
  def directory(self) -> str:
    return os.path.join(self.root, safe_name(self.dataset), safe_name(self.kind), safe_name(self.version))

  def png_path(self, image_id: str) -> str:
    return os.path.join(self.directory, safe_name(image_id) + ".png")

  def record_path(self, image_id: str) -> str:
    return os.path.join(self.directory, safe_name(image_id) + ".json")

  def has(self, image_id: str) -> bool:
    # The record is written last, so its presence means the artifact is complete.
    return os.path.exists(self.record_path(image_id))

  def missing(self, ids: Iterable[str]) -> list[str]:
    return [i for i in ids if not self.has(i)]

  def write(self, image_id: str, image: np.ndarray, record: dict[str, Any] | None = None) -> None:
    """Stores a mask (bool or {0,1}/{0,255}: written as a {0,255} PNG) or a uint8 RGB image, and
    then its record, each atomically; the record marks the artifact complete."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
      image = image[..., 0]
    if image.ndim == 2:
      image = (image > 0).astype(np.uint8) * 255
    io.write_png(self.png_path(image_id), image)
    io.write_json(self.record_path(image_id), {"id": image_id, **(record or {})})

  def read_mask(self, image_id: str) -> np.ndarray:
    """bool (H, W)."""
    import cv2  # pylint: disable=g-import-not-at-top
    path = self.png_path(image_id)
    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
      raise FileNotFoundError(f"artifact {path} is missing or unreadable; run experiments.annotate")
    return mask > 127

  def read_record(self, image_id: str) -> dict[str, Any]:
    return io.read_json(self.record_path(image_id))

  def records(self, ids: Iterable[str]) -> list[dict[str, Any]]:
    return [self.read_record(i) for i in ids if self.has(i)]
