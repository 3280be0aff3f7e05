r"""Segments (and/or classifies) image files with trained models.

  python -m experiments.predict --workdir=runs/unet --images='photos/*.jpg' --out=predictions \
      [--tta] [--tta_scales=128,160] [--fallback]

For each image: DIR/<stem>.png (binary mask at the image's own resolution, 0/255),
DIR/<stem>_overlay.png, and a row in DIR/predictions.csv with the ABCD measurements of the lesion
(and, with --classifier_workdir, the class probabilities). A file that cannot be used (corrupt,
grayscale, RGBA, too small) gets its reason in the CSV and the log; the others are still done.
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
flags.DEFINE_integer("min_size", 32, "Images smaller than this (either side, px) are refused.")
flags.DEFINE_integer("chunk", 64, "At most this many images are read and segmented at a time.")
flags.DEFINE_float("chunk_megapixels", 50.0, "...and at most this many megapixels (memory is ~7 bytes "
                   "per pixel of a chunk; a single larger image is still done, alone).")
flags.DEFINE_string("classifier_workdir", None, "A train_classifier run: adds class probabilities "
                    "(on the lesion crop if it was trained on segmented input; averaged over the "
                    "fold models of a cross-validated run).")
flags.DEFINE_float("mm_per_pixel", None, "Pixel size, for measurements in millimetres.")
common.define_tta_flags()
flags.DEFINE_bool("overwrite", False, "Replace the outputs of an earlier run in --out (refused otherwise).")
for _name in ("workdir", "images", "out"):
  flags.mark_flag_as_required(_name)

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


def plan_outputs(files: list[str], out: str, with_masks: bool) -> dict[str, list[str] | str]:
  """The files each input will write, or why it must not: no output may be an input (with --out
  equal to the input folder, photo.png would become its own mask) or another input's output
  (X_overlay.jpg's mask is X.jpg's overlay). Earlier inputs keep their names."""
  inputs = {os.path.realpath(f): f for f in files}
  taken = {os.path.realpath(os.path.join(out, "predictions.csv")): "the predictions table"}
  plans: dict[str, list[str] | str] = {}
  for path in files:
    stem = os.path.splitext(os.path.basename(path))[0]
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


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
  buf = pyio.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  io.atomic_write_bytes(path, buf.getvalue().encode())


def read_in_chunks(files: list[str], plans: dict, min_size: int, max_count: int, max_megapixels: float):
  """Lists of (path, (uint8 RGB image, notes) or the ImageError that refused it), each holding at most
  `max_count` images and, beyond its first image, at most `max_megapixels` of pixels: a chunk's
  memory (images, probability maps and masks, ~7 bytes per pixel) is bounded by pixels, not count."""
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
    segmenter = (task, runner.restore(task, workdir, which))
    cls_task = runner.load(classifier_workdir) if classifier_workdir else None
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
  csv_path = os.path.join(FLAGS.out, "predictions.csv")
  if os.path.realpath(csv_path) in {os.path.realpath(f) for f in files}:
    raise app.UsageError(f"--out={FLAGS.out}: {csv_path} is one of the --images")
  if os.path.exists(csv_path) and not FLAGS.overwrite:
    raise app.UsageError(f"--out={FLAGS.out} already holds predictions.csv from an earlier run; "
                         "pass --overwrite to replace that run's outputs, or choose another --out")
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
  # The table of this run is written whole at the end; until then, progress goes to a partial
  # file, so a run killed midway leaves an earlier predictions.csv as it was.
  partial_path = csv_path + ".partial"
  plans = plan_outputs(files, FLAGS.out, with_masks=segmenter is not None)
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
      good.append((row, os.path.splitext(os.path.basename(path))[0]))
      images.append(image)
    done += len(chunk)
    masks = []
    if segmenter is not None and images:
      seg_task, seg_state = segmenter
      masks = seg_task.masks_for(seg_task.segment_images(seg_state, images, predict="tta" if FLAGS.tta else "predict"))
    for (row, stem), image, mask in zip(good, images, masks):
      mask_path = os.path.join(FLAGS.out, f"{stem}.png")
      overlay_path = os.path.join(FLAGS.out, f"{stem}_overlay.png")
      io.write_png(mask_path, mask.astype(np.uint8) * 255)
      io.write_png(overlay_path, figures.overlay(image, mask))
      row.update(mask=mask_path, overlay=overlay_path, lesion_pixels=int(mask.sum()),
                 lesion_fraction=round(float(mask.mean()), 6))
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
      for (row, _), p in zip(good, probs):
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
  app.run(common.main_with_usage_errors(main))
