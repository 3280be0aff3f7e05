"""Figures for experiments: mask overlays, sample grids, ROC curves, reliability diagrams,
confusion matrices, curves.

`overlay` is pure numpy/OpenCV (predict calls it per image). The `save_*` functions render with
matplotlib's object-oriented API on an Agg canvas -- no pyplot, so no global figure registry to
leak into and nothing that needs a display -- and write the PNG atomically via lesion_jax.io.
"""
from __future__ import annotations

import io as _io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from lesion_jax import io as lj_io
from lesion_jax.eval import metrics as metrics_lib

PRED_COLOR = (0, 255, 255)  # Cyan: prediction tint and contour (stands out on skin tones).
TRUE_COLOR = (0, 255, 0)  # Green: ground-truth contour.
_DPI = 100


def to_uint8_rgb(image: Any) -> np.ndarray:
  """uint8 (H, W, 3) for display: uint8 as is, floats in [0, 1] scaled, other floats min-max."""
  img = np.asarray(image)
  if img.ndim == 3 and img.shape[-1] == 1:
    img = img[..., 0]
  if img.ndim == 2:
    img = np.stack([img] * 3, axis=-1)
  if img.ndim != 3 or img.shape[-1] != 3:
    raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got {np.shape(image)}")
  if img.dtype == np.uint8:
    return img
  if img.dtype == bool:
    return img.astype(np.uint8) * 255
  img = np.nan_to_num(img.astype(np.float64))
  lo, hi = float(img.min(initial=0.0)), float(img.max(initial=0.0))
  if lo < 0.0 or hi > 1.0:
    # Standardized network inputs: stretch to the visible range.
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
  return np.round(img * 255.0).astype(np.uint8)


def _mask_for(mask: Any, shape: tuple[int, int], name: str) -> np.ndarray:
  m = np.asarray(mask)
  if m.ndim == 3 and m.shape[-1] == 1:
    m = m[..., 0]
  if m.shape != shape:
    raise ValueError(f"{name} shape {np.shape(mask)} does not match image shape {shape}; "
                     "resize it first (postprocess.resize_mask)")
  return m.astype(bool)


def overlay(image: Any, pred_mask: Any = None, true_mask: Any = None,
            alpha: float = 0.35) -> np.ndarray:
  """uint8 RGB copy of `image` with the prediction tinted and outlined in cyan, and the ground
  truth outlined in green. Pixels away from both masks' boundaries and outside the prediction
  are unchanged."""
  out = to_uint8_rgb(image).copy()
  h, w = out.shape[:2]
  thickness = max(1, round(min(h, w) / 200))
  contours = []
  if pred_mask is not None:
    p = _mask_for(pred_mask, (h, w), "pred_mask")
    tint = np.asarray(PRED_COLOR, np.float64)
    out[p] = np.round((1.0 - alpha) * out[p] + alpha * tint).astype(np.uint8)
    contours.append((p, PRED_COLOR))
  if true_mask is not None:
    contours.append((_mask_for(true_mask, (h, w), "true_mask"), TRUE_COLOR))
  out = np.ascontiguousarray(out)
  for m, color in contours:
    # RETR_LIST also outlines holes, so a ring-shaped prediction reads as a ring.
    found, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, found, -1, color, thickness)
  return out


# ----------------------------------------------------------------------------------------------
# Rendering helpers


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=_DPI)
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str | os.PathLike) -> None:
  buf = _io.BytesIO()
  fig.savefig(buf, format="png", dpi=_DPI)
  fig.clear()  # Drop the artists now rather than waiting for garbage collection.
  lj_io.atomic_write_bytes(path, buf.getvalue())


def _grid(n: int, ncols: int, cell: float = 2.5, title_space: float = 0.3
          ) -> tuple[Figure, list[Any]]:
  ncols = max(1, min(ncols, n))
  nrows = max(1, math.ceil(n / ncols))
  fig = _new_figure(ncols * cell, nrows * (cell + title_space))
  axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
  for ax in axes:
    ax.set_axis_off()
  return fig, axes


def _nth(seq: Any, i: int) -> Any:
  return None if seq is None else seq[i]


