"""Flag groups and run bookkeeping shared by the absl entry points (the only place FLAGS live)."""
from __future__ import annotations

import logging as logging_lib
import os
import sys
from typing import Any, Iterable

from absl import flags, logging

from lesion_jax import io

FLAGS = flags.FLAGS


class _LibraryInfoFilter(logging_lib.Filter):
  """Drops INFO records from orbax and TFDS internals, which would bury the progress lines."""
  NOISY = (os.sep + "orbax" + os.sep, os.sep + "tensorflow_datasets" + os.sep, "xla_bridge.py")

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return record.levelno > logging_lib.INFO or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Multi-host: 'auto' joins when --coordinator_address is set or SLURM / Cloud TPU "
                  "multi-host is detected.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host; auto-detected on TPU/SLURM).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host; auto-detected on TPU/SLURM).")

_RUN_FLAGS_NOT_CONFIG = {"distributed", "coordinator_address", "num_processes", "process_id"}


def init_distributed() -> None:
  """Call first in every main: joins a multi-host run when asked or detected."""
  from lesion_jax.train import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)


def define_workdir_flag() -> None:
  flags.DEFINE_string("workdir", None, "Run directory: config.json, metrics.json, checkpoints/, "
                      "TensorBoard events and figures/ go here. Re-running with the same workdir resumes.")
  flags.mark_flag_as_required("workdir")


def define_data_flags(image_size: int = 64, batch_size: int = 16) -> None:
  flags.DEFINE_string("dataset", "synthetic_lesions", "TFDS dataset name[/config], e.g. "
                      "synthetic_lesions, synthetic_lesions/s128, isic2017.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default: ~/tensorflow_datasets).")
  flags.DEFINE_string("manual_dir", None, "Folder with the hand-downloaded archive (real datasets).")
  flags.DEFINE_integer("image_size", image_size, "Images are resized to image_size x image_size.")
  flags.DEFINE_integer("batch_size", batch_size, "Global batch size (split across devices).")
  flags.DEFINE_integer("seed", 0, "Seed for initialisation, shuffling and augmentation.")
  flags.DEFINE_bool("augment", True, "Flips, rotation about the lesion centroid, random crops.")
  flags.DEFINE_float("color_jitter", 0.0, "Brightness/contrast/saturation jitter strength (0 = off); "
                     "helps real photographs taken under varying light.")


def define_loop_flags(num_steps: int, eval_every: int, learning_rate: float) -> None:
  flags.DEFINE_integer("num_steps", num_steps, "Training steps.")
  flags.DEFINE_integer("eval_every", eval_every, "Validate and checkpoint every this many steps.")
  flags.DEFINE_integer("log_every", 50, "Progress line and TensorBoard scalars every this many steps.")
  flags.DEFINE_float("learning_rate", learning_rate, "Peak learning rate.")
  flags.DEFINE_enum("lr_schedule", "cosine", ["cosine", "constant"], "Learning-rate schedule.")


def flag_values(names: Iterable[str] | None = None) -> dict[str, Any]:
  """The values of the experiment's own flags (those defined under experiments/), by name."""
  own = {f.name for module, fs in FLAGS.flags_by_module_dict().items()
         if module.startswith("experiments") or module in ("__main__", sys.argv[0]) for f in fs}
  own -= _RUN_FLAGS_NOT_CONFIG  # how a run is launched, not what it computes
  if names is not None:
    own &= set(names)
  return {name: FLAGS[name].value for name in sorted(own)}


def start_run(workdir: str, config: dict[str, Any], name: str = "config.json") -> None:
  """Creates `workdir` and records the flags. A resumed run must use the same flags, except the
  ones that only say how long or how often (num_steps, eval_every, log_every)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    old = io.read_json(path)
    changeable = {"num_steps", "eval_every", "log_every"}
    changed = {k: (old.get(k), v) for k, v in config.items()
               if k not in changeable and k in old and old[k] != v}
    if changed:
      raise SystemExit(f"{path} was written by a run with other flags {changed} (old, new); "
                       "use a new --workdir or the same flags to resume.")
  io.write_json(path, config)
  quiet_library_logs()
  logging.info("Run directory %s; flags: %s", workdir, config)


def define_kmeans_flags() -> None:
  flags.DEFINE_string("artifact_dir", None, "Where artifacts live (default: <data_dir>/lesion_jax_artifacts).")
  flags.DEFINE_integer("kmeans_k", 5, "K-means clusters per image.")
  flags.DEFINE_float("kmeans_coord_weight", 0.0, "Weight of pixel coordinates in spatial K-means.")
  flags.DEFINE_float("kmeans_hair_filter", 0.02, "Closing radius (fraction of side) erasing hairs; 0 = off.")
  flags.DEFINE_integer("kmeans_work_size", 128, "Images are clustered at this square size.")


def kmeans_config_from_flags():
  from lesion_jax.artifacts import kmeans  # pylint: disable=g-import-not-at-top
  return kmeans.KMeansConfig(k=FLAGS.kmeans_k, coord_weight=FLAGS.kmeans_coord_weight,
                             hair_filter=FLAGS.kmeans_hair_filter, work_size=FLAGS.kmeans_work_size)


def ensure_kmeans_masks(splits: list[str]) -> str:
  """The K-means pseudo-mask store for --dataset and the K-means flags, annotating any of
  `splits` not yet done (resumable); returns the store directory."""
  from lesion_jax.artifacts import annotate, store  # pylint: disable=g-import-not-at-top
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = pipeline.get_builder(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir)
  config = kmeans_config_from_flags()
  root = FLAGS.artifact_dir or store.default_root(FLAGS.data_dir)
  kstore = annotate.kmeans_store(root, builder.info.full_name, config)
  for split in dict.fromkeys(s for s in splits if s):
    summary = annotate.annotate_split(builder, split, kstore, config,
                                      figure_dir=os.path.join(kstore.directory, "figures"))
    ja = f", JA vs ground truth {summary.scores['jaccard']:.4f}" if summary.scores else ""
    logging.info("K-means pseudo-masks for %s: %d images, %d uncertain%s", split, summary.total,
                 summary.uncertain, ja)
  return kstore.directory
