r"""The Lesion Indexing Network's tables (Li and Shen 2018, Tables III-V) from trained FCRN runs.

  python -m experiments.lesion_index_report --dr_workdir=runs/fcrn_dr --dm_workdir=runs/fcrn_dm \
      [--dr_dm_workdir=runs/fcrn_dr_dm] --split=test --out=runs/lin_report

Table III: the FCRN on DR, the FCRN on DR + DM (if given) and the LIN (the DR and DM FCRNs' maps
summed), each at its multi-scale test setting; Table IV: the LIN at the training scale only vs
at every test scale; Table V: the melanoma and seborrheic keratosis AUC of the lesion index
without and with the LICU. --out becomes the LIN's own run (the `lesion_index_network` pipeline,
lesion_jax/pipelines/lesion_index/task.py): config.json, report.md, report.json and metrics.json, so
evaluate and predict take --workdir=<out> as the LIN.
"""
import os

from absl import app, flags

from experiments import common
from lesion_jax.pipelines.lesion_index import network

FLAGS = flags.FLAGS
flags.DEFINE_string("dr_workdir", None, "The FCRN trained on DR.")
flags.DEFINE_string("dm_workdir", None, "The FCRN trained on DM.")
flags.DEFINE_string("dr_dm_workdir", None, "Optional: one FCRN trained on DR + DM.")
flags.DEFINE_string("split", "test", "Split to score (never one used for selection).")
flags.DEFINE_string("out", None, "The LIN's run directory: report.md, report.json, metrics.json, config.json.")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number (every run).")
flags.mark_flags_as_required(["dr_workdir", "dm_workdir", "out"])


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  config = network.LesionIndexNetworkConfig(
      dr_workdir=FLAGS.dr_workdir, dm_workdir=FLAGS.dm_workdir, dr_dm_workdir=FLAGS.dr_dm_workdir,
      split=FLAGS.split, checkpoint=str(common.checkpoint_flag_value(FLAGS.checkpoint)))
  common.run_directory(FLAGS.out)
  network.LesionIndexNetwork(config).run(FLAGS.out)
  print(open(os.path.join(FLAGS.out, "report.md")).read())


if __name__ == "__main__":
  common.run(main, successor="experiments/configs/lesion_index/lin.py")
