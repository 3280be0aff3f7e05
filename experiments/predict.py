r"""Predicts with a trained run on image files: whatever the run's task predicts on a photo.

  python -m experiments.predict --workdir=runs/unet --images='photos/*.jpg' --out=predictions \
      [--tta] [--tta_scales=128,160] [--fallback] [--classifier_workdir=runs/lenet]

--workdir is any run (or pipeline) whose task predicts on photos (`Task.predict_images`):
a segmenter or Mask R-CNN writes DIR/<stem>.png (binary mask at the image's own resolution,
0/255), DIR/<stem>_overlay.png and the ABCD measurements of the lesion; a classifier writes the
class probabilities, replaying what it read in training (its segmenter's crop, with the mask too,
or the purified photo; a cross-validated run averages its fold models); an inpainter writes
DIR/<stem>_purified.png; the LIN and its FCRNs a mask and lesion indices; the LFN per-feature
scores. A GAN run is refused with the reason. Every input gets a row in DIR/predictions.csv; a file
that cannot be used (corrupt, grayscale, RGBA, too small) gets its reason there and in the log; the
others are still done.

Inputs that share a stem (dup.jpg and dup.png) are named by stem and extension instead:
DIR/dup_jpg.png, DIR/dup_jpg_overlay.png, DIR/dup_png.png, ... The names depend on the paths
only, so a file that turns out unreadable never takes another's name.

Predict replaces only files it wrote itself: those listed (mask, overlay, purified) in an earlier
run's DIR/predictions.csv, or in the DIR/predictions.csv.partial of a run that was killed (that
table lists a chunk's files before they are written). A run whose outputs would replace any other
existing file is refused before anything is written, --overwrite or not. With --overwrite the
earlier run's outputs and tables are removed first, so DIR ends up holding what the new table
lists.
"""
import csv
import glob
import io as pyio
import os
import tempfile

from absl import app, flags, logging
import numpy as np

from experiments import common
from lesion_jax import io
from lesion_jax.eval import figures, measure
from lesion_jax.tasks import base, classification, runner

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a training run or pipeline: a segmenter (masks, "
                    "measurements), a classifier (class probabilities; with masks too if it reads lesion "
                    "crops), an inpainter (purified photos), the LIN or an FCRN, the LFN.")
flags.DEFINE_string("images", None, "Glob of image files (quote it), or a comma-separated list of globs.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number of the --workdir run (a pipeline "
                    "predicts with the checkpoints its stages chose: another one is refused, naming its runs).")
flags.DEFINE_integer("min_size", 32, "Images smaller than this (either side, px) are refused.", lower_bound=1)
flags.DEFINE_integer("chunk", 64, "At most this many images are read and segmented at a time.", lower_bound=1)
flags.DEFINE_float("chunk_megapixels", 50.0, "...and at most this many megapixels (memory is at most ~30 "
                   "bytes per pixel of a chunk on top of the program's ~0.9 GB: one 48-megapixel photo "
                   "measured 1.4 GB more; a single larger image is still done, alone).")
flags.DEFINE_string("classifier_workdir", None, "With a segmenter --workdir, a train_classifier run: adds "
                    "its class probabilities (it replays its own input: crops by its own segmenter, "
                    "purified photos; averaged over the fold models of a cross-validated run).")
flags.DEFINE_float("mm_per_pixel", None, "Pixel size, for measurements in millimetres.")
common.define_tta_flags()
flags.DEFINE_bool("overwrite", False, "Replace an earlier run's outputs in --out (refused otherwise): the "
                  "files its predictions table lists are removed first. Files predict did not write are "
                  "never replaced.")
for _name in ("workdir", "images", "out"):
  flags.mark_flag_as_required(_name)
# Refused while the flags are parsed, before anything is read or written.
flags.register_validator("chunk_megapixels", lambda v: v > 0, "--chunk_megapixels must be > 0")
flags.register_validator("mm_per_pixel", lambda v: v is None or v > 0, "--mm_per_pixel must be > 0")

