"""Pipeline 5, the Lesion Indexing Network: DR/DM rotations, centre crop, letterbox geometry,
multi-scale fusion at the native resolution, the LICU, the FCRN, and a tiny run."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from lesion_jax.config import RunConfig
from lesion_jax.data import ops, pipeline
from lesion_jax.models.fcrn import fcrn
from lesion_jax.pipelines.lesion_index import licu
from lesion_jax.pipelines.lesion_index import ops as lin_ops
from lesion_jax.pipelines.lesion_index import task as lesion_index
from lesion_jax.tasks import runner
from lesion_jax.train import sharding
from lesion_jax.train.state import OptimizerConfig


def _dataset(labels, h=20, w=30):
  n = len(labels)
  rng = np.random.default_rng(0)
  mask = np.zeros((n, h, w, 1), np.float32)
  mask[:, 5:15, 8:20] = 1.0
  return tf.data.Dataset.from_tensor_slices({
      "id": tf.constant([f"ex{i}" for i in range(n)]), "label": tf.constant(labels, tf.int64),
      "image": tf.constant(rng.random((n, h, w, 3), np.float32)), "mask": tf.constant(mask)})


def _run(ds, chain, seed=0):
  return list(ops.apply(ds.enumerate(), chain, stream_seed=seed).as_numpy_iterator())


def test_dr_rotates_each_class_by_its_own_step():
  out = _run(_dataset([0, 1, 2, 0]), [lin_ops.class_rotations("label", (45.0, 18.0, 18.0))])
  ids = [o["id"].decode() for o in out]
  assert [ids.count(f"ex{i}") for i in range(4)] == [8, 20, 20, 8]  # 360/45, 360/18
  first = [o for o in out if o["id"] == b"ex1"]
  assert [o["rotation_index"] for o in first] == list(range(20))
  np.testing.assert_allclose(first[0]["image"], _run(_dataset([0, 1, 2, 0]), [])[1]["image"], atol=1e-6)
  assert all(set(np.unique(o["mask"])) <= {0.0, 1.0} for o in out)  # masks stay binary
  # A 180-degree copy is the image turned upside down and mirrored.
  nevus = [o for o in out if o["id"] == b"ex0"]
  np.testing.assert_allclose(nevus[4]["mask"], nevus[0]["mask"][::-1, ::-1], atol=1e-6)
  # 0 or >= 360 degrees: the example once; a label beyond the table is an error.
  assert len(_run(_dataset([0, 1]), [lin_ops.class_rotations("label", (0.0, 360.0))])) == 2
  with pytest.raises(Exception, match="beyond"):
    _run(_dataset([3]), [lin_ops.class_rotations("label", (45.0, 18.0))])


def test_dm_flips_copies_deterministically_and_dr_plus_dm_has_both():
  chain = [lin_ops.class_rotations("label", (90.0, 90.0, 90.0), flip="random")]
  a, b = _run(_dataset([1, 2]), chain), _run(_dataset([1, 2]), chain)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  plain = _run(_dataset([1, 2]), [lin_ops.class_rotations("label", (90.0, 90.0, 90.0))])
  assert len(a) == len(plain) == 8
  assert any(not np.allclose(x["mask"], y["mask"]) for x, y in zip(a, plain))  # some copies flipped
  both = _run(_dataset([1, 2]), [lin_ops.class_rotations("label", (90.0, 90.0, 90.0), flip="both")])
  assert len(both) == 16
  for x, y in zip(both[:4], plain[:4]):  # the first copies of an example are DR's
    np.testing.assert_array_equal(x["mask"], y["mask"])


def test_center_crop_keeps_the_central_square_and_letterbox_geometry_matches_numpy():
  out = _run(_dataset([0]), [ops.center_crop(("image", "mask"))])[0]
  source = _run(_dataset([0]), [])[0]
  assert out["image"].shape == (20, 20, 3)
  np.testing.assert_array_equal(out["image"], source["image"][:, 5:25])
  for h, w, size in ((20, 30, 32), (30, 20, 48), (17, 17, 32), (480, 640, 64), (3, 400, 32)):
    image = tf.zeros((h, w, 3), tf.uint8) + 200
    boxed = ops.letterbox("image", size)({"image": image}, tf.zeros([2], tf.int64))["image"].numpy()
    top, left, nh, nw = ops.letterbox_window(h, w, size)
    inside = np.zeros((size, size), bool)
    inside[top:top + nh, left:left + nw] = True
    assert boxed.shape == (size, size, 3) and max(nh, nw) == size
    np.testing.assert_allclose(boxed[inside], 200 / 255, atol=1e-3)
    assert np.all(boxed[~inside] == 0)


def test_multiscale_maps_are_summed_at_the_native_resolution():
  h, w = 30, 50
  truth = np.zeros((h, w), bool)
  truth[10:20, 30:45] = True  # a lesion right of centre
  probs = {}
  for size in (32, 64):
    top, left, nh, nw = ops.letterbox_window(h, w, size)
    lesion = np.zeros((size, size))
    lesion[top:top + nh, left:left + nw] = tf.image.resize(truth[..., None].astype(np.float32), (nh, nw)).numpy()[..., 0]
    probs[size] = np.stack([1 - lesion, lesion, np.zeros_like(lesion)], -1)
  maps = lesion_index.native_maps(probs, h, w)
  assert maps.shape == (h, w, 3)
  np.testing.assert_allclose(maps.sum(-1), 2.0, atol=1e-4)  # two scales, each a distribution
  mask = lesion_index.lesion_mask(maps)
  inter, union = (mask & truth).sum(), (mask | truth).sum()
  assert inter / union > 0.85  # aligned where the lesion is, not shifted by the padding


def test_licu_weighs_the_centre_over_the_border_and_normalises_per_pixel():
  mask = np.zeros((9, 9), bool)
  mask[2:7, 2:7] = True
  weights = licu.border_distance_weights(mask)
  assert weights[4, 4] > weights[2, 4] > 0 and weights[0, 0] == 0
  assert weights.sum() == pytest.approx(1.0)
  # The border ring of the lesion says class 1, its inner 3x3 says class 2 (each pixel a
  # distribution): 16 ring pixels outvote 9 without the LICU, but weigh 1 each against the inner
  # ring's 2 and the centre's 3 with it.
  maps = np.zeros((9, 9, 3))
  maps[..., 0] = 1.0
  maps[2:7, 2:7] = (0.0, 1.0, 0.0)
  maps[3:6, 3:6] = (0.0, 0.0, 1.0)
  with_licu, without = licu.lesion_index(maps, mask), licu.mean_index(maps, mask)
  np.testing.assert_allclose(without, [16 / 25, 9 / 25])
  np.testing.assert_allclose(with_licu, [16 / 35, 19 / 35])
  # eq. 1: each pixel's lesion-class scores (summed over nets and scales) divided by their sum,
  # background excluded, so a pixel's weight does not depend on how large its raw sums are.
  maps[4, 4] = (0.3, 0.2, 1.8)
  norm = licu.normalize_class_maps(maps)
  np.testing.assert_allclose(norm.sum(-1), 1.0)
  np.testing.assert_allclose(norm[4, 4], [0.1, 0.9])
  scaled = maps.copy()
  scaled[3:6, 3:6] *= 5.0
  np.testing.assert_allclose(licu.lesion_index(scaled, mask), licu.lesion_index(maps, mask))
  # An empty mask falls back to the whole image with uniform weights.
  np.testing.assert_allclose(licu.border_distance_weights(np.zeros((4, 4), bool)), 1 / 16)


def test_fcrn_variants_give_per_pixel_class_scores_at_any_size():
  model = fcrn("fcrn_small", num_classes=4, width=2)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))  # shapes only: no compile
  for shape in ((2, 32, 32, 3), (1, 33, 45, 3)):
    assert jax.eval_shape(model.apply, variables, jnp.zeros(shape)).shape == shape[:3] + (4,)
  with pytest.raises(ValueError, match="unknown FCRN"):
    fcrn("fcrn7")


@pytest.fixture(scope="module")
def lin_run(tiny_data_dir, tiny_dataset, tmp_path_factory):
  config = lesion_index.LesionIndexConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      test_scales=(32, 48), run=RunConfig(num_steps=20, eval_every=20, log_every=20, val_split=""),
      optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=2))
  workdir = str(tmp_path_factory.mktemp("lin"))
  scores = runner.run(lesion_index.LesionIndexTask(config), workdir, "test")
  return config, workdir, scores


def test_tiny_lin_run_scores_segmentation_and_indices(lin_run):
  config, workdir, scores = lin_run
  assert scores["test/num_images"] == 16
  for key in ("jaccard", "dice", "hd95", "licu_melanoma_auc", "mean_melanoma_auc", "licu_mean_auc"):
    assert key in {k.split("/", 1)[1] for k in scores}, key
  assert os.path.exists(os.path.join(workdir, "figures", "test_melanoma_roc.png"))
  # The LIN: the sum of two members' maps (here the same run twice, so the masks are the same
  # and the indices too: the sum of a map with itself normalises to the map).
  task = runner.load(workdir)
  mesh = sharding.make_mesh()
  state = runner.restore(task, workdir, "latest", mesh)
  predict = task.jit_predict(state, mesh)
  pair = lesion_index.evaluate_members([(task, state, predict), (task, state, predict)], "test", mesh)
  assert pair.scores["jaccard"] == pytest.approx(scores["test/jaccard"])
  assert pair.scores["licu_melanoma_auc"] == pytest.approx(scores["test/licu_melanoma_auc"])


def _photos():
  """uint8 RGB photos of other sizes than the dataset's: a dark disc on skin tones."""
  rng = np.random.default_rng(5)
  photos = []
  for h, w in ((40, 56), (33, 33), (70, 45)):
    yy, xx = np.mgrid[:h, :w]
    image = np.full((h, w, 3), (205, 165, 150), np.uint8)
    image[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2] = (80, 50, 40)
    photos.append(np.clip(image + rng.integers(0, 8, image.shape), 0, 255).astype(np.uint8))
  return photos