def _check_len(name: str, seq: Any, n: int) -> None:
  if seq is not None and len(seq) != n:
    raise ValueError(f"{name} has {len(seq)} entries for {n} images")


def save_overlay_grid(path: str | os.PathLike, images: Sequence[Any], pred_masks: Sequence[Any],
                      true_masks: Sequence[Any] | None = None,
                      titles: Sequence[str] | None = None, ncols: int = 4) -> None:
  """Grid of `overlay`s (prediction cyan, ground truth green); images may differ in size."""
  n = len(images)
  _check_len("pred_masks", pred_masks, n)
  _check_len("true_masks", true_masks, n)
  _check_len("titles", titles, n)
  fig, axes = _grid(max(n, 1), ncols, cell=3.0)
  if n == 0:
    axes[0].text(0.5, 0.5, "no images", ha="center", va="center")
  for i in range(n):
    axes[i].imshow(overlay(images[i], pred_masks[i], _nth(true_masks, i)))
    if titles is not None:
      axes[i].set_title(str(titles[i]), fontsize=8)
  legend = "prediction: cyan" + ("   ground truth: green" if true_masks is not None else "")
  fig.suptitle(legend, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def save_refinement_grid(path: str | os.PathLike, images: Sequence[Any], fcn_maps: Sequence[Any],
                         borders: Sequence[Any], refined_maps: Sequence[Any], final_masks: Sequence[Any],
                         true_masks: Sequence[Any] | None = None,
                         titles: Sequence[str] | None = None) -> None:
  """One row per example: image | FCN map | superpixel borders | refined (fused) map | final
  contour (cyan) vs ground truth (green). Maps are [0, 1] floats, borders and masks bool, each
  row at one size."""
  n = len(images)
  for name, seq in (("fcn_maps", fcn_maps), ("borders", borders), ("refined_maps", refined_maps),
                    ("final_masks", final_masks), ("true_masks", true_masks), ("titles", titles)):
    _check_len(name, seq, n)
  columns = ("image", "FCN map", "superpixels", "refined map", "final vs truth")
  fig = _new_figure(len(columns) * 2.2, max(n, 1) * 2.4)
  for i in range(max(n, 1)):
    for j, column in enumerate(columns):
      ax = fig.add_subplot(max(n, 1), len(columns), i * len(columns) + j + 1)
      ax.set_axis_off()
      if i == 0:
        ax.set_title(column, fontsize=8)
      if n == 0:
        continue
      image = to_uint8_rgb(images[i])
      if column == "image":
        ax.imshow(image)
        if titles is not None:
          ax.text(0, -0.5, str(titles[i]), fontsize=6, va="bottom")
      elif column in ("FCN map", "refined map"):
        ax.imshow(np.asarray(fcn_maps[i] if column == "FCN map" else refined_maps[i], np.float32),
                  cmap="magma", vmin=0.0, vmax=1.0)
      elif column == "superpixels":
        shown = image.copy()
        shown[_mask_for(borders[i], image.shape[:2], "borders")] = (255, 255, 0)
        ax.imshow(shown)
      else:
        ax.imshow(overlay(image, final_masks[i], _nth(true_masks, i), alpha=0.0))
  fig.tight_layout()
  _save(fig, path)


def save_column_grid(path: str | os.PathLike, columns: Mapping[str, Sequence[Any]],
                     titles: Sequence[str] | None = None, cell: float = 2.2,
                     cell_titles: Mapping[str, Sequence[str]] | None = None,
                     suptitle: str | None = None) -> None:
  """One row per example, one column per named sequence: uint8/float RGB images, or 2-D masks
  and maps (shown grey-scale, [0, 1] or {0, 255}). E.g. original | detected occlusions |
  purified | truth. `titles` label the rows (drawn above the first column); `cell_titles[name]`
  gives every cell of column `name` its own title instead of the column's name on the first row."""
  names = list(columns)
  n = len(columns[names[0]]) if names else 0
  cell_titles = cell_titles or {}
  for name in names:
    _check_len(name, columns[name], n)
  for name, seq in cell_titles.items():
    _check_len(f"cell_titles[{name!r}]", seq, n)
  _check_len("titles", titles, n)
  fig = _new_figure(max(len(names), 1) * cell, max(n, 1) * (cell + 0.2))
  for i in range(max(n, 1)):
    for j, name in enumerate(names):
      ax = fig.add_subplot(max(n, 1), len(names), i * len(names) + j + 1)
      ax.set_axis_off()
      if name in cell_titles and n:
        ax.set_title(str(cell_titles[name][i]), fontsize=7)
      elif i == 0:
        ax.set_title(name, fontsize=8)
      if n == 0:
        continue
      value = np.asarray(columns[name][i])
      if value.ndim == 2 or (value.ndim == 3 and value.shape[-1] == 1):
        value = value.reshape(value.shape[:2]).astype(np.float32)
        ax.imshow(value / 255.0 if value.max() > 1.0 else value, cmap="gray", vmin=0.0, vmax=1.0)
      else:
        ax.imshow(to_uint8_rgb(value))
      if j == 0 and titles is not None:
        ax.text(0, -0.5, str(titles[i]), fontsize=6, va="bottom")
  if suptitle:
    fig.suptitle(suptitle, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def save_sample_grid(path: str | os.PathLike, images: Sequence[Any],
                     masks: Sequence[Any] | None = None, titles: Sequence[str] | None = None,
                     ncols: int = 8) -> None:
  """Grid of (e.g. augmented training) images, with mask outlines in green when given."""
  n = len(images)
  _check_len("masks", masks, n)
  _check_len("titles", titles, n)
  fig, axes = _grid(max(n, 1), ncols, cell=2.0)
  if n == 0:
    axes[0].text(0.5, 0.5, "no images", ha="center", va="center")
  for i in range(n):
    img = to_uint8_rgb(images[i])
    if masks is not None:
      img = overlay(img, true_mask=masks[i])
    axes[i].imshow(img)
    if titles is not None:
      axes[i].set_title(str(titles[i]), fontsize=7)
  fig.tight_layout()
  _save(fig, path)


def save_roc_curve(path: str | os.PathLike, labels_binary: Any, scores: Any = None,
                   label: str | None = None) -> None:
  """ROC curve(s) with the AUC in the legend.

  Either `labels_binary` and `scores` for one curve, or `labels_binary` = {name: (labels,
  scores)} (and `scores` None) for several. A curve whose labels hold a single class has no
  ROC; it is listed in the legend as undefined instead of failing.
  """
  if isinstance(labels_binary, Mapping):
    if scores is not None:
      raise ValueError("pass scores inside the dict when giving several curves")
    curves = dict(labels_binary)
  else:
    if scores is None:
      raise ValueError("scores are required")
    curves = {label or "model": (labels_binary, scores)}
  fig = _new_figure(5.0, 5.0)
  ax = fig.add_subplot(1, 1, 1)
  ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
  for name, (y, s) in curves.items():
    y = np.asarray(y).reshape(-1)
    if y.size == 0 or np.all(y == y[0]):
      ax.plot([], [], label=f"{name} (AUC undefined: one class)")
      continue
    fpr, tpr, _ = metrics_lib.roc_curve_points(y, s)
    auc = float(np.trapezoid(tpr, fpr))
    ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC = {auc:.3f})")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel("false positive rate (1 - specificity)")
  ax.set_ylabel("true positive rate (sensitivity)")
  ax.set_aspect("equal")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  _save(fig, path)


def save_reliability_diagram(path: str | os.PathLike, labels: Any, probs: Mapping[str, Any] | Any,
                             num_bins: int = metrics_lib.DEFAULT_NUM_BINS, title: str | None = None) -> None:
  """Top-label reliability diagram: per confidence bin (metrics.reliability_bins), the accuracy
  against the bin's mean confidence, the diagonal being perfect calibration, with each series' ECE
  in the legend; below, how many examples each bin holds. `probs` (N, C) for one series, or
  {name: probs} for several on the same labels (e.g. before and after temperature scaling)."""
  series = dict(probs) if isinstance(probs, Mapping) else {"model": probs}
  fig = _new_figure(5.0, 6.0)
  grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
  ax, counts = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
  ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="perfect calibration")
  width = 1.0 / num_bins
  for k, (name, p) in enumerate(series.items()):
    bins = metrics_lib.reliability_bins(labels, p, num_bins)
    ece = metrics_lib.expected_calibration_error(labels, p, num_bins)
    filled = bins["count"] > 0
    ax.plot(bins["confidence"][filled], bins["accuracy"][filled], marker="o", markersize=4, linewidth=1.5,
            label=f"{name} (ECE = {ece:.3f})")
    # Side by side within each bin, one bar per series.
    offset = (k + 0.5) / len(series) * width
    counts.bar(bins["edges"][:-1] + offset, bins["count"], width=width / len(series), alpha=0.7, label=name)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel("confidence (largest probability)")
  ax.set_ylabel("accuracy")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize=8)
  if title:
    ax.set_title(title, fontsize=9)
  counts.set_xlim(0, 1)
  counts.set_xlabel(f"confidence ({num_bins} bins)")
  counts.set_ylabel("examples")
  counts.grid(alpha=0.3)
  fig.tight_layout()
  _save(fig, path)