TABLES = ("predictions.csv", "predictions.csv.partial")
# Files each record key writes: (CSV column, file name suffix).
FILES = {"mask": (("mask", ""), ("overlay", "_overlay")), "purified": (("purified", "_purified"),)}
OUTPUT_COLUMNS = tuple(column for outputs in FILES.values() for column, _ in outputs)  # the files predict writes
MEASUREMENTS = ("unit", "area", "perimeter", "diameter", "major_axis", "minor_axis", "asymmetry_major",
                "asymmetry_minor", "compactness", "solidity", "num_colours", "colours", "colour_spread")


def expand_globs(patterns: str) -> list[str]:
  files = []
  for pattern in filter(None, (p.strip() for p in patterns.split(","))):
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
      logging.warning("No file matches %r.", pattern)
    files.extend(matches)  # directories and broken links too: each gets a row saying why not
  return list(dict.fromkeys(files))


def output_stems(files: list[str]) -> dict[str, str]:
  """The output name (without .png) of each input: its stem, or, for inputs sharing a stem
  (dup.jpg, dup.png), stem_extension (dup_jpg, dup_png). From the paths alone, so whether one
  of them can be read does not decide the other's name."""
  stems = {f: os.path.splitext(os.path.basename(f)) for f in files}
  counts: dict[str, int] = {}
  for stem, _ in stems.values():
    counts[stem] = counts.get(stem, 0) + 1
  return {f: f"{stem}_{ext[1:]}" if counts[stem] > 1 and ext else stem for f, (stem, ext) in stems.items()}


def plan_outputs(files: list[str], out: str, predicts: frozenset[str]) -> dict[str, dict[str, str] | str]:
  """The files each input will write ({CSV column: path}, by the keys the task predicts), or why
  it must not: no output may be an input (with --out equal to the input folder, photo.png would
  become its own mask) or another input's output (X_overlay.jpg's mask is X.jpg's overlay).
  Earlier inputs keep their names."""
  inputs = {os.path.realpath(f): f for f in files}
  taken = {os.path.realpath(os.path.join(out, name)): "the predictions table" for name in TABLES}
  names = output_stems(files)
  plans: dict[str, dict[str, str] | str] = {}
  for path in files:
    stem = names[path]
    outputs = {column: os.path.join(out, f"{stem}{suffix}.png")
               for key in sorted(predicts & set(FILES)) for column, suffix in FILES[key]}
    problem = None
    for o in outputs.values():
      real = os.path.realpath(o)
      if real in inputs:
        problem = f"{path}: its output {o} would overwrite the input {inputs[real]}; use another --out"
      elif real in taken:
        problem = f"{path}: its output {o} is also written for {taken[real]}; rename one of them"
      if problem:
        break
    if problem:
      plans[path] = problem
      continue
    taken.update((os.path.realpath(o), path) for o in outputs.values())
    plans[path] = outputs
  return plans


def own_outputs(out: str) -> tuple[list[str], set[str]]:
  """(the predictions tables in `out`, the names of the files they list): what earlier runs of
  predict wrote there. A table that is not predict's (no file/status header) is refused: it is
  the user's file, and --overwrite would replace it."""
  tables, names = [], set()
  for name in TABLES:
    path = os.path.join(out, name)
    if not os.path.lexists(path):
      continue
    try:
      with open(path, newline="", errors="replace") as f:
        reader = csv.DictReader(f)
        if not {"file", "status"} <= set(reader.fieldnames or ()):
          raise ValueError("no file/status columns")
        for row in reader:
          names.update(os.path.basename(row[k]) for k in OUTPUT_COLUMNS if row.get(k))
    except (OSError, ValueError, csv.Error) as e:
      raise app.UsageError(f"--out={out}: {path} is not a predictions table of this program ({e}); "
                           "move it, or choose another --out") from None
    tables.append(path)
  return tables, names


def refuse_foreign_files(plans: dict, own: set[str]) -> None:
  """No planned output may replace an existing file that predict did not write (one not in the
  earlier tables): the whole run is refused, naming the file, before anything is written."""
  for path, outputs in plans.items():
    for o in outputs.values() if isinstance(outputs, dict) else ():
      if os.path.lexists(o) and os.path.basename(o) not in own:
        raise app.UsageError(f"{o} exists and was not written by predict; it would be replaced by the "
                             f"output of {path}. Move it, or choose another --out")


