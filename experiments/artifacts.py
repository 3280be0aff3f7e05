r"""Computes a kind of per-image artifact for whole dataset splits, stored once (resumable: a re-run
skips what is done) where the runs that read them find them.

  python -m experiments.artifacts --kind=kmeans [--splits=train,validation,test] \
      [--config.input.dataset=isic2017 --config.input.manual_dir=/data/isic2017] [--config.kmeans.k=4]
  python -m experiments.artifacts --kind=occlusion [--config.occlusion.method=luv]
  python -m experiments.artifacts --kind=superpixels [--config.superpixels.num_superpixels=400]

--kind: kmeans (pipeline 1's pseudo-masks), occlusion (pipeline 3's hair / ruler masks) or
superpixels (SLIC, pipelines 2 and 5). Their settings are the same config groups the tasks use
(KMeansConfig, OcclusionConfig, SuperpixelConfig), overridden by dotted path; the store is named by
the dataset and those settings, under input.artifact_dir (default <data_dir>/lesion_jax_artifacts).
Prints, per split, how many images were computed (and at how many images per second), reused and
refused (skipped and counted, with the reason in <store>/<split>_summary.json).
"""
import dataclasses

from absl import flags

from experiments import common
from lesion_jax.artifacts import annotate
from lesion_jax.artifacts import occlusion as occlusion_lib
from lesion_jax.artifacts import superpixels as superpixels_lib
from lesion_jax.artifacts.kmeans import KMeansConfig
from lesion_jax.data import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_enum("kind", None, ["kmeans", "occlusion", "superpixels"], "What to compute.")
flags.DEFINE_list("splits", ["train", "validation", "test"], "Splits to compute.")
flags.mark_flag_as_required("kind")


@dataclasses.dataclass(frozen=True)
class ArtifactsConfig:
  """The data and each kind's settings (the groups the tasks use), overridden by --config.<field>."""
  input: pipeline.InputConfig = pipeline.InputConfig()
  kmeans: KMeansConfig = KMeansConfig()
  occlusion: occlusion_lib.OcclusionConfig = occlusion_lib.OcclusionConfig()
  superpixels: superpixels_lib.SuperpixelConfig = superpixels_lib.SuperpixelConfig()


def main(argv):
  del argv
  from absl import app  # pylint: disable=g-import-not-at-top
  from lesion_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  common.quiet_library_logs()
  common.register_command_config(ArtifactsConfig())
  try:
    config = config_lib.override(ArtifactsConfig(), common.CONFIG_OVERRIDES)
  except config_lib.ConfigError as e:
    raise app.UsageError(str(e)) from None
  data = config.input
  builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir)
  dataset, root = builder.info.full_name, data.artifact_root()
  if FLAGS.kind == "kmeans":
    store = annotate.kmeans_store(root, dataset, config.kmeans)
    run = lambda split: annotate.annotate_split(builder, split, store, config.kmeans)
  elif FLAGS.kind == "occlusion":
    store = occlusion_lib.occlusion_store(root, dataset, config.occlusion)
    run = lambda split: occlusion_lib.occlusion_masks_for_split(builder, split, store, config.occlusion)
  else:
    store = superpixels_lib.superpixel_store(root, dataset, config.superpixels)
    run = lambda split: superpixels_lib.superpixels_for_split(builder, split, store, config.superpixels)
  for split in FLAGS.splits:
    s = run(split)
    print(f"{split}: {s.total} images ({s.computed} computed at {s.images_per_second:.1f} img/s, {s.reused} reused, "
          f"{s.failed} refused)")
  print(f"{FLAGS.kind} artifacts in {store.directory}")


if __name__ == "__main__":
  common.run_verb(main)
