r"""tf.data throughput with augmentation and an artifact join, against the train step it feeds.

  python benchmarks/input_pipeline.py [--data_dir=/tmp/bench_tfds] [--image_size=64] [--batch_size=16]

Measures the segmentation training stream (decode, resize, flips, rotation about the lesion
centroid, random crop, batching) on `synthetic_lesions` with the ground-truth mask, with the hair
and occlusion masks moved along, and with a K-means pseudo-mask joined by id, then
the U-Net train step's consumption (images/s) at the same size and batch, and prints the ratio
(>= 3 means the input never starves the step). The dataset and pseudo-masks are generated into
--data_dir on first use.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import train_step  # noqa: E402
from lesion_jax.artifacts import annotate, kmeans, store  # noqa: E402
from lesion_jax.data import ops, pipeline  # noqa: E402
from lesion_jax.data.augment import AugmentConfig  # noqa: E402
from lesion_jax.models.unet import UNet  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default="/tmp/lesion_jax_bench_tfds")
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--batches", type=int, default=200)
  args = parser.parse_args()
  builder = pipeline.get_builder("synthetic_lesions", args.data_dir)
  config = kmeans.KMeansConfig()
  kstore = annotate.kmeans_store(store.default_root(args.data_dir), builder.info.full_name, config)
  annotate.annotate_split(builder, "train", kstore, config)
  base = pipeline.InputConfig(data_dir=args.data_dir, image_size=args.image_size, batch_size=args.batch_size)
  size, augment = args.image_size, AugmentConfig()
  masks = ("mask", "hair_mask", "occlusion_mask")
  three_masks = ([ops.decode_image(), ops.resize_image("image", size)]
                 + [op for k in masks for op in (ops.decode_mask(k), ops.resize_mask(k, size))]
                 + [ops.augment(augment, spatial_keys=masks), ops.normalize(), ops.keep(("id", "image") + masks)])
  joined = dataclasses.replace(base, joins=(pipeline.ArtifactJoin("mask", kstore.directory),))
  for name, cfg, preprocess in (("ground-truth masks", base, ops.segmentation_ops(size, augment)),
                                ("lesion + hair + occlusion masks moved together", base, three_masks),
                                ("K-means masks joined by id", joined, ops.segmentation_ops(size, augment))):
    it = pipeline.train_iterator(cfg, preprocess, builder=builder)
    for _ in range(5):
      next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
      next(it)
    ips = args.batches * args.batch_size / (time.perf_counter() - start)
    print(f"tf.data segmentation stream, augmented, {name}: {ips:.0f} images/s")
  model = UNet(features=16, levels=4, norm="batch")
  seconds, _ = train_step.measure_jax(model, args.batch_size, args.image_size, "segmentation")
  step_ips = args.batch_size / seconds
  print(f"U-Net train step (batch {args.batch_size}, {args.image_size}px, BatchNorm): {step_ips:.0f} images/s")
  print(f"ratio input / step (with the artifact join): {ips / step_ips:.1f}")


if __name__ == "__main__":
  main()
