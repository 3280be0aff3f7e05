"""predict never replaces a file it did not write, names same-stem inputs apart, leaves --out
holding exactly what its table lists (also after a killed run), and refuses bad input and flags
before anything is written. One tiny segmenter run is trained for the module.

Run as `python -m tests.test_predict_safety ARGS` it is experiments.predict killed (os._exit) right
after writing its first mask: the fault injected by the killed-run test.
"""
import csv
import os
import sys

import cv2
import numpy as np
import pytest

from tests.test_experiments_cli import TINY_FLAGS, _Commands

_commands = None


@pytest.fixture(scope="module")
def workdir(tiny_data_dir, tiny_dataset, tmp_path_factory):
  global _commands
  _commands = _Commands(str(tmp_path_factory.mktemp("cli")))
  run_dir = str(tmp_path_factory.mktemp("run"))
  run("experiments.train_segmenter", f"--workdir={run_dir}", f"--dataset={tiny_dataset}",
      f"--data_dir={tiny_data_dir}", "--num_steps=2", *TINY_FLAGS)
  yield run_dir
  _commands.close()


def run(module, *args, check=True):
  return _commands.run(module, *args, check=check)


def predict(workdir, images, out, *args, check=True):
  return run("experiments.predict", f"--workdir={workdir}", f"--images={images}", f"--out={out}", *args,
             check=check)


def photo(path, seed=0, size=(40, 48)):
  cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def table(out):
  return {os.path.basename(r["file"]): r for r in csv.DictReader(open(out / "predictions.csv"))}


def refused_in_one_line(proc, *expected):
  assert proc.returncode != 0, proc.stdout
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  for text in expected:
    assert text in proc.stderr, (text, proc.stderr[-3000:])


