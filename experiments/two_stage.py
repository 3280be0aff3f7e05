r"""The self-learning two-stage framework in one command (README's main job).

  python -m experiments.two_stage --workdir=runs/two_stage [--dataset=synthetic_lesions]

K-means pseudo-masks → U-Net trained on them → lesion crops → LeNet-5 / ResNet-18 on raw images
and LeNet-5 on crops; writes report.md (+ report.json, metrics.json, figures/). Every stage is
resumable: re-running with the same workdir continues where it stopped. Every field of
TwoStageConfig (lesion_jax/pipelines/self_learning/two_stage.py) is a flag by its dotted path
(`--segmenter.model.features=32`, `--kmeans.k=4`).
"""
import dataclasses

from absl import app, flags

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax.pipelines.self_learning import two_stage

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_augment_flag()
flags.DEFINE_integer("classifier_steps", None, "Training steps of every classifier "
                     "(default: 1500 for LeNet-5, 600 for ResNet-18).")
common.define_config_flags(
    two_stage.TwoStageConfig(),
    aliases={"image_size": "segmenter.input.image_size", "batch_size": "segmenter.input.batch_size",
             "color_jitter": "segmenter.input.augment.color", "segmenter_steps": "segmenter.run.num_steps",
             **{name: f"kmeans.{field}" for name, (field, _) in common.KMEANS_FLAGS.items()}},
    # The top-level dataset, seed and splits apply to every stage.
    skip={f"segmenter.{k}" for k in ("input.dataset", "input.data_dir", "input.manual_dir", "input.seed",
                                     "run.train_split", "run.val_split", "run.test_split", "mask_artifacts")},
    auto_aliases=False)


def main(argv):
  del argv
  common.init_distributed()
  config = common.config_from_flags(two_stage.TwoStageConfig())
  config = common.without_augmentation(config, "segmenter.input.augment")
  if FLAGS["segmenter.run.num_steps"].present and not FLAGS["segmenter.run.eval_every"].present:
    config = config_lib.replace(config, {  # validate twice
        "segmenter.run.eval_every": max(1, config.segmenter.run.num_steps // 2)})
  if FLAGS.classifier_steps:
    config = dataclasses.replace(config, classifiers=tuple(
        dataclasses.replace(c, num_steps=FLAGS.classifier_steps) for c in config.classifiers))
  common.run_directory(FLAGS.workdir)
  two_stage.TwoStagePipeline(config).run(FLAGS.workdir)
  print(open(f"{FLAGS.workdir}/report.md").read())


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/pipelines/two_stage.py")
