r"""Trains a lesion segmenter (U-Net) and scores it on the test split.

  python -m experiments.train_segmenter --workdir=runs/unet [--dataset=synthetic_lesions] \
      [--model=unet] [--image_size=64] [--num_steps=2000] [--batch_size=16] [--seed=0]

Writes config.json, metrics.json (test/jaccard, test/jaccard_thresholded, test/dice, ...),
checkpoints/ (latest and best by val/jaccard), TensorBoard events, history.json and figures/.
"""
from absl import app, flags

from experiments import common
from lesion_jax import io
from lesion_jax.tasks import segmentation

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_data_flags(image_size=64, batch_size=16)
common.define_loop_flags(num_steps=2000, eval_every=500, learning_rate=2e-3)
flags.DEFINE_enum("model", "unet", list(segmentation.SEGMENTERS), "Segmentation network.")
flags.DEFINE_integer("features", 16, "Width of the first U-Net level (doubles per level).")
flags.DEFINE_integer("levels", 4, "Down/up-sampling levels.")
flags.DEFINE_enum("norm", "batch", ["none", "batch", "group", "layer"],
                  "Normalisation in conv blocks (batch: converges in far fewer steps than none).")
flags.DEFINE_enum("upsample", "depth_to_space", ["depth_to_space", "transpose", "resize_conv"],
                  "Decoder up-sampling (depth_to_space computes the same function class as the "
                  "papers' 2x2 transposed conv, faster on CPU).")
flags.DEFINE_enum("loss", "bce", ["bce", "dice", "bce_dice"], "Segmentation loss.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adamw", "sgd"], "Optimiser.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype (params stay float32).")
flags.DEFINE_float("threshold", 0.5, "Probability threshold for the lesion mask.")
flags.DEFINE_bool("postprocess", True, "Fill holes and keep the largest component before scoring.")
flags.DEFINE_string("train_split", "train", "Split trained on.")
flags.DEFINE_string("val_split", "validation", "Split that picks the best checkpoint.")
flags.DEFINE_string("test_split", "test", "Split scored at the end.")
flags.DEFINE_enum("labels", "ground_truth", ["ground_truth", "kmeans"],
                  "Train on the dataset's masks, or on K-means pseudo-masks (self-learning: no "
                  "manual labels; computed and stored first if missing). Test scores use ground truth.")
flags.DEFINE_bool("drop_uncertain", True, "With --labels=kmeans: leave out pseudo-masks whose "
                  "polarity decision was flagged uncertain.")
common.define_kmeans_flags()


def main(argv):
  del argv
  common.init_distributed()
  values = common.flag_values()
  if FLAGS.labels == "kmeans":
    values["mask_artifacts"] = common.ensure_kmeans_masks([FLAGS.train_split, FLAGS.val_split])
  common.start_run(FLAGS.workdir, values)
  config = segmentation.SegmenterConfig.from_flat_dict(values)
  state = segmentation.train(config, FLAGS.workdir)
  scores = segmentation.score_split(state, config, FLAGS.workdir, FLAGS.test_split)
  io.write_json(f"{FLAGS.workdir}/metrics.json", scores)
  print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()))


if __name__ == "__main__":
  app.run(main)
