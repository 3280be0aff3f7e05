r"""Trains DCGANs that synthesise images of scarce classes (pipeline 3, data generation), then
writes generated images with the duplicate check, ready for `train_classifier --generated`.

  # de-coupled: one DCGAN per scarce class (every class but the largest), side by side
  python -m experiments.train_gan --workdir=runs/gan_decoupled \
      --dataset=synthetic_lesions/imbalanced2017 [--feature_workdir=runs/classifier]
  # coupled (CoGAN) over all classes
  python -m experiments.train_gan --workdir=runs/gan_coupled --dataset=synthetic_lesions/ham7 --coupled

Writes into --workdir: config.json, checkpoints/ (both players and both optimisers; a re-run
resumes), TensorBoard events, figures/samples_step*.png (a column per class), metrics.json
(FD-derm per class with --feature_workdir, the best checkpoint by it), and generated/images/step<N>/
(PNG + record per image, summary.json, duplicate_check_histogram.png, duplicate_check_closest.png)
with as many images per class as balancing the train split needs (x1.25), or --num_generated.

Every field of the task config (lesion_jax/pipelines/gan/task.py: GANConfig) is a flag.
"""
from absl import flags

from experiments import common
from lesion_jax.pipelines.gan import task as gan
from lesion_jax.tasks import runner

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_config_flags(gan.GANConfig(), aliases={"optimizer": "optimizer.name", "coupled": "model.coupled"},
                           skip={"image_artifacts", "run.test_split"})  # a GAN run scores its train split


def main(argv):
  del argv
  common.init_distributed()
  config = common.config_from_flags(gan.GANConfig())
  common.run_directory(FLAGS.workdir)
  common.print_scores(runner.run(gan.GANTask(config), FLAGS.workdir))


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/gan/dcgan.py")