def save_confusion_matrix(path: str | os.PathLike, matrix: Any, class_names: Sequence[str],
                          normalize: bool = True) -> None:
  """Confusion matrix (rows = true class) with counts in the cells; colours by row fraction
  when `normalize`, by count otherwise."""
  cm = np.asarray(matrix, np.float64)
  k = len(class_names)
  if cm.shape != (k, k):
    raise ValueError(f"matrix shape {cm.shape} does not match {k} class names")
  rows = cm.sum(axis=1, keepdims=True)
  frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
  shown = frac if normalize else cm
  vmax = 1.0 if normalize else max(float(cm.max(initial=0.0)), 1.0)
  side = 2.0 + 0.7 * k
  fig = _new_figure(side + 1.0, side)
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
               label="fraction of true class" if normalize else "count")
  for i in range(k):
    for j in range(k):
      text = f"{int(round(cm[i, j]))}"
      if normalize:
        text += f"\n{100.0 * frac[i, j]:.1f}%"
      dark = shown[i, j] > 0.5 * vmax
      ax.text(j, i, text, ha="center", va="center", fontsize=8,
              color="white" if dark else "black")
  ax.set_xticks(range(k), [str(c) for c in class_names], rotation=45, ha="right")
  ax.set_yticks(range(k), [str(c) for c in class_names])
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  fig.tight_layout()
  _save(fig, path)


