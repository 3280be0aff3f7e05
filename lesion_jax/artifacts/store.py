"""The one way artifacts (per-image, non-learned products) are written and read.

Layout: `<root>/<dataset>/<kind>/<version>/<id>.png` (+ optional `<id>.npz` of named arrays, and
`<id>.json` with per-image facts), where `version` names the parameters that made them, so
changing a parameter never mixes old and new artifacts. Writes are atomic and the record is
written last, so `has(id)` tells a re-run what is done (resume). Masks go through the one mask
codec (`io.encode_mask` / `io.decode_mask`). `lesion_jax.artifacts.stage` fills a store from a
dataset split.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable, Mapping

import numpy as np

from lesion_jax import io

UNSAFE_PATTERN = r"[^A-Za-z0-9._-]"
_UNSAFE = re.compile(UNSAFE_PATTERN)


def safe_name(text: str) -> str:
  """A file-name-safe version of an image id or dataset name (the tf.data join applies the same
  rule with tf.strings.regex_replace, so keep the two in step)."""
  return _UNSAFE.sub("_", text) or "_"


def run_version(workdir: str, step: int) -> str:
  """The version tag of artifacts made by the checkpoint at `step` of the run in `workdir`
  (its absolute path hashed), so a retrained run never mixes its artifacts with another's."""
  import hashlib  # pylint: disable=g-import-not-at-top
  return f"seg{hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:10]}-step{step}"


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

  def npz_path(self, image_id: str) -> str:
    return os.path.join(self.directory, safe_name(image_id) + ".npz")

  def write(self, image_id: str, image: np.ndarray | None, record: dict[str, Any] | None = None,
            arrays: Mapping[str, np.ndarray] | None = None) -> None:
    """Stores a mask ((H, W) or (H, W, 1), nonzero = lesion: written as a {0,255} PNG) or a uint8
    RGB image (or no PNG: None), then the named `arrays` as `<id>.npz` (optional), then the
    record, each atomically; the record marks the artifact complete. Writes from whichever
    process calls (artifact stages give each id to one process)."""
    if image is not None:
      image = np.asarray(image)
      if image.ndim == 2 or image.ndim == 3 and image.shape[-1] == 1:
        io.write_mask(self.png_path(image_id), image, all_processes=True)
      else:
        io.write_png(self.png_path(image_id), image, all_processes=True)
    if arrays:
      io.write_npz(self.npz_path(image_id), dict(arrays), all_processes=True)
    io.write_json(self.record_path(image_id), {"id": image_id, **(record or {})}, all_processes=True)

  def read_mask(self, image_id: str) -> np.ndarray:
    """bool (H, W) (the mask codec's rule: nonzero = lesion)."""
    path = self.png_path(image_id)
    try:
      return io.read_mask_file(path)
    except (OSError, ValueError) as e:
      raise FileNotFoundError(f"artifact {path} is missing or unreadable ({e}); compute it first "
                              "(e.g. experiments.annotate)") from e

  def read_arrays(self, image_id: str) -> dict[str, np.ndarray]:
    """The named arrays stored with `write(..., arrays=...)`."""
    return io.read_npz(self.npz_path(image_id))

  def read_record(self, image_id: str) -> dict[str, Any]:
    return io.read_json(self.record_path(image_id))

  def records(self, ids: Iterable[str]) -> list[dict[str, Any]]:
    return [self.read_record(i) for i in ids if self.has(i)]
