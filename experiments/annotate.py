r"""Self-learning annotation: K-means pseudo-masks for whole dataset splits, stored as artifacts.

  python -m experiments.annotate [--dataset=synthetic_lesions] [--splits=train,validation,test]

Resumable (re-running skips what is done); reports pseudo-mask Jaccard against the ground truth
where the dataset has it, and how many polarity decisions were flagged uncertain.
"""
import os

from absl import app, flags

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax.artifacts import annotate, store
from lesion_jax.data import pipeline

FLAGS = flags.FLAGS
common.define_config_flags(pipeline.InputConfig(), skip={
    leaf.path for leaf in config_lib.leaves(pipeline.InputConfig())
    if leaf.path not in ("dataset", "data_dir", "manual_dir")})
common.define_kmeans_flags()
flags.DEFINE_list("splits", ["train", "validation", "test"], "Splits to annotate.")
flags.DEFINE_integer("annotate_batch", 64, "Images clustered per jitted call.")
flags.DEFINE_integer("workers", None, "Threads for the per-image OpenCV work (default: all cores).")


def main(argv):
  del argv
  common.quiet_library_logs()
  builder = pipeline.get_builder(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir, field="dataset")
  config = common.kmeans_config_from_flags()
  root = FLAGS.artifact_dir or store.default_root(FLAGS.data_dir)
  kstore = annotate.kmeans_store(root, builder.info.full_name, config)
  results = {}
  for split in FLAGS.splits:
    summary = annotate.annotate_split(builder, split, kstore, config, FLAGS.annotate_batch,
                                      FLAGS.workers, figure_dir=os.path.join(kstore.directory, "figures"))
    results[split] = summary
    ja = f"JA {summary.scores['jaccard']:.4f}" if summary.scores else "no ground truth"
    print(f"{split}: {summary.total} images ({summary.computed} computed at "
          f"{summary.images_per_second:.1f} img/s, {summary.reused} reused), {summary.uncertain} "
          f"uncertain, {ja}")
  print(f"Pseudo-masks in {kstore.directory}")


if __name__ == "__main__":
  common.run(main)
