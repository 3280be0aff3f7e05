"""The GAN's metrics, sample quality of generated images: the Fréchet distance and the (unbiased)
kernel distance between two sets of feature vectors (FD-derm uses this project's own
classifier's features, so its values are not comparable with published FIDs on Inception
features). Host-side NumPy, as lesion_jax.eval.metrics; here because only this pipeline compares
feature distributions.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def frechet_distance(features_a: Any, features_b: Any) -> float:
  """Frechet distance between Gaussians fitted to two sets of features (N, F) and (M, F):
  |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017). Biased upwards for
  small N: compare values computed with equal sample sizes."""
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f"need two (N >= 2, F) feature sets with the same F, got {a.shape} and {b.shape}")
  mu = a.mean(0) - b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
  if not np.all(np.isfinite(root)):  # singular product: regularise, as the reference FID code does
    eps = 1e-6 * np.eye(a.shape[1])
    root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
  return float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(np.real(root)))


def kernel_distance(features_a: Any, features_b: Any) -> float:
  """Unbiased squared MMD with the cubic polynomial kernel k(x, y) = (x.y / F + 1)^3 (the KID of
  Binkowski et al. 2018): unbiased for any sample size, so small classes can be compared."""
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f"need two (N >= 2, F) feature sets with the same F, got {a.shape} and {b.shape}")
  f = a.shape[1]
  kaa, kbb, kab = ((x @ y.T / f + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
  n, m = len(a), len(b)
  return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
               - 2 * kab.mean())
