"""The metrics, by their public names: everything of `lesion_jax.eval.metrics` (segmentation,
boundary, classification; the ISIC conventions are in its docstring), plus the two scores a
notebook asks for most, averaged over images as the ISIC challenges do.

    from lesion_jax import metrics
    metrics.jaccard(pred_masks, true_masks)          # mean per-image Jaccard
    metrics.classification_scores(labels, probs, class_names)
"""
from typing import Any

import numpy as np

from lesion_jax.eval.metrics import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
from lesion_jax.eval.metrics import segmentation_scores


def _batch(masks: Any) -> np.ndarray:
  masks = np.asarray(masks)
  return masks[None] if masks.ndim == 2 else masks


def jaccard(pred: Any, target: Any) -> float:
  """Mean per-image Jaccard index of binary masks (N, H, W), or of one (H, W) mask each."""
  return float(segmentation_scores(_batch(pred), _batch(target))["jaccard"])


def dice(pred: Any, target: Any) -> float:
  """Mean per-image Dice coefficient of binary masks (N, H, W), or of one (H, W) mask each."""
  return float(segmentation_scores(_batch(pred), _batch(target))["dice"])
