"""Input checking shared by the segmentation and boundary metrics: `_as_mask_batch` turns a
bool-like (N, H, W) or (N, H, W, 1) array into bool masks and refuses a probability map passed
by mistake. Its own module so that `segmentation` (whose accumulator scores boundaries too) can
import `boundary` without a cycle.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _as_mask_batch(x: Any, name: str) -> np.ndarray:
  """(N, H, W) bool from a bool-like (N, H, W) or (N, H, W, 1) array."""
  x = np.asarray(x)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 3:
    raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, 1), got {x.shape}")
  if x.dtype == bool:
    return x
  if np.issubdtype(x.dtype, np.floating):
    # A probability map passed by mistake would otherwise count every non-zero pixel as lesion.
    if not np.all((x == 0) | (x == 1)):
      raise ValueError(f"{name} is a float array with values other than 0 and 1; binarize it first")
  return x != 0
