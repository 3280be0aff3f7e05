"""Pipeline 2: SLIC superpixel artifacts, label propagation, refinement, the FCN, and a tiny
FCN run scored with superpixel refinement."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lesion_jax import io
from lesion_jax.artifacts import superpixels as sp_lib
from lesion_jax.artifacts import stage
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.eval import metrics, postprocess, superpixel_refine
from lesion_jax.models.fcn import FCN
from lesion_jax.tasks import runner, segmentation
from lesion_jax.train.state import OptimizerConfig


def _two_tone(size=48):
  """A dark disc on light skin, and its mask."""
  yy, xx = np.mgrid[:size, :size]
  mask = (yy - size / 2) ** 2 + (xx - size / 2.5) ** 2 < (size / 4) ** 2
  image = np.where(mask[..., None], np.uint8([90, 50, 30]), np.uint8([220, 180, 160])).astype(np.uint8)
  return image, mask


# ----------------------------------------------------------------------------------------------
# Superpixels


def test_features_of_a_hand_label_map():
  labels = np.array([[0, 0, 1, 1],
                     [0, 0, 1, 1],
                     [2, 2, 2, 1]], np.int32)
  image = np.zeros((3, 4, 3), np.uint8)
  image[labels == 1] = 255  # white superpixel 1, black 0 and 2
  sp = sp_lib.superpixel_features(image, labels)
  np.testing.assert_array_equal(sp.area, [4, 5, 3])
  np.testing.assert_allclose(sp.centroid[0], [0.5, 0.5])
  np.testing.assert_allclose(sp.centroid[2], [2.0, 1.0])
  np.testing.assert_array_equal(sp.bbox[1], [0, 3, 2, 4])  # half-open (y0, y1, x0, x1)
  np.testing.assert_array_equal(sp.edges, [[0, 1], [0, 2], [1, 2]])
  np.testing.assert_allclose(sp.mean_lab[1], [100.0, 0.0, 0.0], atol=0.6)  # white: L* 100
  np.testing.assert_allclose(sp.mean_lab[0], [0.0, 0.0, 0.0], atol=0.6)
  np.testing.assert_allclose(sp.std_lab, 0.0, atol=1e-4)  # every superpixel is one colour
  np.testing.assert_allclose(sp.mean_of(labels == 1), [0.0, 1.0, 0.0])
  np.testing.assert_array_equal(sp.paint(np.array([5, 6, 7])), labels + 5)


def test_slic_labels_are_consecutive_connected_and_follow_the_lesion():
  image, mask = _two_tone(64)
  config = sp_lib.SuperpixelConfig(num_superpixels=40)
  labels = sp_lib.slic_labels(image, config)
  assert labels.shape == mask.shape and labels.dtype == np.int32
  n = labels.max() + 1
  assert 15 <= n <= 80 and set(np.unique(labels)) == set(range(n))
  import cv2  # pylint: disable=g-import-not-at-top
  for i in range(n):  # connectivity enforced: every label is one region
    assert cv2.connectedComponents((labels == i).astype(np.uint8), connectivity=4)[0] == 2
  assert metrics.boundary_recall(labels, mask, 2.0) > 0.95
  assert metrics.undersegmentation_error(labels, mask) < 0.02
  # Large images are segmented at max_side and scaled back to their own size.
  big = np.kron(image, np.ones((4, 4, 1), np.uint8))
  small = sp_lib.slic_labels(big, dataclasses.replace(config, max_side=64))
  assert small.shape == big.shape[:2] and 15 <= small.max() + 1 <= 80


def test_superpixel_quality_metrics_on_hand_cases():
  truth = np.zeros((8, 8), bool)
  truth[:, :4] = True
  aligned = np.where(np.arange(8)[None, :] < 4, 0, 1) * np.ones((8, 1), int)
  assert metrics.boundary_recall(aligned, truth) == 1.0
  assert metrics.undersegmentation_error(aligned, truth) == 0.0
  one = np.zeros((8, 8), int)  # a single superpixel: no borders, half the pixels leak
  assert metrics.boundary_recall(one, truth) == 0.0
  assert metrics.undersegmentation_error(one, truth) == pytest.approx(2 * 32 / 64)
  shifted = np.where(np.arange(8)[None, :] < 7, 0, 1) * np.ones((8, 1), int)  # border 3 px off
  assert metrics.boundary_recall(shifted, truth, tolerance=2.0) == 0.5  # one side of it within 2 px
  assert metrics.boundary_recall(shifted, truth, tolerance=3.0) == 1.0


@pytest.fixture(scope="module")
def superpixel_store(tiny_data_dir, tiny_dataset, tmp_path_factory):
  builder = pipeline.get_builder(tiny_dataset, tiny_data_dir)
  config = sp_lib.SuperpixelConfig(num_superpixels=30)
  store = sp_lib.superpixel_store(str(tmp_path_factory.mktemp("artifacts")), builder.info.full_name, config)
  first = sp_lib.superpixels_for_split(builder, "test", store, config, batch_size=5)
  return builder, config, store, first


def test_superpixel_stage_round_trips_and_resumes(superpixel_store):
  builder, config, store, first = superpixel_store
  assert first.computed == first.total == 16 and first.failed == 0
  ex = next(stage.read_examples(builder, "test", features=("image",)))
  stored = sp_lib.read_superpixels(store, ex["id"])
  fresh = sp_lib.compute_superpixels(ex["image"], config)
  for name, value in fresh.to_arrays().items():
    np.testing.assert_array_equal(getattr(stored, name), value, err_msg=name)
  assert store.read_record(ex["id"])["count"] == fresh.count
  png = io.read_rgb_image(store.png_path(ex["id"]))  # the label map, ISIC 2017's RGB index encoding
  np.testing.assert_array_equal(sp_lib.decode_index_rgb(png), fresh.labels)
  big = np.array([[0, 255, 256], [65535, 65536, 2 ** 24 - 1]])
  np.testing.assert_array_equal(sp_lib.decode_index_rgb(sp_lib.encode_index_rgb(big)), big)
  # A second run reuses everything; a deleted record is recomputed (resume).
  os.remove(store.record_path(ex["id"]))
  again = sp_lib.superpixels_for_split(builder, "test", store, config)
  assert (again.computed, again.reused) == (1, 15)
  assert io.read_json(os.path.join(store.directory, "test_summary.json"))["computed"] == 1
  with pytest.raises(FileNotFoundError, match="no superpixels"):
    sp_lib.read_superpixels(store, "no_such_id")


# ----------------------------------------------------------------------------------------------
# Propagation and refinement


def test_label_propagation_recovers_two_regions_on_a_graph():
  # Two chains of 6 nodes, strongly connected inside, weakly across one bridge; one seed each.
  colours = np.array([[30.0, 0, 0]] * 6 + [[80.0, 0, 0]] * 6)
  colours += np.random.default_rng(0).normal(0, 1.0, colours.shape)
  edges = np.array([[i, i + 1] for i in range(11)])
  w = superpixel_refine.affinity(colours, edges, sigma=10.0)
  assert w[5, 6] < 0.01 < 0.8 < w[0, 1] and np.allclose(w, w.T)
  seeds = np.full(12, -1)
  seeds[0], seeds[11] = 1, 0
  prob = superpixel_refine.propagate_labels(w, seeds, alpha=0.99)
  np.testing.assert_array_equal(prob > 0.5, np.arange(12) < 6)
  assert prob[0] == 1.0 and prob[11] == 0.0  # seeds keep their labels
  # More background seeds do not pull lesion nodes over (class mass normalisation).
  seeds[8:] = 0
  np.testing.assert_array_equal(superpixel_refine.propagate_labels(w, seeds, 0.99) > 0.5, np.arange(12) < 6)
  with pytest.raises(ValueError, match="both classes"):
    superpixel_refine.propagate_labels(w, np.full(12, -1), 0.99)


def test_refinement_snaps_a_blurred_map_to_the_lesion_border():
  image, mask = _two_tone(64)
  sp = sp_lib.compute_superpixels(image, sp_lib.SuperpixelConfig(num_superpixels=60))
  import cv2  # pylint: disable=g-import-not-at-top
  coarse = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 5.0)  # an FCN-like map, soft border
  coarse = cv2.resize(cv2.resize(coarse, (8, 8), interpolation=cv2.INTER_AREA), (64, 64))
  result = superpixel_refine.refine(coarse, sp, superpixel_refine.RefineConfig())
  assert result.refined and (result.seeds == 1).any() and (result.seeds == 0).any()
  before = metrics.per_image_segmentation_scores((coarse > 0.5)[None], mask[None])["jaccard"][0]
  after = metrics.per_image_segmentation_scores(result.mask[None], mask[None])["jaccard"][0]
  assert after > before and after > 0.9
  assert metrics.boundary_scores(result.mask[None], mask[None])["hd95"][0] < \
      metrics.boundary_scores((coarse > 0.5)[None], mask[None])["hd95"][0]
  # Nothing confident: the global map is kept.
  flat = superpixel_refine.refine(np.full((64, 64), 0.5), sp)
  assert not flat.refined and not flat.mask.any()


def test_otsu_splits_a_bimodal_refined_map():
  rng = np.random.default_rng(1)
  fused = np.concatenate([rng.normal(0.2, 0.05, 500), rng.normal(0.7, 0.05, 300)]).clip(0, 1)
  t = postprocess.otsu_threshold(fused.reshape(20, 40))
  assert 0.35 < t < 0.55
  assert np.sum(fused > t) == pytest.approx(300, abs=3)


# ----------------------------------------------------------------------------------------------
# Boundary metrics


def test_boundary_metrics_hand_cases_and_empty_masks():
  a = np.zeros((20, 30), bool)
  a[5:15, 5:15] = True
  s = metrics.boundary_scores_one(a, a)
  assert s == {"hd95": 0.0, "boundary_f": 1.0}
  b = np.roll(a, 3, axis=1)  # the same square 3 px to the right
  s = metrics.boundary_scores_one(a, b, pixel_size=0.05)
  assert s["hd95"] == pytest.approx(3.0)
  assert s["hd95_mm"] == pytest.approx(0.15)
  # Tolerance = ceil(0.008 * diagonal) = 1 px here: the horizontal edges' pixels 3 px apart do not
  # match, the vertical edges' do partly; shift by 1 px and all match.
  assert metrics.boundary_tolerance(a.shape) == 1
  assert 0.0 < s["boundary_f"] < 1.0
  assert metrics.boundary_scores_one(a, np.roll(a, 1, axis=1))["boundary_f"] == 1.0
  empty = np.zeros_like(a)
  diagonal = np.hypot(20, 30)
  assert metrics.boundary_scores_one(empty, empty) == {"hd95": 0.0, "boundary_f": 1.0}
  assert metrics.boundary_scores_one(a, empty) == {"hd95": pytest.approx(diagonal), "boundary_f": 0.0}
  assert metrics.boundary_scores_one(empty, a)["hd95"] == pytest.approx(diagonal)
  batch = metrics.boundary_scores(np.stack([a, empty]), np.stack([b, empty]))
  np.testing.assert_allclose(batch["hd95"], [3.0, 0.0])


def _brute_hd95(p, t):
  bp, bt = np.argwhere(metrics.mask_boundary(p)), np.argwhere(metrics.mask_boundary(t))
  d = np.linalg.norm(bp[:, None, :] - bt[None, :, :], axis=-1)
  return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def _random_blob(rng, size=40):
  import cv2  # pylint: disable=g-import-not-at-top
  m = np.zeros((size, size), np.uint8)
  for _ in range(3):
    centre = tuple(int(v) for v in rng.integers(8, size - 8, 2))
    axes = tuple(int(v) for v in rng.integers(3, 12, 2))
    cv2.ellipse(m, centre, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
  return m > 0


def test_hd95_matches_brute_force_and_the_surface_distance_package():
  surface_distance = pytest.importorskip("surface_distance")  # in the dev extra: CI has it
  rng = np.random.default_rng(0)
  for _ in range(8):
    p, t = _random_blob(rng), _random_blob(rng)
    ours = metrics.boundary_scores_one(p, t)["hd95"]
    assert ours == pytest.approx(_brute_hd95(p, t))
    # surface-distance measures between pixel-corner contours weighted by length, so it differs
    # from the pixel-centre definition by a fraction of a pixel.
    theirs = surface_distance.compute_robust_hausdorff(
        surface_distance.compute_surface_distances(p, t, (1.0, 1.0)), 95)
    assert abs(ours - theirs) <= 1.0


# ----------------------------------------------------------------------------------------------
# The FCN and a tiny run


def test_fcn_takes_two_input_sizes_with_one_set_of_parameters():
  model = FCN(features=4, levels=3, head_features=8)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  x = jax.random.normal(jax.random.key(1), (2, 48, 40, 3))
  out = model.apply(variables, x)
  assert out.shape == (2, 48, 40, 1) and bool(jnp.isfinite(out).all())
  assert model.apply(variables, x[:, :37, :29]).shape == (2, 37, 29, 1)  # not a multiple of 8


@pytest.fixture(scope="module")
def fcn_run(tiny_data_dir, tiny_dataset, tmp_path_factory):
  config = segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8,
                                 augment=AugmentConfig(rotate=True, flip=True, crop=False, color=0.0)),
      model=segmentation.SegmenterModelConfig(name="fcn", features=4, levels=2, head_features=8),
      optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=5), loss="bce_dice",
      run=RunConfig(num_steps=100, eval_every=100, log_every=100), summary_images=0,
      superpixels=sp_lib.SuperpixelConfig(num_superpixels=30),
      # a 100-step model's lesion probabilities barely pass 0.5: seed thresholds that refine some images
      superpixel_refine=superpixel_refine.RefineConfig(high=0.52, low=0.3))
  workdir = str(tmp_path_factory.mktemp("fcn"))
  scores = runner.run(segmentation.SegmentationTask(config), workdir, "test")
  return config, workdir, scores


def test_tiny_fcn_run_scores_with_and_without_superpixel_refinement(fcn_run):
  config, workdir, scores = fcn_run
  assert 0.0 <= scores["test/jaccard"] <= 1.0 and "test/hd95" in scores and "test/boundary_f" in scores
  task = segmentation.SegmentationTask(dataclasses.replace(config, refine="superpixel"))
  state = runner.restore(task, workdir)
  refined, _ = runner.evaluate(task, state, "test", workdir=workdir, prefix="refined")
  assert refined["refined/num_images"] == scores["test/num_images"] == 16
  assert scores["test/jaccard"] > 0.3  # it learnt something worth refining
  # Images with confident seeds of both classes are refined; the others keep the FCN's mask.
  assert 0 < refined["refined/refined_images"] <= 16
  assert refined["refined/jaccard"] != scores["test/jaccard"]  # the refinement changed the masks
  assert os.path.exists(os.path.join(workdir, "figures", "refined_superpixel_refinement.png"))
