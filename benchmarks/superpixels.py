r"""SLIC superpixel artifacts against skimage.segmentation.slic, speed and quality, in one run.

  pip install scikit-image   # the reference; not a dependency of lesion_jax
  python benchmarks/superpixels.py [--num=64] [--size=256] [--superpixels=200] \
      [--isic=../shared/data/isic2017_sample]

Ours: `lesion_jax.artifacts.superpixels.compute_superpixels` (OpenCV ximgproc SLIC on Lab,
connectivity enforced, plus the feature table: mean/std Lab, centroid, area, bbox, adjacency)
over a thread pool with one thread per core, as the artifact stage runs it. Reference:
`skimage.segmentation.slic(n_segments=N, compactness=10, start_label=0)` (labels only), one image
at a time and over the same pool. Images: the synthetic_lesions test split rendered at --size,
and the ISIC 2017 sample's Validation images resized to --size x --size. Quality against the
ground-truth lesion mask at the same size: boundary recall (truth border pixels within 2 px of a
superpixel border) and under-segmentation error (Neubert and Protzel), mean over images, with the
mean superpixel count each method produced.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lesion_jax.artifacts import superpixels  # noqa: E402
from lesion_jax.data import synthetic  # noqa: E402
from lesion_jax.data.builders import synthetic_lesions  # noqa: E402
from lesion_jax.eval import metrics  # noqa: E402


def synthetic_test(num: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
  out = []
  for i in range(num):
    ex = synthetic.render_example(synthetic_lesions.example_seed(0, "test", i),
                                  synthetic.RenderConfig(image_size=size))
    out.append((ex["image"], ex["mask"][..., 0] > 0 if ex["mask"].ndim == 3 else ex["mask"] > 0))
  return out


def isic_validation(root: str, num: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
  out = []
  for path in sorted(glob.glob(os.path.join(root, "ISIC-2017_Validation_Data", "*.jpg")))[:num]:
    name = os.path.splitext(os.path.basename(path))[0]
    mask_path = os.path.join(root, "ISIC-2017_Validation_Part1_GroundTruth", f"{name}_segmentation.png")
    image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
    out.append((cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
                cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST_EXACT) > 0))
  return out


def throughput(fn, images, pool, repeats: int = 3) -> float:
  best = float("inf")
  list(pool.map(fn, images[:4]))  # warm-up
  for _ in range(repeats):
    start = time.perf_counter()
    list(pool.map(fn, images))
    best = min(best, time.perf_counter() - start)
  return len(images) / best


def quality(fn, data) -> tuple[float, float, float]:
  br, ue, count = [], [], []
  for image, mask in data:
    labels = fn(image)
    br.append(metrics.boundary_recall(labels, mask, 2.0))
    ue.append(metrics.undersegmentation_error(labels, mask))
    count.append(len(np.unique(labels)))
  return float(np.mean(br)), float(np.mean(ue)), float(np.mean(count))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num", type=int, default=64)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--superpixels", type=int, default=200)
  parser.add_argument("--iterations", type=int, default=superpixels.SuperpixelConfig().iterations)
  parser.add_argument("--isic", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "..", "shared", "data", "isic2017_sample"))
  args = parser.parse_args()
  from skimage.segmentation import slic  # pylint: disable=g-import-not-at-top

  cv2.setNumThreads(1)  # one image per thread, as the artifact stage runs
  config = superpixels.SuperpixelConfig(num_superpixels=args.superpixels, iterations=args.iterations)
  ours = lambda im: superpixels.compute_superpixels(im, config).labels
  ours_full = lambda im: superpixels.compute_superpixels(im, config)
  reference = lambda im: slic(im, n_segments=args.superpixels, compactness=10.0, start_label=0)
  sets = {"synthetic test": synthetic_test(args.num, args.size)}
  if os.path.isdir(args.isic):
    sets["ISIC 2017 sample Validation"] = isic_validation(args.isic, args.num, args.size)
  else:
    print(f"(no ISIC sample at {args.isic}: synthetic images only)")
  images = [im for im, _ in sets["synthetic test"]]
  workers = os.cpu_count() or 1
  print(f"{len(images)} images {args.size}x{args.size}, ~{args.superpixels} superpixels, {workers} cores, "
        f"OpenCV SLIC iterations={args.iterations} (skimage: its default 10)")
  with concurrent.futures.ThreadPoolExecutor(1) as one, concurrent.futures.ThreadPoolExecutor(workers) as pool:
    ours_rate = throughput(ours_full, images, pool)
    ours_one = throughput(ours_full, images, one)
    ref_one = throughput(reference, images, one)
    ref_rate = throughput(reference, images, pool)
  print(f"lesion_jax superpixels (labels + feature table), {workers} threads: {ours_rate:7.1f} img/s "
        f"(1 thread: {ours_one:.1f})")
  print(f"skimage slic (labels only), {workers} threads:                 {ref_rate:7.1f} img/s "
        f"(1 thread: {ref_one:.1f})")
  print(f"speed ratio (ours / skimage), {workers} threads: {ours_rate / ref_rate:.2f}; one thread: "
        f"{ours_one / ref_one:.2f}; target >= 100 img/s: {'met' if ours_rate >= 100 else 'NOT met'}")
  print(f"{'images':28s} {'method':10s} {'count':>6s} {'BR@2px':>7s} {'UE':>7s}")
  for name, data in sets.items():
    for method, fn in (("lesion_jax", ours), ("skimage", reference)):
      br, ue, count = quality(fn, data)
      print(f"{name:28s} {method:10s} {count:6.0f} {br:7.3f} {ue:7.3f}")


if __name__ == "__main__":
  main()
