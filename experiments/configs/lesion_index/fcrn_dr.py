r"""Pipeline 5: one FCRN of the Lesion Indexing Network, trained with class-specific rotations (DR).

  python -m experiments.train --config=experiments/configs/lesion_index/fcrn_dr.py --workdir=runs/fcrn_dr

Wall time: about 15 minutes on a 2-core CPU. Measured: docs/results/pipeline5_lin.md (Table III).
"""
from lesion_jax.pipelines.lesion_index import task


def get_config() -> task.LesionIndexConfig:
  return task.LesionIndexConfig(augmentation="dr")
