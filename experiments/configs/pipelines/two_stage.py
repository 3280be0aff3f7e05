r"""Pipeline 1, the main job: K-means pseudo-masks -> a U-Net trained on them with no manual label ->
lesion crops -> LeNet-5 and ResNet-18 on raw images and LeNet-5 on the crops; report.md.

  python -m experiments.train --config=experiments/configs/pipelines/two_stage.py --workdir=runs/two_stage

Wall time: about 9 minutes on a 2-core CPU. Measured (docs/results/pipeline1_self_learning.md): U-Net JA 0.795,
LeNet-5 76.5 %, ResNet-18 79.5 %, crop + LeNet-5 66.0 % (synthetic_lesions test split).
"""
from lesion_jax.pipelines.self_learning import two_stage


def get_config() -> two_stage.TwoStageConfig:
  return two_stage.TwoStageConfig()
