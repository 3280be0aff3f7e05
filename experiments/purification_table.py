r"""The purification paper's Table 1: classifiers trained with and without purified images, each
tested with and without purification (accuracy, sensitivity, specificity, ROC AUC).

  python -m experiments.purification_table --workdir=runs/purification_table \
      --classifiers=raw:runs/resnet_raw,purified:runs/resnet_pure --inpainter_workdir=runs/inpainter \
      [--splits=validation,test]

Each classifier is a train_classifier run (its best checkpoint); "purified" test images are the
images of the split with their detected occlusions filled by the inpainter (artifact stages, the
same stores train_classifier --source=purified uses). Writes <workdir>/purification_table.json, a
Markdown table purification_table.md, and figures/purification_examples.png (original /
detected occlusions / purified) for the first images of the last split.
"""
import dataclasses
import os

from absl import app, flags

from experiments import common
from lesion_jax import io
from lesion_jax.artifacts import occlusion, stage, store
from lesion_jax.eval import figures
from lesion_jax.pipelines.purification import task as inpainting
from lesion_jax.tasks import classification, runner
from lesion_jax.train import sharding

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_list("classifiers", None, "name:workdir of train_classifier runs (e.g. raw:runs/a,purified:runs/b).")
flags.mark_flag_as_required("classifiers")
flags.DEFINE_string("inpainter_workdir", None, "The train_inpainter run that purifies the test images.")
flags.mark_flag_as_required("inpainter_workdir")
flags.DEFINE_list("splits", ["test"], "Splits to test on.")
flags.DEFINE_enum("occlusion_method", None, ["luv", "dullrazor"], "Classical occlusion detector (default: OcclusionConfig's).")
flags.DEFINE_string("artifact_dir", None, "Artifact root (default: <data_dir>/lesion_jax_artifacts).")
flags.DEFINE_integer("figure_rows", 6, "Examples in the figure.")

COLUMNS = ("accuracy", "sensitivity", "specificity", "roc_auc")


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  mesh = sharding.make_mesh()
  runs = {}
  for item in FLAGS.classifiers:
    name, sep, path = item.partition(":")
    if not sep or not path:
      raise app.UsageError(f"--classifiers: {item!r} is not name:workdir")
    task = runner.load(path, classification.ClassificationTask, "classifiers")
    runs[name] = (task, runner.restore(task, path, "best", mesh))
  first = next(iter(runs.values()))[0]
  data = first.config.input
  root = FLAGS.artifact_dir or store.default_root(data.data_dir)
  detector = occlusion.OcclusionConfig(**({"method": FLAGS.occlusion_method} if FLAGS.occlusion_method else {}))
  purified = inpainting.purified_images(FLAGS.inpainter_workdir, first.builder, FLAGS.splits, root, detector, mesh)
  rows = []
  for name, (task, state) in runs.items():
    for split in FLAGS.splits:
      for test_input, images in (("raw", None), ("purified", purified)):
        tested = task.with_overrides(image_artifacts=images)
        scores = tested.evaluate(state, split, mesh).scores
        rows.append({"classifier": name, "split": split, "test_input": test_input,
                     **{k: scores.get(k) for k in COLUMNS}, "num_examples": scores.get("num_examples")})
  io.write_json(os.path.join(FLAGS.workdir, "purification_table.json"),
                {"rows": rows, "inpainter_workdir": FLAGS.inpainter_workdir, "purified_store": purified,
                 "occlusion": dataclasses.asdict(detector),
                 "classifiers": {k: v.partition(":")[2] for k, v in zip(runs, FLAGS.classifiers)}})
  lines = ["| trained on | tested on | split | " + " | ".join(COLUMNS) + " |",
           "|---|---|---|" + "---|" * len(COLUMNS)]
  for r in rows:
    cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else "n/a" for k in COLUMNS]
    lines.append(f"| {r['classifier']} | {r['test_input']} | {r['split']} | " + " | ".join(cells) + " |")
  io.atomic_write_bytes(os.path.join(FLAGS.workdir, "purification_table.md"), ("\n".join(lines) + "\n").encode())
  print("\n".join(lines))
  # original / detected occlusions / purified, for the first images of the last split.
  split = FLAGS.splits[-1]
  ids = stage.split_ids(first.builder, split)[:FLAGS.figure_rows]
  examples = list(stage.read_examples(first.builder, split, ids))
  masks = occlusion.occlusion_store(root, first.builder.info.full_name, detector)
  columns = {"original": [ex["image"] for ex in examples],
             "detected occlusions": [occlusion.read_occlusion_mask(masks, ex["id"]) for ex in examples],
             "purified": [io.read_rgb_image(os.path.join(purified, store.safe_name(ex["id"]) + ".png"))
                          for ex in examples]}
  figures.save_column_grid(os.path.join(FLAGS.workdir, "figures", "purification_examples.png"), columns,
                           titles=[ex["id"] for ex in examples])


if __name__ == "__main__":
  common.run(main)
