r"""Pipeline 5: the LIN's second FCRN, class-specific rotations plus random flips (DM).

  python -m experiments.train --config=experiments/configs/lesion_index/fcrn_dm.py --workdir=runs/fcrn_dm

Wall time: about 15 minutes on a 2-core CPU. Measured: docs/results/pipeline5_lin.md (Table III).
"""
from lesion_jax.pipelines.lesion_index import task


def get_config() -> task.LesionIndexConfig:
  return task.LesionIndexConfig(augmentation="dm")
