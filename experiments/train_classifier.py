r"""Trains a lesion classifier on raw images or on segmented lesion crops.

  python -m experiments.train_classifier --workdir=runs/lenet --model=lenet5 [--input=raw]
  python -m experiments.train_classifier --workdir=runs/alex --model=alexnet --input=segmented \
      --segmenter_workdir=runs/unet --folds=5

Segmented input: the segmenter's mask ANDed with the image, cropped to the lesion and resized
(stored once as artifacts). Writes metrics.json (train/test accuracy, F1, misclassification
rate, sensitivity, specificity, precision, ROC AUC, confusion matrix; cv/* with --folds),
checkpoints, TensorBoard events and ROC / confusion figures.
"""
from absl import app, flags

from experiments import common
from lesion_jax.models.classifiers import CLASSIFIERS
from lesion_jax.tasks import classification, segmentation

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_data_flags(image_size=64, batch_size=32)
common.define_loop_flags(num_steps=800, eval_every=200, learning_rate=1e-3)
flags.DEFINE_enum("model", "lenet5", list(CLASSIFIERS), "Classifier network.")
flags.DEFINE_float("width", 1.0, "Channel multiplier (AlexNet conv channels; ResNet base width 64*width).")
flags.DEFINE_enum("input", "raw", ["raw", "segmented"], "Whole images, or lesion crops from a segmenter.")
flags.DEFINE_string("segmenter_workdir", None, "train_segmenter run whose best checkpoint makes the crops.")
flags.DEFINE_float("crop_margin", 0.1, "Margin around the lesion's bounding box, fraction of its size.")
flags.DEFINE_enum("target", "malignant", ["malignant", "label"], "Benign/malignant, or the diagnosis classes.")
flags.DEFINE_integer("folds", 1, "k-fold cross-validation over the train split (the AlexNet paper used 5).")
flags.DEFINE_bool("balanced", False, "Class-balanced sampling.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adamw", "sgd"], "Optimiser (the AlexNet paper: sgd).")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (adamw, sgd).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (params stay float32).")
flags.DEFINE_string("train_split", "train", "Split trained on (and cross-validated over).")
flags.DEFINE_string("val_split", "validation", "Split that picks the best checkpoint (without --folds).")
flags.DEFINE_string("test_split", "test", "Split scored at the end.")
flags.DEFINE_string("artifact_dir", None, "Where crops are stored (default: <data_dir>/lesion_jax_artifacts).")


def main(argv):
  del argv
  common.init_distributed()
  values = common.flag_values()
  values["label_key"] = values.pop("target")
  if FLAGS.input == "segmented":
    if not FLAGS.segmenter_workdir:
      raise app.UsageError("--input=segmented needs --segmenter_workdir (a train_segmenter run)")
    values["image_artifacts"] = segmentation.lesion_crops(
        FLAGS.segmenter_workdir, FLAGS.dataset,
        [s for s in dict.fromkeys([FLAGS.train_split, FLAGS.val_split, FLAGS.test_split]) if s],
        FLAGS.image_size, FLAGS.data_dir, FLAGS.manual_dir, FLAGS.artifact_dir, FLAGS.crop_margin)
  common.start_run(FLAGS.workdir, values)
  config = classification.ClassifierConfig.from_flat_dict(values)
  result = classification.run(config, FLAGS.workdir, FLAGS.folds, FLAGS.test_split)
  shown = {k: v for k, v in result.items() if isinstance(v, float) and "fold" not in k}
  print(" ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))


if __name__ == "__main__":
  app.run(main)
