r"""Pipeline 1's segmenter: a U-Net trained on K-means pseudo-masks (no manual label trains or selects it);
the pseudo-masks are computed and stored first (an artifact stage), then the U-Net is scored against the
dataset's own masks.

  python -m experiments.train --config=experiments/configs/segmentation/unet_selflearned.py --workdir=runs/unet_selflearned

Wall time: about 9 minutes on a 2-core CPU (synthetic_lesions, 64 px). Measured: not yet as this config
(2000 steps, the segmenter's defaults); the nearest is the main job's U-Net on the same pseudo-masks (800 steps,
learning rate 1e-3): test JA 0.795 against K-means' own 0.786 (docs/results/main_job.md).
"""
from lesion_jax.tasks import segmentation


def get_config() -> segmentation.SegmenterConfig:
  return segmentation.SegmenterConfig(labels="kmeans")