def save_curves(path: str | os.PathLike, history: Mapping[str, Sequence[tuple[int, float]]],
                title: str | None = None, xlabel: str = "step") -> None:
  """One subplot per metric of `history` = {"train/loss": [(step, value), ...], ...}."""
  names = list(history)
  n = max(len(names), 1)
  ncols = min(3, n)
  nrows = math.ceil(n / ncols)
  fig = _new_figure(4.0 * ncols, 3.0 * nrows + (0.4 if title else 0.0))
  if not names:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    ax.text(0.5, 0.5, "no data", ha="center", va="center")
  for i, name in enumerate(names):
    ax = fig.add_subplot(nrows, ncols, i + 1)
    points = [(s, v) for s, v in history[name] if v is not None and np.isfinite(v)]
    if points:
      steps, values = zip(*sorted(points))
      ax.plot(steps, values, marker="o" if len(points) <= 30 else None, markersize=3,
              linewidth=1.2)
    else:
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def save_histogram(path: str | os.PathLike, values: Mapping[str, Any], xlabel: str,
                   bins: int = 20) -> None:
  """Overlaid histograms on shared bins, e.g. per-image Jaccard of several methods; the legend
  gives each series' size and mean."""
  series = {name: np.asarray(v, np.float64).reshape(-1) for name, v in values.items()}
  series = {name: v[np.isfinite(v)] for name, v in series.items()}
  fig = _new_figure(6.0, 4.0)
  ax = fig.add_subplot(1, 1, 1)
  pooled = np.concatenate([v for v in series.values()] + [np.zeros((0,))])
  if pooled.size == 0:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
  else:
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:
      lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    for name, v in series.items():
      label = f"{name} (n = {v.size}" + (f", mean = {v.mean():.3f})" if v.size else ")")
      ax.hist(v, bins=edges, alpha=0.5, label=label, edgecolor="black", linewidth=0.3)
    ax.legend(fontsize=8)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("count")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  _save(fig, path)