def remove_earlier_run(out: str, tables: list[str], own: set[str], files: list[str]) -> None:
  """--overwrite: the earlier run's outputs (never an input of this run), then its tables, so a
  killed run never leaves an old table beside new masks and --out holds what the new table lists."""
  inputs = {os.path.realpath(f) for f in files}
  for name in sorted(own):
    path = os.path.join(out, name)
    if os.path.isfile(path) and os.path.realpath(path) not in inputs:
      os.remove(path)
  for path in tables:
    os.remove(path)
  if tables or own:
    logging.info("--overwrite: removed the earlier run's %d tables and %d listed outputs.", len(tables), len(own))


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
  buf = pyio.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  io.atomic_write_bytes(path, buf.getvalue().encode())


def read_in_chunks(files: list[str], plans: dict, min_size: int, max_count: int, max_megapixels: float):
  """Lists of (path, (uint8 RGB image, notes) or the ImageError that refused it), each holding at most
  `max_count` images and, beyond its first image, at most `max_megapixels` of pixels: a chunk's
  memory (images, probability maps and masks, plus the preprocessing of the image being segmented:
  at most ~30 bytes per pixel) is bounded by pixels, not count."""
  chunk, pixels = [], 0
  for path in files:
    try:
      if isinstance(plans[path], str):
        raise io.ImageError(plans[path])
      item = io.read_rgb_image_with_notes(path, min_size=min_size)
    except io.ImageError as e:
      item = e
    size = 0 if isinstance(item, io.ImageError) else item[0].shape[0] * item[0].shape[1]
    images_in_chunk = sum(not isinstance(i, io.ImageError) for _, i in chunk)
    if chunk and (images_in_chunk >= max_count or (size and pixels + size > max_megapixels * 1e6)):
      yield chunk
      chunk, pixels = [], 0
    chunk.append((path, item))
    pixels += size
  if chunk:
    yield chunk


def load_predictors(workdir: str, classifier_workdir: str | None, which) -> list[tuple[base.Task, object]]:
  """[(task, state)] whose records each photo's row merges: the --workdir run's predictor (a
  segmenter's with --tta_scales / --fallback applied), then the --classifier_workdir run's."""
  try:
    task, state = runner.predictor(workdir, which, predict="tta" if FLAGS.tta else "predict")
  except base.PredictionUnsupported as e:
    raise app.UsageError(f"--workdir={workdir}: {e}") from None
  if task.makes_masks:
    task = common.with_segmentation_overrides(task, FLAGS.tta_scales, FLAGS.fallback)
  elif FLAGS.tta_scales is not None or FLAGS.fallback is not None:
    raise app.UsageError(f"--tta_scales / --fallback: a {task.name!r} run is not a segmenter")
  try:  # refused before anything is written, with the task's own reason
    task.check_predict()
  except base.PredictionUnsupported as e:
    raise app.UsageError(f"--workdir={workdir}: {e}") from None
  predictors = [(task, state)]
  if classifier_workdir:
    if not task.makes_masks:
      raise app.UsageError("--classifier_workdir goes with a segmenter --workdir")
    runner.load(classifier_workdir, classification.ClassificationTask, "classifier_workdir")
    predictors.append(runner.predictor(classifier_workdir, "best"))
    try:
      predictors[-1][0].check_predict()
    except base.PredictionUnsupported as e:
      raise app.UsageError(f"--classifier_workdir={classifier_workdir}: {e}") from None
  return predictors


def predict_records(predictors, images: list[np.ndarray]) -> list[dict]:
  """Each photo's merged record; the first predictor's keys win (the --workdir segmenter's mask
  over a crop classifier's own)."""
  records = [{} for _ in images]
  for i, (task, state) in enumerate(predictors):
    predict = "tta" if FLAGS.tta and i == 0 else "predict"
    for record, found in zip(records, task.predict_images(state, images, predict=predict)):
      for k, v in found.items():
        record.setdefault(k, v)
  return records


