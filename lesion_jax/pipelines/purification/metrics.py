"""The inpainter's metrics: scores of occlusion removal inside the occluded pixels only (PSNR,
SSIM, L1 against the clean scene), and OpenCV's classical inpainting (Telea; Navier-Stokes) as
the baselines on the same masks. Images are uint8 RGB (H, W, 3); hole masks bool (H, W), True =
occluded (to fill)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

OPENCV_METHODS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}
SCORES = ("psnr", "ssim", "l1")
# Wang et al. 2004's SSIM: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255.
_SSIM_SIGMA = 1.5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-pixel SSIM of two uint8 images (H, W[, C]), averaged over channels, (H, W)."""
  x, y = (np.asarray(v, np.float64) for v in (a, b))
  blur = lambda v: cv2.GaussianBlur(v, (11, 11), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)
  mx, my = blur(x), blur(y)
  vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
  s = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
  return s.mean(axis=-1) if s.ndim == 3 else s


def hole_scores(output: np.ndarray, target: np.ndarray, holes: np.ndarray) -> dict[str, float]:
  """PSNR (dB, peak 255), SSIM (mean of the SSIM map) and L1 (mean |difference|, 0-255 scale)
  over the hole pixels of one image; NaN for an image without holes."""
  holes = np.asarray(holes, bool)
  if output.shape != target.shape or output.shape[:2] != holes.shape:
    raise ValueError(f"shapes differ: output {output.shape}, target {target.shape}, holes {holes.shape}")
  if not holes.any():
    return {k: float("nan") for k in SCORES}
  diff = output.astype(np.float64)[holes] - target.astype(np.float64)[holes]
  mse = float(np.mean(diff ** 2))
  return {"psnr": 10 * np.log10(255.0 ** 2 / max(mse, 1e-10)),
          "ssim": float(ssim_map(output, target)[holes].mean()),
          "l1": float(np.abs(diff).mean())}


def opencv_inpaint(image: np.ndarray, holes: np.ndarray, method: str, radius: float = 3.0) -> np.ndarray:
  """`cv2.inpaint` of the hole pixels (radius in px, OpenCV's usual 3)."""
  if method not in OPENCV_METHODS:
    raise ValueError(f"unknown OpenCV inpainting method {method!r}; choose one of {list(OPENCV_METHODS)}")
  return cv2.inpaint(np.ascontiguousarray(image), np.asarray(holes, np.uint8) * 255, radius,
                     OPENCV_METHODS[method])


class InpaintingAccumulator:
  """Per-image hole scores of several methods (e.g. the network and the OpenCV baselines);
  `summary()` gives each method's mean over the images that have holes, plus "num_images" and
  the mean hole fraction."""

  def __init__(self, methods: Sequence[str]):
    self.methods = tuple(methods)
    self.rows: dict[str, dict[str, list[float]]] = {m: {k: [] for k in SCORES} for m in self.methods}
    self.hole_fraction: list[float] = []

  def update(self, outputs: Mapping[str, np.ndarray], target: np.ndarray, holes: np.ndarray) -> None:
    self.hole_fraction.append(float(np.mean(holes)))
    for method in self.methods:
      for k, v in hole_scores(outputs[method], target, holes).items():
        self.rows[method][k].append(v)

  def per_image(self) -> dict[str, np.ndarray]:
    out = {f"{m}_{k}": np.asarray(v, np.float64) for m, d in self.rows.items() for k, v in d.items()}
    out["hole_fraction"] = np.asarray(self.hole_fraction, np.float64)
    return out

  @staticmethod
  def summarize(per_image: Mapping[str, np.ndarray], methods: Sequence[str]) -> dict[str, Any]:
    fraction = np.asarray(per_image["hole_fraction"])
    has = fraction > 0
    scores: dict[str, Any] = {"num_images": int(len(fraction)), "images_with_holes": int(has.sum()),
                              "hole_fraction": float(fraction.mean()) if len(fraction) else 0.0}
    for m in methods:
      for k in SCORES:
        values = np.asarray(per_image[f"{m}_{k}"])[has]
        scores[f"{m}_{k}"] = float(values.mean()) if len(values) else float("nan")
    return scores
