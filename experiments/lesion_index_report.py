r"""The Lesion Indexing Network's tables (Li and Shen 2018, Tables III-V) from trained FCRN runs.

  python -m experiments.lesion_index_report --dr_workdir=runs/fcrn_dr --dm_workdir=runs/fcrn_dm \
      [--dr_dm_workdir=runs/fcrn_dr_dm] --split=test --out=runs/lin_report

Table III: the FCRN on DR, the FCRN on DR + DM (if given) and the LIN (the DR and DM FCRNs' maps
summed), each at its multi-scale test setting; Table IV: the LIN at the training scale only vs
at every test scale; Table V: the melanoma and seborrheic keratosis AUC of the lesion index
without and with the LICU. Writes report.md and report.json into --out.
"""
import os

from absl import app, flags

from experiments import common
from lesion_jax import io
from lesion_jax.tasks import lesion_index, runner
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
flags.DEFINE_string("dr_workdir", None, "The FCRN trained on DR.")
flags.DEFINE_string("dm_workdir", None, "The FCRN trained on DM.")
flags.DEFINE_string("dr_dm_workdir", None, "Optional: one FCRN trained on DR + DM.")
flags.DEFINE_string("split", "test", "Split to score (never one used for selection).")
flags.DEFINE_string("out", None, "Where report.md and report.json go.")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number (every run).")
flags.mark_flags_as_required(["dr_workdir", "dm_workdir", "out"])

SEGMENTATION = ("jaccard", "jaccard_thresholded", "dice", "accuracy", "sensitivity", "specificity", "hd95",
                "boundary_f")
INDEX = ("licu_melanoma_auc", "licu_melanoma_ap", "licu_keratosis_auc", "licu_mean_auc")


def _member(workdir, mesh):
  task = runner.load(workdir, lesion_index.LesionIndexTask, "workdir")
  state = runner.restore(task, workdir, common.checkpoint_flag_value(FLAGS.checkpoint), mesh)
  return task, state


def _score(members, mesh):
  jitted = [(t, s, t.jit_predict(s, mesh)) for t, s in members]
  return lesion_index.evaluate_members(jitted, FLAGS.split, mesh).scores


def _table(rows, keys):
  head = "| | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
  fmt = lambda v: "—" if v is None else f"{v:.3f}"
  return head + "".join(f"| {name} | " + " | ".join(fmt(r.get(k)) for k in keys) + " |\n" for name, r in rows)


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  mesh = sharding.make_mesh()
  dr, dm = _member(FLAGS.dr_workdir, mesh), _member(FLAGS.dm_workdir, mesh)
  scales = dr[0].config.test_scales
  single = (dr[0].config.input.image_size,)
  results = {"fcrn_dr": _score([dr], mesh)}
  if FLAGS.dr_dm_workdir:
    results["fcrn_dr_dm"] = _score([_member(FLAGS.dr_dm_workdir, mesh)], mesh)
  results["lin"] = _score([dr, dm], mesh)
  results["lin_single_scale"] = _score([(t.with_overrides(test_scales=tuple(single)), s) for t, s in (dr, dm)], mesh)
  results["fcrn_dm"] = _score([dm], mesh)
  names = {"fcrn_dr": "FCRN on DR", "fcrn_dm": "FCRN on DM", "fcrn_dr_dm": "FCRN on DR + DM",
           "lin": f"LIN (DR + DM FCRNs), scales {list(scales)}", "lin_single_scale": f"LIN, scale {list(single)}"}
  table3 = [(names[k], results[k]) for k in ("fcrn_dr", "fcrn_dm", "fcrn_dr_dm", "lin") if k in results]
  table4 = [(names[k], results[k]) for k in ("lin_single_scale", "lin")]
  table5 = [("without LICU", {k.replace("mean_", "x_", 1): v for k, v in results["lin"].items() if k.startswith("mean_")}),
            ("with LICU", {k.replace("licu_", "x_", 1): v for k, v in results["lin"].items() if k.startswith("licu_")})]
  v_keys = ("x_melanoma_auc", "x_melanoma_ap", "x_keratosis_auc", "x_mean_auc")
  text = (f"# Lesion Indexing Network on `{dr[0].config.input.dataset}` {FLAGS.split}\n\n"
          f"## Table III: FCRNs and the LIN\n\n{_table(table3, SEGMENTATION + INDEX)}\n"
          f"## Table IV: test scales\n\n{_table(table4, SEGMENTATION + INDEX)}\n"
          f"## Table V: the LICU\n\n{_table(table5, v_keys).replace('x_', '')}")
  os.makedirs(FLAGS.out, exist_ok=True)
  io.write_json(os.path.join(FLAGS.out, "report.json"),
                {"split": FLAGS.split, "workdirs": {"dr": FLAGS.dr_workdir, "dm": FLAGS.dm_workdir,
                                                   "dr_dm": FLAGS.dr_dm_workdir}, "results": results})
  io.atomic_write_bytes(os.path.join(FLAGS.out, "report.md"), text.encode())
  print(text)


if __name__ == "__main__":
  common.run(main)
