r"""Trains the partial-convolution U-Net inpainter (pipeline 3, data purification) and scores it,
next to OpenCV's Telea and Navier-Stokes inpainting, inside the occluded pixels of the test split.

  python -m experiments.train_inpainter --workdir=runs/inpainter \
      [--dataset=synthetic_lesions/s128] [--num_steps=2000] [--finetune_steps=500] \
      [--detected_holes] [--perceptual_workdir=runs/lenet]

Phase 1 (Adam, `--num_steps`) runs in <workdir>/initial; phase 2 (`--finetune_steps` of SGD with
momentum, encoder BatchNorm frozen, the paper's fine-tuning) starts from its best checkpoint in
<workdir> itself, which then holds the final model (config.json, metrics.json with test/pconv_psnr,
test/telea_psnr, test/navier_stokes_psnr, ... SSIM and L1 alike, checkpoints/, events,
figures/test_inpainting.png). --finetune_steps=0 trains phase 1 straight into <workdir>. Both
phases resume where they stopped. With --detected_holes the classical occlusion masks
(artifacts/occlusion.py, computed and stored first if missing) are added to the random holes.

Every field of the task config (lesion_jax/pipelines/purification/task.py: InpainterConfig) is a flag.
"""
from absl import flags

from experiments import common
from lesion_jax.pipelines.purification import task as inpainting

FLAGS = flags.FLAGS
common.define_workdir_flag()
common.define_augment_flag()
common.define_config_flags(inpainting.InpainterConfig(),
                           aliases={"optimizer": "optimizer.name", "color_jitter": "input.augment.color",
                                    "occlusion_method": "occlusion.method"},
                           skip={"occlusion_artifacts", "finetune_from"})


def main(argv):
  del argv
  common.init_distributed()
  config = common.without_augmentation(common.config_from_flags(inpainting.InpainterConfig()))
  common.run_directory(FLAGS.workdir)
  common.print_scores(inpainting.train_two_phase(config, FLAGS.workdir))


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/purification/pconv_inpainter.py")
