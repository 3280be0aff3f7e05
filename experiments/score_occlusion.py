r"""Runs the classical hair/ruler detectors over a split and scores them against the true
occlusion masks where the dataset has them (the synthetic set's `hair_mask` and
`occlusion_mask`).

  python -m experiments.score_occlusion --workdir=/tmp/occl_s128 \
      [--dataset=synthetic_lesions/s128] [--split=test] [--methods=luv,dullrazor] \
      [--data_dir=...] [--artifact_dir=...] [--luv_threshold=8 ...]
  python -m experiments.score_occlusion --workdir=/tmp/occl_isic --dataset=isic2017 \
      --manual_dir=/work/shared/data/isic2017_sample --split=validation

Every OcclusionConfig field is a flag (`--dullrazor_threshold=...`, `--noprotect_lesion`); the
method comes from --methods. Masks go to the artifact store (resumable: a rerun reuses them).
Writes <workdir>/occlusion_scores.json (pixel precision / recall / Dice pooled over pixels and
per image, false positives on images without occlusion; without true masks only the occluded
fractions) and <workdir>/figures/occlusion_detection.png (rows of examples: image, true
occlusion, one detection per method), and prints a table.
"""
import dataclasses
import os

from absl import app, flags, logging
import numpy as np

from experiments import common
from lesion_jax import io
from lesion_jax.artifacts import occlusion, stage
from lesion_jax.artifacts import store as store_lib
from lesion_jax.data import pipeline
from lesion_jax.eval import figures

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_string("dataset", "synthetic_lesions/s128", "TFDS dataset name.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("manual_dir", None, "Folder of a real archive (e.g. isic2017's).")
flags.DEFINE_string("split", "test", "Split to detect and score.")
flags.DEFINE_list("methods", list(occlusion.METHODS), "Detectors to run.")
flags.DEFINE_string("artifact_dir", None, "Where artifacts live (default: <data_dir>/lesion_jax_artifacts).")
flags.DEFINE_integer("num_examples", 6, "Rows of the figure.")
flags.DEFINE_integer("batch_size", 32, "Images per stage batch.")
common.define_config_flags(occlusion.OcclusionConfig(), skip=("method",))

TRUTHS = ("hair_mask", "occlusion_mask")
TRUE_COLOUR = (40, 230, 60)
DETECTION_COLOUR = (0, 230, 255)


def _paint(image: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
  out = np.array(image, copy=True)
  out[np.asarray(mask, bool)] = colour
  return out


def save_figure(path: str, rows: list[dict], methods: list[str]) -> None:
  """Rows of (image, true occlusion if any, one detection per method), masks painted."""
  has_truth = any("truth" in r for r in rows)
  columns = {"image": [r["image"] for r in rows]}
  cell_titles = {"image": [r["id"] for r in rows]}
  if has_truth:
    columns["true occlusion"] = [_paint(r["image"], r["truth"], TRUE_COLOUR) if r.get("truth") is not None
                                 else r["image"] for r in rows]
    cell_titles["true occlusion"] = ["true occlusion" if r.get("truth") is not None else "no true mask"
                                     for r in rows]
  for m in methods:
    columns[f"{m} detection"] = [_paint(r["image"], r["detections"][m], DETECTION_COLOUR) for r in rows]
    cell_titles[f"{m} detection"] = [m + (f" Dice {r['dice'][m]:.2f}" if r.get("dice", {}).get(m) is not None
                                          else "") for r in rows]
  aspect = max([r["image"].shape[0] / r["image"].shape[1] for r in rows] or [1.0])
  figures.save_column_grid(path, columns, cell=2.4 * aspect, cell_titles=cell_titles,
                           suptitle=("true occlusion: green   " if has_truth else "") + "detection: cyan")


def _figure_ids(ids: list[str], truth: dict[str, np.ndarray] | None, count: int) -> list[str]:
  """The first `count - 1` occluded ids and the first clean one (all the first `count` without
  true masks)."""
  if truth is None:
    return ids[:count]
  occluded = [i for i in ids if truth[i].any()]
  clean = [i for i in ids if not truth[i].any()]
  return occluded[:max(count - min(len(clean), 1), 0)] + clean[:1]


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  unknown = [m for m in FLAGS.methods if m not in occlusion.METHODS]
  if unknown:
    raise app.UsageError(f"--methods: unknown {unknown}; choose from {list(occlusion.METHODS)}")
  base = common.config_from_flags(occlusion.OcclusionConfig())
  builder = pipeline.get_builder(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir, field="dataset")
  root = FLAGS.artifact_dir or store_lib.default_root(FLAGS.data_dir)
  ids = stage.split_ids(builder, FLAGS.split)
  truth_keys = [k for k in TRUTHS if k in builder.info.features]
  truths: dict[str, dict[str, np.ndarray]] = {k: {} for k in truth_keys}
  if truth_keys:
    for ex in stage.read_examples(builder, FLAGS.split, features=truth_keys):
      for k in truth_keys:
        truths[k][ex["id"]] = ex[k][..., 0] != 0
  result = {"dataset": builder.info.full_name, "split": FLAGS.split, "num_images": len(ids),
            "truths": truth_keys, "methods": {}}
  detections: dict[str, dict[str, np.ndarray]] = {}
  for method in FLAGS.methods:
    config = dataclasses.replace(base, method=method)
    mstore = occlusion.occlusion_store(root, builder.info.full_name, config)
    summary = occlusion.occlusion_masks_for_split(builder, FLAGS.split, mstore, config, FLAGS.batch_size)
    logging.info("%s: %d computed, %d reused, %d failed (%.1f s) in %s", method, summary.computed,
                 summary.reused, summary.failed, summary.seconds, mstore.directory)
    detections[method] = {i: occlusion.read_occlusion_mask(mstore, i) for i in ids if mstore.has(i)}
    entry = {"config": dataclasses.asdict(config), "version": config.version, "store": mstore.directory,
             "computed": summary.computed, "reused": summary.reused, "failed": summary.failed,
             "mean_occluded_fraction": (float(np.mean([m.mean() for m in detections[method].values()]))
                                        if detections[method] else None)}
    scored = [i for i in ids if i in detections[method]]
    entry["scores"] = {k: occlusion.score_detection([detections[method][i] for i in scored],
                                                    [truths[k][i] for i in scored]) for k in truth_keys}
    result["methods"][method] = entry
  os.makedirs(os.path.join(FLAGS.workdir, "figures"), exist_ok=True)
  path = os.path.join(FLAGS.workdir, "occlusion_scores.json")
  io.write_json(path, result)

  occlusion_truth = truths.get("occlusion_mask") or truths.get("hair_mask")
  shown = _figure_ids([i for i in ids if all(i in d for d in detections.values())], occlusion_truth,
                      FLAGS.num_examples)
  images = {ex["id"]: ex["image"] for ex in stage.read_examples(builder, FLAGS.split, shown, ("image",))}
  rows = []
  for i in shown:
    row = {"id": i, "image": images[i], "detections": {m: detections[m][i] for m in FLAGS.methods}}
    if occlusion_truth is not None:
      row["truth"] = occlusion_truth[i]
      row["dice"] = {m: occlusion.score_detection([row["detections"][m]], [row["truth"]])["micro"]["dice"]
                     for m in FLAGS.methods}
    rows.append(row)
  figure = os.path.join(FLAGS.workdir, "figures", "occlusion_detection.png")
  save_figure(figure, rows, list(FLAGS.methods))

  print(f"{builder.info.full_name} {FLAGS.split}: {len(ids)} images")
  if truth_keys:
    print(f"{'method':10s} {'truth':15s} {'precision':>9s} {'recall':>7s} {'dice':>6s} "
          f"{'img_dice':>8s} {'clean_fp':>8s}")
    for method, entry in result["methods"].items():
      for k, s in entry["scores"].items():
        per_image = s["per_image"]["dice"]
        clean = s["clean"]["false_positive_fraction"]
        print(f"{method:10s} {k:15s} {s['micro']['precision']:9.4f} {s['micro']['recall']:7.4f} "
              f"{s['micro']['dice']:6.4f} {per_image if per_image is not None else float('nan'):8.4f} "
              f"{clean if clean is not None else float('nan'):8.4f}")
  else:
    print("no true occlusion masks in this dataset: figure only")
    for method, entry in result["methods"].items():
      fraction = entry["mean_occluded_fraction"]
      print(f"{method:10s} mean occluded fraction " + (f"{fraction:.4f}" if fraction is not None else "-"))
  print(f"wrote {path} and {figure}")


if __name__ == "__main__":
  common.run(main)
