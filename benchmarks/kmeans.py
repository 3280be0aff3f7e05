r"""K-means pseudo-mask throughput at 256 px against OpenCV's cv2.kmeans, measured in one run.

  python benchmarks/kmeans.py [--num=128] [--size=256]

Ours: the whole annotation (Lab conversion, hair filter, field of view, batched JAX K-means with
k=5 on a 4096-pixel grid then assignment of every pixel, cluster merging, polarity, cleaning), on
256x256 synthetic dermoscopy images, clustering at full 256 px (work_size=256) and at the default
work size. Reference: cv2.kmeans (k=5, 10 iterations, 3 attempts, k-means++), one image at a time
on all 65536 pixels' colours, clustering only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lesion_jax.artifacts import kmeans  # noqa: E402
from lesion_jax.data import synthetic  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num", type=int, default=128)
  parser.add_argument("--size", type=int, default=256)
  args = parser.parse_args()
  images = [synthetic.render_example(s, synthetic.RenderConfig(image_size=args.size))["image"]
            for s in range(args.num)]
  pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count())
  results = {}
  for work in (args.size, kmeans.KMeansConfig().work_size):
    config = kmeans.KMeansConfig(work_size=work)
    kmeans.kmeans_pseudo_masks(images[:64], config, pool)  # compile
    best = float("inf")
    for _ in range(3):
      start = time.perf_counter()
      for i in range(0, args.num, 64):
        kmeans.kmeans_pseudo_masks(images[i:i + 64], config, pool)
      best = min(best, time.perf_counter() - start)
    results[work] = args.num / best
    print(f"lesion_jax kmeans_pseudo_masks, {args.size}px images clustered at {work}px: {results[work]:.1f} img/s")
  criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
  sample = images[:32]
  start = time.perf_counter()
  for image in sample:
    cv2.kmeans(image.reshape(-1, 3).astype(np.float32), 5, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
  reference = len(sample) / (time.perf_counter() - start)
  print(f"cv2.kmeans one image at a time ({args.size}px, clustering only): {reference:.1f} img/s")
  print(f"ratio (ours at {args.size}px / cv2.kmeans): {results[args.size] / reference:.2f}")


if __name__ == "__main__":
  main()
