r"""Pipeline 3 (purification): the partial-convolution U-Net inpainter, Adam then SGD fine-tuning with the
encoder BatchNorm frozen (finetune_steps; the purification paper's two phases), scored inside the occluded
pixels beside OpenCV's Telea and Navier-Stokes.

  python -m experiments.train --config=experiments/configs/purification/pconv_inpainter.py --workdir=runs/inpainter

Wall time: about 25 minutes on a 2-core CPU (s128). Measured: docs/results/pipeline3_purification_generation.md.
"""
from lesion_jax.pipelines.purification import task


def get_config() -> task.InpainterConfig:
  return task.InpainterConfig(detected_holes=True)