def test_a_users_file_is_never_replaced_even_with_overwrite(workdir, tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  photo(photos / "x.jpg")
  photo(photos / "x.png", seed=1)  # the user's own file, not among the inputs
  original = (photos / "x.png").read_bytes()
  for extra in ((), ("--overwrite",)):
    proc = predict(workdir, f"{photos}/*.jpg", photos, *extra, check=False)
    refused_in_one_line(proc, f"{photos / 'x.png'} exists and was not written by predict")
    assert (photos / "x.png").read_bytes() == original
    assert sorted(os.listdir(photos)) == ["x.jpg", "x.png"]  # nothing written
  # predict's own outputs (listed in its table) are replaced with --overwrite; a foreign file
  # that joined them is still refused, and the earlier run's table stands.
  out = tmp_path / "out"
  predict(workdir, f"{photos}/x.jpg", out)
  photo(photos / "y.jpg", seed=2)
  (out / "y_overlay.png").write_bytes(b"mine")
  proc = predict(workdir, f"{photos}/*.jpg", out, "--overwrite", check=False)
  refused_in_one_line(proc, "y_overlay.png exists and was not written by predict")
  assert (out / "y_overlay.png").read_bytes() == b"mine" and list(table(out)) == ["x.jpg"]
  os.remove(out / "y_overlay.png")
  predict(workdir, f"{photos}/*.jpg", out, "--overwrite")
  assert list(table(out)) == ["x.jpg", "y.jpg"]


def test_same_stem_inputs_get_their_own_names_and_a_corrupt_one_takes_none(workdir, tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  (images / "dup.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # sorted first
  photo(images / "dup.png")
  photo(images / "solo.png", seed=1)
  out = tmp_path / "out"
  predict(workdir, f"{images}/*", out)
  rows = table(out)
  assert rows["dup.png"]["status"] == "ok" and rows["dup.png"]["mask"] == str(out / "dup_png.png")
  assert rows["dup.png"]["overlay"] == str(out / "dup_png_overlay.png")
  assert rows["dup.jpg"]["status"] == "error" and "not a decodable image" in rows["dup.jpg"]["error"]
  assert rows["solo.png"]["mask"] == str(out / "solo.png")  # a stem of its own keeps the plain name
  assert sorted(os.listdir(out)) == ["dup_png.png", "dup_png_overlay.png", "predictions.csv", "solo.png",
                                     "solo_overlay.png"]


def first_run_of_two_photos(workdir, tmp_path):
  """(images folder, --out) after a predict run on a.png and b.png."""
  images = tmp_path / "images"
  images.mkdir()
  for i, name in enumerate(("a.png", "b.png")):
    photo(images / name, seed=i)
  out = tmp_path / "out"
  predict(workdir, f"{images}/*.png", out)
  return images, out


def test_overwrite_leaves_only_what_the_new_table_lists(workdir, tmp_path):
  images, out = first_run_of_two_photos(workdir, tmp_path)
  (out / "notes.txt").write_text("the user's")  # not an output of either run: left alone
  predict(workdir, f"{images}/a.png", out, "--overwrite")
  assert list(table(out)) == ["a.png"]
  assert sorted(os.listdir(out)) == ["a.png", "a_overlay.png", "notes.txt", "predictions.csv"]


def test_a_killed_overwrite_run_leaves_no_old_table_and_owns_what_it_wrote(workdir, tmp_path):
  images, out = first_run_of_two_photos(workdir, tmp_path)
  killed = run("tests.test_predict_safety", f"--workdir={workdir}", f"--images={images}/*.png", f"--out={out}",
               "--overwrite", "--chunk=1", check=False)
  assert killed.returncode == 137, killed.stderr[-3000:]
  # The old table is gone before any mask was replaced; the partial one lists what was written.
  assert not os.path.exists(out / "predictions.csv")
  assert sorted(os.listdir(out)) == ["a.png", "predictions.csv.partial"]
  [row] = csv.DictReader(open(out / "predictions.csv.partial"))
  assert row["mask"] == str(out / "a.png") and row["overlay"] == str(out / "a_overlay.png")
  again = predict(workdir, f"{images}/*.png", out, check=False)
  refused_in_one_line(again, "predictions.csv.partial", "--overwrite")
  predict(workdir, f"{images}/*.png", out, "--overwrite")  # a.png is predict's own: replaced
  assert list(table(out)) == ["a.png", "b.png"]
  assert not os.path.exists(out / "predictions.csv.partial")


def test_a_classifier_workdir_of_another_kind_is_refused_by_name(workdir, tmp_path):
  photo(tmp_path / "a.png")
  proc = predict(workdir, f"{tmp_path}/a.png", tmp_path / "out", f"--classifier_workdir={workdir}", check=False)
  refused_in_one_line(proc, f"--classifier_workdir={workdir}: holds a 'segmentation' run, not a 'classification' run")
  assert not os.path.exists(tmp_path / "out" / "predictions.csv")


@pytest.mark.parametrize("flag", ["--chunk=0", "--min_size=-1", "--mm_per_pixel=-1", "--chunk_megapixels=0"])
def test_nonsense_flags_are_refused_while_parsing(workdir, tmp_path, flag):
  photo(tmp_path / "a.png")
  proc = predict(workdir, f"{tmp_path}/a.png", tmp_path / "out", flag, check=False)
  assert proc.returncode != 0 and flag.split("=")[0] in proc.stderr, proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / "out")


def test_grayscale_sources_are_refused_even_when_decoded_to_colour(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from lesion_jax import io  # pylint: disable=g-import-not-at-top
  gray = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
  opaque = np.full_like(gray, 255)
  Image.fromarray(np.stack([gray, opaque], -1)).save(tmp_path / "la.png")  # OpenCV: 4 equal channels
  Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "i16.png")
  for name in ("la.png", "i16.png"):
    with pytest.raises(io.ImageError, match=f"{name}: grayscale image; dermoscopy needs RGB colour"):
      io.read_rgb_image(tmp_path / name)
  colour = np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)
  Image.fromarray(colour).save(tmp_path / "rgb.png")
  Image.fromarray(colour).convert("P").save(tmp_path / "p_colour.png")
  np.testing.assert_array_equal(io.read_rgb_image(tmp_path / "rgb.png"), colour)
  assert io.read_rgb_image(tmp_path / "p_colour.png").shape == (40, 40, 3)


def test_measurements_of_a_large_lesion_take_little_memory():
  """The colour and axis measurements of a full-resolution lesion once took ~170 bytes per lesion
  pixel (float64 differences to every reference colour at once): predict's peak for one photo."""
  import tracemalloc  # pylint: disable=g-import-not-at-top
  from lesion_jax.eval import measure  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  small = cv2.GaussianBlur(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (5, 5), 2)
  small_mask = np.zeros((60, 80), bool)
  small_mask[10:50, 15:70] = True
  # The whole-array computation it replaced gives the same numbers.
  lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[small_mask]
  refs = np.array(list(measure.DERMOSCOPIC_COLOURS.values()) + [measure._SKIN_LIKE])
  nearest = np.argmin(((lab[:, None, :] - refs[None]) ** 2).sum(-1), 1)
  present, fractions, spread = measure.colours_present(small, small_mask)
  assert fractions == {n: float((nearest == i).mean()) for i, n in enumerate(measure.DERMOSCOPIC_COLOURS)}
  assert spread == float(np.sqrt(((lab - lab.mean(0)) ** 2).sum(-1)).mean()) and present
  image = np.ascontiguousarray(np.broadcast_to(small[:1, :1], (1000, 1000, 3)))
  mask = np.zeros((1000, 1000), bool)
  cv2.circle(mask.view(np.uint8), (500, 500), 450, 1, -1)
  tracemalloc.start()
  try:
    measure.measure_lesion(mask, image)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 50 * mask.sum(), peak / mask.sum()  # bytes per lesion pixel


if __name__ == "__main__":
  # experiments.predict, killed (as by SIGKILL) right after its first mask file is written.
  import runpy  # pylint: disable=g-import-not-at-top
  from lesion_jax import io as lesion_io  # pylint: disable=g-import-not-at-top
  write_png = lesion_io.write_png

  def write_then_die(path, image, *args, **kwargs):
    write_png(path, image, *args, **kwargs)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(137)

  lesion_io.write_png = write_then_die
  sys.argv[0] = "predict"
  runpy.run_module("experiments.predict", run_name="__main__", alter_sys=True)
