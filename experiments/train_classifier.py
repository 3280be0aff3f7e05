r"""Trains a lesion classifier on raw images or on segmented lesion crops.

  python -m experiments.train_classifier --workdir=runs/lenet --model=lenet5 [--input=raw]
  python -m experiments.train_classifier --workdir=runs/alex --model=alexnet --input=segmented \
      --segmenter_workdir=runs/unet --folds=5 --optimizer=sgd
  python -m experiments.train_classifier --workdir=runs/resnet_pure --model=resnet18 --input=purified \
      --inpainter_workdir=runs/inpainter
  python -m experiments.train_classifier --workdir=runs/lenet_isic --dataset=isic2017 ... \
      --init_from=runs/lenet_synthetic   # pretrain on synthetic_lesions, then fine-tune

Every field of the task config (lesion_jax/tasks/classification.py: ClassifierConfig) is a flag,
by its dotted path and, where unique, by its last part. Segmented input: the segmenter's mask
ANDed with the image, cropped to the lesion and resized (stored once as artifacts). Purified
input: hairs and ruler marks detected classically and filled by an inpainter run (stored once as
artifacts; training and test images alike). Writes
metrics.json (train/test accuracy, F1, misclassification rate, sensitivity, specificity,
precision, ROC AUC, confusion matrix; cv/* with --folds), checkpoints, TensorBoard events and
ROC / confusion figures.

Sampling is class-balanced by default (every class equally often per minibatch; --nobalanced
trains on the split's own ratio). --init_from starts from another train_classifier run of the same
network and width (its best checkpoint; the head is kept fresh where the class count differs).

Optimiser defaults depend on --optimizer: the learning rate 1e-3 is Adam's; with --optimizer=sgd
the learning rate, momentum and weight decay not given as flags are SGD's
(classification.OPTIMIZER_DEFAULTS: 0.01, 0.9, 5e-4, AlexNet's recipe), and config.json records
the values that ran.
"""
import dataclasses

from absl import app, flags

from experiments import common
from lesion_jax.artifacts import occlusion, store
from lesion_jax.data import pipeline
from lesion_jax.tasks import classification, inpainting, runner, segmentation
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_enum("input", "raw", ["raw", "segmented", "purified"],
                  "Whole images, lesion crops from a segmenter, or images with their occlusions inpainted.")
flags.DEFINE_string("inpainter_workdir", None, "With --input=purified: the train_inpainter run that fills occlusions.")
flags.DEFINE_enum("occlusion_method", None, ["luv", "dullrazor"],
                  "With --input=purified: the classical occlusion detector (default: OcclusionConfig's).")
flags.DEFINE_string("artifact_dir", None, "Where crops / purified images are stored (default: <data_dir>/lesion_jax_artifacts).")
common.define_augment_flag()
common.define_holdout_flags()
common.define_config_flags(classification.ClassifierConfig(),
                           aliases={"model": "model.name", "optimizer": "optimizer.name",
                                    "target": "label_key", "color_jitter": "input.augment.color",
                                    "crop_margin": "crop.margin"},
                           skip={"image_artifacts"})
for _name, _value in classification.OPTIMIZER_DEFAULTS["sgd"].items():  # the optimiser-dependent defaults
  FLAGS[f"optimizer.{_name}"].help += f" With --optimizer=sgd and this flag not given: {_value:g}."


def optimizer_flags_given() -> set[str]:
  """The OptimizerConfig fields set on the command line (by their dotted flag or an alias)."""
  return {f.name for f in dataclasses.fields(classification.ClassifierConfig().optimizer)
          if FLAGS[f"optimizer.{f.name}"].present}


def config_from_command_line() -> classification.ClassifierConfig:
  """The task config of the parsed flags, with the optimiser-dependent defaults resolved (SGD's
  where --optimizer=sgd and no flag set them): what runs and what config.json records."""
  config = common.without_augmentation(common.config_from_flags(classification.ClassifierConfig()))
  return classification.with_optimizer_defaults(config, optimizer_flags_given())


def main(argv):
  del argv
  common.init_distributed()
  config = common.with_holdout(config_from_command_line())
  # Refuse bad flags before minutes of cropping (and before config.json is written).
  classification.ClassificationTask(config).check(sharding.make_mesh(), [("test_split", config.run.test_split)])
  if FLAGS.input == "segmented":
    if not config.crop.segmenter_workdir:
      raise app.UsageError("--input=segmented needs --segmenter_workdir (a train_segmenter run)")
    data = config.input
    builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir)
    splits = [s for s in dict.fromkeys([config.run.train_split, config.run.val_split, config.run.test_split]) if s]
    crops = segmentation.lesion_crops(config.crop.segmenter_workdir, builder, splits, data.image_size,
                                      FLAGS.artifact_dir or store.default_root(data.data_dir),
                                      config.crop.margin, config.crop.black_out, fallback=config.crop.fallback)
    config = dataclasses.replace(config, image_artifacts=crops)
  if FLAGS.input == "purified":
    if not FLAGS.inpainter_workdir:
      raise app.UsageError("--input=purified needs --inpainter_workdir (a train_inpainter run)")
    data = config.input
    builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir)
    splits = [s for s in dict.fromkeys([config.run.train_split, config.run.val_split, config.run.test_split]) if s]
    detector = occlusion.OcclusionConfig(**({"method": FLAGS.occlusion_method} if FLAGS.occlusion_method else {}))
    purified = inpainting.purified_images(FLAGS.inpainter_workdir, builder, splits,
                                          FLAGS.artifact_dir or store.default_root(data.data_dir), detector)
    config = dataclasses.replace(config, image_artifacts=purified)
  common.run_directory(FLAGS.workdir)
  result = runner.run(classification.ClassificationTask(config), FLAGS.workdir)
  common.print_scores({k: v for k, v in result.items() if isinstance(v, float) and "fold" not in k})


if __name__ == "__main__":
  common.run(main)