def main(argv):
  del argv
  common.quiet_library_logs()
  files = expand_globs(FLAGS.images)
  if not files:
    raise app.UsageError(f"--images={FLAGS.images!r} matches no files")
  csv_path, partial_path = (os.path.join(FLAGS.out, name) for name in TABLES)
  for path in (csv_path, partial_path):
    if os.path.realpath(path) in {os.path.realpath(f) for f in files}:
      raise app.UsageError(f"--out={FLAGS.out}: {path} is one of the --images")
  tables, own = own_outputs(FLAGS.out)
  if tables and not FLAGS.overwrite:
    raise app.UsageError(f"--out={FLAGS.out} already holds {os.path.basename(tables[0])} from an earlier "
                         "run; pass --overwrite to replace that run's outputs, or choose another --out")
  try:  # before the models are restored: a read-only --out fails here, naming itself
    os.makedirs(FLAGS.out, exist_ok=True)
    with tempfile.TemporaryFile(dir=FLAGS.out):
      pass
  except OSError as e:
    raise app.UsageError(f"--out={FLAGS.out}: cannot write there ({e.strerror or e})") from None
  predictors = load_predictors(FLAGS.workdir, FLAGS.classifier_workdir,
                               common.checkpoint_flag_value(FLAGS.checkpoint))
  if FLAGS.tta and "tta" not in predictors[0][0].predict_fns():
    raise app.UsageError(f"--tta: a {predictors[0][0].name!r} run has no test-time augmentation")
  predicts = frozenset().union(*(t.predicts for t, _ in predictors))
  plans = plan_outputs(files, FLAGS.out, predicts)
  refuse_foreign_files(plans, own)
  if FLAGS.overwrite:
    remove_earlier_run(FLAGS.out, tables, own, files)
  # The table of this run is written whole at the end; until then, progress goes to a partial
  # table, written ahead of each chunk's files: whatever a killed run wrote, it lists.
  columns = ["file", "status", "error", "notes"]
  columns += [c for key in ("mask", "purified") if key in predicts for c, _ in FILES[key]]
  columns += ["height", "width"]
  if "mask" in predicts:
    columns += ["lesion_pixels", "lesion_fraction", *MEASUREMENTS]
  if "probabilities" in predicts:
    names = next(t.class_names for t, _ in predictors if "probabilities" in t.predicts)
    columns += ["predicted"] + [f"p_{n}" for n in names]

  rows: list[dict] = []
  failed = done = 0
  for chunk in read_in_chunks(files, plans, FLAGS.min_size, FLAGS.chunk, FLAGS.chunk_megapixels):
    good, images = [], []
    for path, item in chunk:
      row = {"file": path, "status": "ok", "error": ""}
      rows.append(row)
      if isinstance(item, io.ImageError):
        row.update(status="error", error=str(item))
        logging.error("Skipping %s", item)
        failed += 1
        continue
      image, notes = item
      row.update(height=image.shape[0], width=image.shape[1], notes="; ".join(notes))
      good.append(row)
      images.append(image)
    done += len(chunk)
    records = predict_records(predictors, images) if images else []
    if any(plans[row["file"]] for row in good):
      for row in good:  # write-ahead: listed (so predict's own next time) before they exist
        row.update(status="writing", **plans[row["file"]])
      write_csv(partial_path, rows, columns)
    for row, image, record in zip(good, images, records):
      row["status"] = "ok"
      if "mask" in record:
        mask = record["mask"]
        io.write_png(row["mask"], mask.astype(np.uint8) * 255)
        io.write_png(row["overlay"], figures.overlay(image, mask))
        row.update(lesion_pixels=int(mask.sum()), lesion_fraction=round(float(mask.mean()), 6))
        found = measure.measure_lesion(mask, image, FLAGS.mm_per_pixel)
        row.update({k: (" ".join(found[k]) if k == "colours" else
                        round(found[k], 4) if isinstance(found[k], float) else found[k]) for k in MEASUREMENTS})
      if "purified" in record:
        io.write_png(row["purified"], record["purified"])
      if "probabilities" in record:
        p = np.asarray(record["probabilities"])
        row.update({f"p_{n}": round(float(v), 6) for n, v in zip(names, p)}, predicted=names[int(np.argmax(p))])
      for k, v in record.get("scores", {}).items():
        if k not in columns:
          columns.append(k)
        row[k] = round(float(v), 6)
    write_csv(partial_path, rows, columns)
    logging.info("%d/%d files done (%d refused).", done, len(files), failed)
  write_csv(csv_path, rows, columns)
  if os.path.exists(partial_path):
    os.remove(partial_path)
  print(f"Predicted {len(files) - failed} of {len(files)} images into {FLAGS.out} "
        f"({failed} refused; see {csv_path}).")


if __name__ == "__main__":
  common.run(main)
