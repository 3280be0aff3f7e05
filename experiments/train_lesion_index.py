r"""Trains one FCRN of the Lesion Indexing Network (pipeline 5) and scores it on the test split.

  python -m experiments.train_lesion_index --workdir=runs/fcrn_dr [--augmentation=dr|dm|dr+dm] \
      [--dataset=synthetic_lesions] [--variant=fcrn_small|fcrn50|fcrn88] [--image_size=64] \
      [--test_scales=64,96] [--rotation_degrees=45,18,18] [--num_steps=2000]

Every field of LesionIndexConfig (lesion_jax/pipelines/lesion_index/task.py) is a flag. Images are
centre-cropped and resized proportionally, balanced by class-specific rotations (DR; DM adds
random flips), and scored at each image's own resolution from the sum of the maps at every test
scale: segmentation (JA, Dice, AC, SE, SP, HD95, boundary F) and the melanoma / seborrheic
keratosis AUC and AP of the lesion index with and without the LICU. Combine a DR and a DM run
into the LIN with experiments.lesion_index_report (the `lesion_index_network` pipeline: its --out
is the LIN's own run, which evaluate and predict take).
"""
from absl import app, flags

from experiments import common
from lesion_jax.pipelines.lesion_index import task as lesion_index
from lesion_jax.tasks import runner
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_config_flags(lesion_index.LesionIndexConfig(), aliases={"optimizer": "optimizer.name"})


def main(argv):
  del argv
  common.init_distributed()
  config = common.config_from_flags(lesion_index.LesionIndexConfig())
  task = lesion_index.LesionIndexTask(config)
  task.check(sharding.make_mesh(), [("run.test_split", config.run.test_split)])
  common.run_directory(FLAGS.workdir)
  common.print_scores(runner.run(task, FLAGS.workdir))


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/lesion_index/fcrn_dr.py")
