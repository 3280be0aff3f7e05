r"""Segments (and/or classifies) image files with trained models.

  python -m experiments.predict --workdir=runs/unet --images='photos/*.jpg' --out=predictions \
      [--tta] [--tta_scales=128,160] [--fallback]

For each image: DIR/<stem>.png (binary mask at the image's own resolution, 0/255),
DIR/<stem>_overlay.png, and a row in DIR/predictions.csv with the ABCD measurements of the lesion
(and, with --classifier_workdir, the class probabilities). A file that cannot be used (corrupt,
grayscale, RGBA, too small) gets its reason in the CSV and the log; the others are still done.

Inputs that share a stem (dup.jpg and dup.png) are named by stem and extension instead:
DIR/dup_jpg.png, DIR/dup_jpg_overlay.png, DIR/dup_png.png, ... The names depend on the paths
only, so a file that turns out unreadable never takes another's name.

Predict replaces only files it wrote itself: those listed (mask, overlay) in an earlier run's
DIR/predictions.csv, or in the DIR/predictions.csv.partial of a run that was killed (that table
lists a chunk's files before they are written). A run whose outputs would replace any other
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
from lesion_jax.eval import figures, measure, postprocess
from lesion_jax.tasks import classification, runner, segmentation

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a train_segmenter run (masks, measurements) or "
                    "of a train_classifier run (class probabilities; with masks too if it was "
                    "trained on segmented input).")
flags.DEFINE_string("images", None, "Glob of image files (quote it), or a comma-separated list of globs.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_integer("min_size", 32, "Images smaller than this (either side, px) are refused.", lower_bound=1)
flags.DEFINE_integer("chunk", 64, "At most this many images are read and segmented at a time.", lower_bound=1)
flags.DEFINE_float("chunk_megapixels", 50.0, "...and at most this many megapixels (memory is at most ~30 "
                   "bytes per pixel of a chunk on top of the program's ~0.9 GB: one 48-megapixel photo "
                   "measured 1.4 GB more; a single larger image is still done, alone).")
flags.DEFINE_string("classifier_workdir", None, "A train_classifier run: adds class probabilities "
                    "(on the lesion crop if it was trained on segmented input; averaged over the "
                    "fold models of a cross-validated run).")
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
COLUMNS = ("file", "status", "error", "notes", "mask", "overlay", "height", "width", "lesion_pixels",
           "lesion_fraction")
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


def plan_outputs(files: list[str], out: str, with_masks: bool) -> dict[str, list[str] | str]:
  """The files each input will write, or why it must not: no output may be an input (with --out
  equal to the input folder, photo.png would become its own mask) or another input's output
  (X_overlay.jpg's mask is X.jpg's overlay). Earlier inputs keep their names."""
  inputs = {os.path.realpath(f): f for f in files}
  taken = {os.path.realpath(os.path.join(out, name)): "the predictions table" for name in TABLES}
  names = output_stems(files)
  plans: dict[str, list[str] | str] = {}
  for path in files:
    stem = names[path]
    outputs = [os.path.join(out, f"{stem}.png"), os.path.join(out, f"{stem}_overlay.png")] if with_masks else []
    problem = None
    for o in outputs:
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
    taken.update((os.path.realpath(o), path) for o in outputs)
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
          names.update(os.path.basename(row[k]) for k in ("mask", "overlay") if row.get(k))
    except (OSError, ValueError, csv.Error) as e:
      raise app.UsageError(f"--out={out}: {path} is not a predictions table of this program ({e}); "
                           "move it, or choose another --out") from None
    tables.append(path)
  return tables, names


def refuse_foreign_files(plans: dict, own: set[str]) -> None:
  """No planned output may replace an existing file that predict did not write (one not in the
  earlier tables): the whole run is refused, naming the file, before anything is written."""
  for path, outputs in plans.items():
    for o in outputs if isinstance(outputs, list) else ():
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


def load_models(workdir: str, classifier_workdir: str | None, which):
  """(segmenter (task, state) or None, classifier (task, fold states) or None) for a workdir of
  either kind: a segmentation run (plus an optional classifier run), or a classification run
  (whose segmenter, for segmented input, is the one it was trained with)."""
  task = runner.load(workdir)
  segmenter = classifier = None
  if isinstance(task, classification.ClassificationTask):
    if classifier_workdir:
      raise app.UsageError("--classifier_workdir goes with a segmenter --workdir; --workdir is a classifier run")
    classifier_workdir, cls_task = workdir, task
    if task.config.image_artifacts:
      seg_dir = task.config.crop.segmenter_workdir
      # The crops it trained on went through the fallback iff its --crop.fallback; --fallback overrides.
      fallback = task.config.crop.fallback if FLAGS.fallback is None else FLAGS.fallback
      seg_task = common.with_segmentation_overrides(runner.load(seg_dir), FLAGS.tta_scales, fallback)
      segmenter = (seg_task, runner.restore(seg_task, seg_dir, "best"))
  elif isinstance(task, segmentation.SegmentationTask):
    task = common.with_segmentation_overrides(task, FLAGS.tta_scales, FLAGS.fallback)
    cls_task = (runner.load(classifier_workdir, classification.ClassificationTask, "classifier_workdir")
                if classifier_workdir else None)
    segmenter = (task, runner.restore(task, workdir, which))
  else:
    raise app.UsageError(f"{workdir} holds a {task.name!r} run: predict knows segmentation and classification runs")
  if classifier_workdir:
    # A cross-validated run (--folds) has one model per fold: their probabilities are averaged.
    run_dirs = sorted(glob.glob(os.path.join(classifier_workdir, "fold_*"))) or [classifier_workdir]
    cls_which = which if classifier_workdir == workdir else "best"
    classifier = (cls_task, [runner.restore(cls_task, d, cls_which) for d in run_dirs])
  return segmenter, classifier


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
  segmenter, classifier = load_models(FLAGS.workdir, FLAGS.classifier_workdir,
                                      common.checkpoint_flag_value(FLAGS.checkpoint))
  if FLAGS.tta and segmenter is not None and "tta" not in segmenter[0].predict_fns():
    raise app.UsageError(f"--tta: a {segmenter[0].name!r} segmenter has no test-time augmentation")
  plans = plan_outputs(files, FLAGS.out, with_masks=segmenter is not None)
  refuse_foreign_files(plans, own)
  if FLAGS.overwrite:
    remove_earlier_run(FLAGS.out, tables, own, files)
  # The table of this run is written whole at the end; until then, progress goes to a partial
  # table, written ahead of each chunk's masks: whatever a killed run wrote, it lists.
  columns = list(COLUMNS + MEASUREMENTS) if segmenter else ["file", "status", "error", "notes", "height", "width"]
  if classifier is not None:
    columns += ["predicted"] + [f"p_{n}" for n in classifier[0].class_names]

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
    masks = []
    if segmenter is not None and images:
      seg_task, seg_state = segmenter
      masks = seg_task.masks_for(seg_task.segment_images(seg_state, images, predict="tta" if FLAGS.tta else "predict"))
      for row in good:  # write-ahead: listed (so predict's own next time) before they exist
        row.update(status="writing", mask=plans[row["file"]][0], overlay=plans[row["file"]][1])
      write_csv(partial_path, rows, columns)
    for row, image, mask in zip(good, images, masks):
      io.write_png(row["mask"], mask.astype(np.uint8) * 255)
      io.write_png(row["overlay"], figures.overlay(image, mask))
      row.update(status="ok", lesion_pixels=int(mask.sum()), lesion_fraction=round(float(mask.mean()), 6))
      found = measure.measure_lesion(mask, image, FLAGS.mm_per_pixel)
      row.update({k: (" ".join(found[k]) if k == "colours" else
                      round(found[k], 4) if isinstance(found[k], float) else found[k]) for k in MEASUREMENTS})
    if classifier is not None and good:
      cls_task, cls_states = classifier
      crop = cls_task.config.crop
      size = cls_task.config.input.image_size
      # The same crop as the stored training crops (artifacts/crops.py): postprocess.crop_to_mask
      # with the classifier run's own crop settings.
      inputs = ([postprocess.crop_to_mask(im, m, size, crop.margin, crop.black_out) for im, m in zip(images, masks)]
                if cls_task.config.image_artifacts else images)
      probs = np.mean([cls_task.classify_images(st, inputs) for st in cls_states], axis=0)
      names = cls_task.class_names
      for row, p in zip(good, probs):
        row.update({f"p_{n}": round(float(v), 6) for n, v in zip(names, p)}, predicted=names[int(np.argmax(p))])
    write_csv(partial_path, rows, columns)
    logging.info("%d/%d files done (%d refused).", done, len(files), failed)
  write_csv(csv_path, rows, columns)
  if os.path.exists(partial_path):
    os.remove(partial_path)
  verb = "Segmented" if segmenter else "Classified"
  print(f"{verb} {len(files) - failed} of {len(files)} images into {FLAGS.out} "
        f"({failed} refused; see {csv_path}).")


if __name__ == "__main__":
  common.run(main)
