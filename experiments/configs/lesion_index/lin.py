r"""Pipeline 5: the Lesion Indexing Network = the sum of the DR and DM FCRNs' maps at every test scale,
with the LICU; its report (Tables III-V) and a run `predict` takes.

  python -m experiments.train --config=experiments/configs/lesion_index/fcrn_dr.py --workdir=runs/fcrn_dr
  python -m experiments.train --config=experiments/configs/lesion_index/fcrn_dm.py --workdir=runs/fcrn_dm
  python -m experiments.train --config=experiments/configs/lesion_index/lin.py --workdir=runs/lin

--config.split=selection scores the FCRNs' own selection split instead (FCRN runs with run.holdout or
run.val_split; both must share it): where the LIN is compared with other models selected there.

Wall time: about 1 minute after the two FCRNs. Measured: docs/results/pipeline5_lin.md.
"""
from lesion_jax.pipelines.lesion_index import network


def get_config() -> network.LesionIndexNetworkConfig:
  return network.LesionIndexNetworkConfig(dr_workdir="runs/fcrn_dr", dm_workdir="runs/fcrn_dm")
