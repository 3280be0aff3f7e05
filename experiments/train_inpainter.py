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

Every field of the task config (lesion_jax/tasks/inpainting.py: InpainterConfig) is a flag.
"""
import dataclasses
import os

from absl import app, flags

from experiments import common
from lesion_jax.artifacts import occlusion, store
from lesion_jax.data import pipeline
from lesion_jax.tasks import inpainting, runner
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_integer("finetune_steps", 500, "Steps of the SGD fine-tuning phase (0: none).")
flags.DEFINE_bool("detected_holes", False, "Add the detected occlusion masks of each image to its random holes.")
flags.DEFINE_enum("occlusion_method", occlusion.OcclusionConfig().method, ["luv", "dullrazor"],
                  "Classical occlusion detector for --detected_holes / --eval_holes=detected.")
flags.DEFINE_string("artifact_dir", None, "Where occlusion masks are stored (default: <data_dir>/lesion_jax_artifacts).")
common.define_augment_flag()
common.define_config_flags(inpainting.InpainterConfig(),
                           aliases={"optimizer": "optimizer.name", "color_jitter": "input.augment.color"},
                           skip={"occlusion_artifacts", "finetune_from"})


def main(argv):
  del argv
  common.init_distributed()
  config = common.without_augmentation(common.config_from_flags(inpainting.InpainterConfig()))
  mesh = sharding.make_mesh()
  inpainting.InpaintingTask(config).check(mesh, [("test_split", config.run.test_split)])
  if FLAGS.detected_holes or config.eval_holes == "detected":
    data = config.input
    builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir)
    detector = occlusion.OcclusionConfig(method=FLAGS.occlusion_method)
    masks = occlusion.occlusion_store(FLAGS.artifact_dir or store.default_root(data.data_dir),
                                      builder.info.full_name, detector)
    for split in dict.fromkeys(s for s in (config.run.train_split, config.run.val_split, config.run.test_split) if s):
      occlusion.occlusion_masks_for_split(builder, split, masks, detector)
    config = dataclasses.replace(config, occlusion_artifacts=masks.directory)
  common.run_directory(FLAGS.workdir)
  if FLAGS.finetune_steps > 0:
    initial = os.path.join(FLAGS.workdir, "initial")
    runner.run(inpainting.InpaintingTask(config), initial)
    config = dataclasses.replace(config, finetune_from=initial, run=dataclasses.replace(
        config.run, num_steps=FLAGS.finetune_steps, eval_every=min(config.run.eval_every, FLAGS.finetune_steps)))
  scores = runner.run(inpainting.InpaintingTask(config), FLAGS.workdir)
  common.print_scores(scores)


if __name__ == "__main__":
  common.run(main)
