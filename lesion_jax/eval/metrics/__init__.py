"""Segmentation and classification metrics shared by every experiment (host-side numpy).

Segmentation follows the ISIC 2017/2018 challenge conventions: every metric is computed per
image from that image's pixel counts and then averaged over images (not pooled over pixels).

Per-image definitions, with tp/fp/fn/tn counted over the image's pixels:

  jaccard     = tp / (tp + fp + fn)            1.0 when pred and target are both empty
  dice        = 2 tp / (2 tp + fp + fn)        1.0 when pred and target are both empty
  accuracy    = (tp + tn) / pixels
  sensitivity = tp / (tp + fn)                 1.0 when the target is empty (nothing to miss)
  specificity = tn / (tn + fp)                 1.0 when the target covers the whole image

So an empty prediction for a non-empty target scores jaccard = dice = sensitivity = 0, and a
non-empty prediction for an empty target scores jaccard = dice = 0, sensitivity = 1.
"jaccard_thresholded" is the ISIC 2018 score: a per-image Jaccard below `threshold_ja` (0.65)
counts as 0, one at or above it counts as is, then the mean is taken. Boundary metrics (HD95 and
the DAVIS boundary F-score, with their empty-mask rules) are in `boundary_scores`.

Classification (`classification_scores`):

  * Binary problems (probs (N,) = P(class 1), or (N, 2)): precision/recall/f1/sensitivity/
    specificity/roc_auc/average_precision are those of the positive class 1. Predicted label is
    the argmax; for probs (N,) that is class 1 when P > 0.5.
  * Multi-class: precision/recall/f1 are macro averages over all C classes (as scikit-learn's
    `average="macro"` with `labels=range(C)`); sensitivity, specificity, roc_auc,
    average_precision and specificity_at_sensitivity are macro means of the one-vs-rest values
    over the classes where they are defined.
  * Precision/recall/f1 with a zero denominator are 0 (scikit-learn's `zero_division=0`).
    Everything else that is undefined (e.g. ROC AUC with one class in `labels`) is None, and
    `notes` says why. The result contains only Python scalars, lists, dicts and None.
  * `balanced_accuracy` (every problem) is the mean per-class recall, the ISIC 2018 Task 3 score;
    `ece` the top-label expected calibration error over 15 equal-width confidence bins
    (`calibration`, with temperature scaling: `fit_temperature`, `apply_temperature`).
    With a melanoma class (ISIC 2017's nevus / melanoma / seborrheic keratosis, or the ISIC 2018
    names), the Part 3 scores are top-level keys: `melanoma_roc_auc`, `keratosis_roc_auc`
    (one-vs-rest), `mean_roc_auc` (their mean, the challenge's ranking score) and
    `melanoma_specificity_at_sensitivity` at 82 / 89 / 95 % sensitivity (its secondary scores:
    the highest specificity among the ROC curve's thresholds whose sensitivity is >= the target).

Layout (every name is re-exported here, so `from lesion_jax.eval import metrics; metrics.X` is
the way to use them), by family: `segmentation` (counts, per-image scores, summaries,
SegmentationAccumulator, pixel_confusion), `boundary` (HD95, boundary F, boundary recall,
under-segmentation error), `classification` (ROC, specificity at sensitivity,
classification_scores, isic2017_scores), `calibration` (ECE, reliability bins, temperature
scaling); `masks` holds the mask input checks the first two share. A pipeline's own metrics are
in its package: Mask R-CNN's box AP (lesion_jax/pipelines/maskrcnn/metrics.py), the GAN's FD-derm
and KID (lesion_jax/pipelines/gan/metrics.py), the inpainter's hole scores
(lesion_jax/pipelines/purification/metrics.py).
"""
# pylint: disable=g-importing-member,unused-import
from lesion_jax.eval.metrics.boundary import (BOUNDARY_KEYS, boundary_recall, boundary_scores, boundary_scores_one,
                                              boundary_tolerance, mask_boundary, undersegmentation_error)
from lesion_jax.eval.metrics.calibration import (DEFAULT_NUM_BINS, TEMPERATURE_BOUNDS, apply_temperature,
                                                 expected_calibration_error, fit_temperature,
                                                 negative_log_likelihood, reliability_bins)
from lesion_jax.eval.metrics.classification import (DEFAULT_SENSITIVITIES, ISIC2017_KERATOSIS, ISIC2017_KEYS,
                                                    ISIC2017_MELANOMA, classification_scores, isic2017_scores,
                                                    roc_curve_points, specificity_at_sensitivity)
from lesion_jax.eval.metrics.segmentation import (SEGMENTATION_KEYS, SegmentationAccumulator,
                                                  per_image_segmentation_scores, pixel_confusion,
                                                  scores_from_counts, segmentation_counts, segmentation_scores,
                                                  summarize_segmentation)
