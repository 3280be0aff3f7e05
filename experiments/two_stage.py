r"""The self-learning two-stage framework in one command (README's main job).

  python -m experiments.two_stage --workdir=runs/two_stage [--dataset=synthetic_lesions]

K-means pseudo-masks → U-Net trained on them → lesion crops → LeNet-5 / ResNet-18 on raw images
and LeNet-5 on crops; writes report.md (+ report.json, metrics.json, figures/). Every stage is
resumable: re-running with the same workdir continues where it stopped.
"""
import dataclasses

from absl import app, flags

from experiments import common
from lesion_jax.tasks import segmentation, two_stage

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_data_flags(image_size=64, batch_size=16)
common.define_kmeans_flags()
flags.DEFINE_integer("segmenter_steps", 800, "U-Net training steps.")
flags.DEFINE_integer("classifier_steps", None, "Training steps of every classifier "
                     "(default: 1500 for LeNet-5, 600 for ResNet-18).")
flags.DEFINE_integer("classifier_image_size", 64, "Classifier input size (raw images and crops).")
flags.DEFINE_enum("target", "malignant", ["malignant", "label"], "Benign/malignant, or the diagnosis classes.")
flags.DEFINE_bool("balanced", True, "Class-balanced sampling for the classifiers.")
flags.DEFINE_string("train_split", "train", "Split trained on.")
flags.DEFINE_string("val_split", "validation", "Split that picks the best checkpoints.")
flags.DEFINE_string("test_split", "test", "Split scored in the report.")


def main(argv):
  del argv
  common.init_distributed()
  values = common.flag_values()
  common.start_run(FLAGS.workdir, values)
  seg = segmentation.SegmenterConfig.from_flat_dict(
      dict(values, num_steps=FLAGS.segmenter_steps, eval_every=max(1, FLAGS.segmenter_steps // 2)))
  config = two_stage.TwoStageConfig(
      dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
      artifact_dir=FLAGS.artifact_dir, seed=FLAGS.seed, segmenter=seg,
      kmeans=common.kmeans_config_from_flags(),
      classifiers=tuple(dataclasses.replace(c, num_steps=FLAGS.classifier_steps or c.num_steps)
                        for c in two_stage.DEFAULT_CLASSIFIERS),
      classifier_image_size=FLAGS.classifier_image_size, target=FLAGS.target, balanced=FLAGS.balanced,
      train_split=FLAGS.train_split, val_split=FLAGS.val_split, test_split=FLAGS.test_split)
  two_stage.run(config, FLAGS.workdir)
  print(open(f"{FLAGS.workdir}/report.md").read())


if __name__ == "__main__":
  app.run(main)