def test_one_fcrn_predicts_a_mask_and_lesion_index_per_photo_as_evaluation_scores_it(lin_run):
  from lesion_jax.artifacts import stage  # pylint: disable=g-import-not-at-top
  _, workdir, _ = lin_run
  task = runner.load(workdir)
  mesh = sharding.make_mesh()
  state = runner.restore(task, workdir, "latest", mesh)
  assert task.predicts == {"mask", "probabilities"}
  photos = _photos()
  records = task.predict_images(state, photos)
  assert len(records) == len(photos)
  for photo, record in zip(photos, records):
    assert record["mask"].dtype == bool and record["mask"].shape == photo.shape[:2]
    assert record["probabilities"].shape == (len(task.class_names),)
    assert record["probabilities"].sum() == pytest.approx(1.0) and (record["probabilities"] >= 0).all()
  # On the test split's own images: the index and the mask the evaluation scores, image by image.
  evaluation = task.evaluate(state, "test", mesh)
  row = {image_id: j for j, image_id in enumerate(evaluation.ids)}
  examples = list(stage.read_examples(task.builder, "test", features=("image", "mask")))[:4]
  found = task.predict_images(state, [ex["image"] for ex in examples])
  for ex, record in zip(examples, found):
    j = row[ex["id"]]
    np.testing.assert_allclose(record["probabilities"], evaluation.per_example["licu"][j], atol=1e-5)
    truth = ex["mask"][..., 0] > 0
    union = (record["mask"] | truth).sum()
    ja = (record["mask"] & truth).sum() / union if union else 1.0
    assert ja == pytest.approx(evaluation.per_example["jaccard"][j], abs=1e-6)
