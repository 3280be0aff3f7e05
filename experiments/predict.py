r"""Segments image files with a trained segmenter.

  python -m experiments.predict --workdir=runs/unet --images='photos/*.jpg' --out=predictions

For each image: DIR/<stem>.png (binary mask at the image's own resolution, 0/255),
DIR/<stem>_overlay.png, and a row in DIR/predictions.csv with the ABCD measurements of the lesion
(and, with --classifier_workdir, the class probabilities). A file that cannot be used (corrupt,
grayscale, RGBA, too small) gets its reason in the CSV and the log; the others are still done.
"""
import csv
import glob
import io as pyio
import os

from absl import app, flags, logging
import numpy as np

from experiments import common
from lesion_jax import io
from lesion_jax.eval import figures, measure, postprocess
from lesion_jax.tasks import classification, segmentation

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a train_segmenter run.")
flags.DEFINE_string("images", None, "Glob of image files (quote it), or a comma-separated list of globs.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_integer("min_size", 32, "Images smaller than this (either side, px) are refused.")
flags.DEFINE_integer("chunk", 64, "Images read and segmented at a time (bounds memory).")
flags.DEFINE_string("classifier_workdir", None, "A train_classifier run: adds class probabilities "
                    "(on the lesion crop if it was trained on segmented input; averaged over the "
                    "fold models of a cross-validated run).")
flags.DEFINE_float("mm_per_pixel", None, "Pixel size, for measurements in millimetres.")
for _name in ("workdir", "images", "out"):
  flags.mark_flag_as_required(_name)

COLUMNS = ("file", "status", "error", "mask", "overlay", "height", "width", "lesion_pixels",
           "lesion_fraction")
MEASUREMENTS = ("unit", "area", "perimeter", "diameter", "major_axis", "minor_axis", "asymmetry_major",
                "asymmetry_minor", "compactness", "solidity", "num_colours", "colours", "colour_spread")


def expand_globs(patterns: str) -> list[str]:
  files = []
  for pattern in filter(None, (p.strip() for p in patterns.split(","))):
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
      logging.warning("No file matches %r.", pattern)
    files.extend(m for m in matches if os.path.isfile(m))
  return list(dict.fromkeys(files))


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
  buf = pyio.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  io.atomic_write_bytes(path, buf.getvalue().encode())


def main(argv):
  del argv
  common.quiet_library_logs()
  files = expand_globs(FLAGS.images)
  if not files:
    raise app.UsageError(f"--images={FLAGS.images!r} matches no files")
  config = segmentation.load_config(FLAGS.workdir)
  which = int(FLAGS.checkpoint) if FLAGS.checkpoint.isdigit() else FLAGS.checkpoint
  state = segmentation.restore(FLAGS.workdir, config, which)
  os.makedirs(FLAGS.out, exist_ok=True)
  csv_path = os.path.join(FLAGS.out, "predictions.csv")
  columns = list(COLUMNS + MEASUREMENTS)
  classifier = None
  if FLAGS.classifier_workdir:
    cls_config = classification.load_config(FLAGS.classifier_workdir)
    names = classification.class_names(cls_config)
    # A cross-validated run (--folds) has one model per fold: their probabilities are averaged.
    run_dirs = sorted(glob.glob(os.path.join(FLAGS.classifier_workdir, "fold_*"))) or [FLAGS.classifier_workdir]
    cls_states = [classification.restore(d, cls_config, len(names)) for d in run_dirs]
    crop_margin = io.read_json(os.path.join(FLAGS.classifier_workdir, "config.json")).get("crop_margin", 0.1)
    classifier = (cls_config, cls_states, names, crop_margin)
    columns += ["predicted"] + [f"p_{n}" for n in names]

  rows: list[dict] = []
  stems: dict[str, str] = {}
  failed = 0
  for start in range(0, len(files), FLAGS.chunk):
    good, images = [], []
    for path in files[start:start + FLAGS.chunk]:
      row = {"file": path, "status": "ok", "error": ""}
      stem = os.path.splitext(os.path.basename(path))[0]
      try:
        if stem in stems:
          raise io.ImageError(f"{path}: output name {stem}.png already used by {stems[stem]}")
        image = io.read_rgb_image(path, min_size=FLAGS.min_size)
      except io.ImageError as e:
        row.update(status="error", error=str(e))
        logging.error("Skipping %s", e)
        failed += 1
        rows.append(row)
        continue
      stems[stem] = path
      rows.append(row)
      good.append((row, stem))
      images.append(image)
    probs = segmentation.segment_images(state, config, images) if images else []
    for (row, stem), image, prob in zip(good, images, probs):
      mask = postprocess.binarize(prob, config.threshold)
      if config.postprocess:
        mask = postprocess.clean_mask(mask)
      mask_path = os.path.join(FLAGS.out, f"{stem}.png")
      overlay_path = os.path.join(FLAGS.out, f"{stem}_overlay.png")
      io.write_png(mask_path, mask.astype(np.uint8) * 255)
      io.write_png(overlay_path, figures.overlay(image, mask))
      row.update(mask=mask_path, overlay=overlay_path, height=image.shape[0], width=image.shape[1],
                 lesion_pixels=int(mask.sum()), lesion_fraction=round(float(mask.mean()), 6))
      found = measure.measure_lesion(mask, image, FLAGS.mm_per_pixel)
      row.update({k: (" ".join(found[k]) if k == "colours" else
                      round(found[k], 4) if isinstance(found[k], float) else found[k]) for k in MEASUREMENTS})
      row["_mask"] = mask
    if classifier is not None and good:
      cls_config, cls_states, names, margin = classifier
      size = cls_config.input.image_size
      inputs = [postprocess.crop_to_mask(im, row.pop("_mask"), size, margin) if cls_config.image_artifacts
                else im for (row, _), im in zip(good, images)]
      probs = np.mean([classification.classify_images(st, cls_config, inputs) for st in cls_states], axis=0)
      for (row, _), p in zip(good, probs):
        row.update({f"p_{n}": round(float(v), 6) for n, v in zip(names, p)}, predicted=names[int(np.argmax(p))])
    for row, _ in good:
      row.pop("_mask", None)
    write_csv(csv_path, rows, columns)
    logging.info("%d/%d files done (%d refused).", min(start + FLAGS.chunk, len(files)), len(files), failed)
  print(f"Segmented {len(files) - failed} of {len(files)} images into {FLAGS.out} "
        f"({failed} refused; see {csv_path}).")


if __name__ == "__main__":
  app.run(main)
