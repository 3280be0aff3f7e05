r"""Trains a lesion classifier on raw images or on segmented lesion crops.

  python -m experiments.train_classifier --workdir=runs/lenet --model=lenet5 [--source=raw]
  python -m experiments.train_classifier --workdir=runs/alex --model=alexnet --source=crops \
      --segmenter_workdir=runs/unet --folds=5 --optimizer=sgd
  python -m experiments.train_classifier --workdir=runs/resnet_pure --model=resnet18 --source=purified \
      --inpainter_workdir=runs/inpainter
  python -m experiments.train_classifier --workdir=runs/lenet_isic --dataset=isic2017 ... \
      --init_from=runs/lenet_synthetic   # pretrain on synthetic_lesions, then fine-tune

Every field of the task config (lesion_jax/tasks/classification.py: ClassifierConfig) is a flag,
by its dotted path and, where unique, by its last part. --source=crops: the segmenter's mask
ANDed with the image, cropped to the lesion and resized (stored once as artifacts). --source=purified:
hairs and ruler marks detected classically and filled by an inpainter run (stored once as
artifacts; training and test images alike). predict replays the source on each photo. Writes
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

from absl import app, flags, logging

from experiments import common
from lesion_jax.tasks import classification, runner

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_enum("input", None, ["raw", "segmented", "purified"],
                  "Deprecated spelling of --source (segmented = crops); kept for one release.")
common.define_augment_flag()
common.define_config_flags(classification.ClassifierConfig(),
                           aliases={"model": "model.name", "optimizer": "optimizer.name",
                                    "target": "label_key", "color_jitter": "input.augment.color",
                                    "crop_margin": "crop.margin", "occlusion_method": "purify.occlusion.method"},
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
  config = config_from_command_line()
  if FLAGS.input:
    source = {"segmented": "crops"}.get(FLAGS.input, FLAGS.input)
    logging.warning("--input=%s is deprecated: use --source=%s", FLAGS.input, source)
    if FLAGS["source"].present and source != config.source:
      raise app.UsageError(f"--input={FLAGS.input} and --source={config.source}: give --source only")
    config = dataclasses.replace(config, source=source)
  common.run_directory(FLAGS.workdir)
  result = runner.run(classification.ClassificationTask(config), FLAGS.workdir)
  common.print_scores({k: v for k, v in result.items() if isinstance(v, float) and "fold" not in k})


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/classification/lenet.py")
