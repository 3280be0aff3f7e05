r"""Pipeline 4's segmenter: a ResNet-FPN Mask R-CNN (static shapes), scored per image at its native
resolution like the U-Net, plus box AP and the paper's Table I (pixel confusion).

  python -m experiments.train --config=experiments/configs/maskrcnn/maskrcnn.py --workdir=runs/maskrcnn

Wall time: about 30 minutes on a 2-core CPU. Measured with other settings (synthetic_lesions/s128, 1500 steps:
add --config.input.dataset=synthetic_lesions/s128 --config.run.num_steps=1500 and the page's other flags): test JA
0.905 (U-Net: 0.926); ISIC sample Validation JA 0.622 (docs/results/pipeline4_mask_alexnet.md).
"""
from lesion_jax.pipelines.maskrcnn import task


def get_config() -> task.MaskRCNNConfig:
  return task.MaskRCNNConfig()
