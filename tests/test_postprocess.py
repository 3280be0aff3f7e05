"""Tests for lesion_jax.eval.postprocess."""
import numpy as np
import pytest

from lesion_jax.eval import postprocess as pp


def _ring(size=20, outer=(3, 17), inner=(7, 13)):
  m = np.zeros((size, size), bool)
  m[outer[0]:outer[1], outer[0]:outer[1]] = True
  m[inner[0]:inner[1], inner[0]:inner[1]] = False
  return m


def test_fill_holes_ring():
  ring = _ring()
  filled = pp.fill_holes(ring)
  expected = np.zeros_like(ring)
  expected[3:17, 3:17] = True
  np.testing.assert_array_equal(filled, expected)
  # A notch to the border is not a hole.
  open_ring = ring.copy()
  open_ring[7:13, 13:17] = False
  np.testing.assert_array_equal(pp.fill_holes(open_ring), open_ring)
  # (H, W, 1) uint8 input works too.
  np.testing.assert_array_equal(pp.fill_holes(ring[..., None].astype(np.uint8) * 255), expected)


def test_largest_component_two_blobs():
  m = np.zeros((20, 20), np.uint8)
  m[2:5, 2:5] = 1  # 9 px
  m[10:18, 8:16] = 1  # 64 px
  out = pp.largest_component(m)
  assert out.dtype == bool and out.sum() == 64 and out[10:18, 8:16].all()
  # Diagonal neighbours join (8-connectivity).
  d = np.zeros((6, 6), bool)
  d[1, 1] = d[2, 2] = d[3, 3] = True
  d[5, 0] = True
  assert pp.largest_component(d).sum() == 3
  assert not pp.largest_component(np.zeros((5, 5))).any()


def test_clean_mask():
  m = _ring()
  m[0, 0] = True  # speck
  out = pp.clean_mask(m)
  assert out.sum() == 14 * 14 and not out[0, 0]
  np.testing.assert_array_equal(pp.clean_mask(m, fill=False, keep_largest=False), m)


def test_otsu_bimodal_separates_modes():
  rng = np.random.default_rng(0)
  low = np.clip(rng.normal(0.15, 0.05, 600), 0, 1)
  high = np.clip(rng.normal(0.8, 0.05, 400), 0, 1)
  prob = np.concatenate([low, high]).reshape(25, 40)
  t = pp.otsu_threshold(prob)
  assert low.max() < t < high.min()
  mask = pp.binarize(prob, "otsu")
  assert mask.sum() == 400 and mask.reshape(-1)[600:].all()
  # A clean gap gives a threshold near its middle, not at its lower end.
  gap = np.array([[0.1, 0.1, 0.9, 0.9]])
  assert 0.45 < pp.otsu_threshold(gap) < 0.55
  assert 0.0 <= pp.otsu_threshold(np.full((3, 3), 0.4)) <= 1.0


def test_binarize_fixed_threshold():
  prob = np.array([[0.2, 0.5, 0.51]])
  np.testing.assert_array_equal(pp.binarize(prob), [[False, False, True]])
  np.testing.assert_array_equal(pp.binarize(prob, 0.1), [[True, True, True]])
  with pytest.raises(ValueError):
    pp.binarize(prob, "mean")


def test_resize():
  m = np.zeros((4, 4), bool)
  m[:2, :2] = True
  big = pp.resize_mask(m, 8, 8)
  assert big.dtype == bool and big.shape == (8, 8)
  assert big[:4, :4].all() and big.sum() == 16
  np.testing.assert_array_equal(pp.resize_mask(big, 4, 4), m)
  prob = np.linspace(0, 1, 16, dtype=np.float64).reshape(4, 4, 1)
  r = pp.resize_prob(prob, 6, 10)
  assert r.shape == (6, 10) and r.dtype == np.float32
  assert 0.0 <= r.min() and r.max() <= 1.0


def test_apply_mask_exact():
  rng = np.random.default_rng(1)
  image = rng.integers(1, 256, size=(12, 16, 3), dtype=np.uint8)  # no zero pixels
  mask = rng.random((12, 16, 1)) < 0.5
  out = pp.apply_mask(image, mask)
  m = mask[..., 0]
  assert out.dtype == np.uint8 and out.shape == image.shape
  np.testing.assert_array_equal(out[m], image[m])
  assert not out[~m].any()
  with pytest.raises(ValueError, match="resize"):
    pp.apply_mask(image, np.ones((6, 8)))


def test_mask_bbox():
  m = np.zeros((50, 60), bool)
  m[10:20, 30:50] = True
  assert pp.mask_bbox(m, margin=0.0) == (10, 20, 30, 50)
  assert pp.mask_bbox(m, margin=0.1) == (9, 21, 28, 52)
  assert pp.mask_bbox(m, margin=1.0) == (0, 30, 10, 60)  # clipped
  assert pp.mask_bbox(np.zeros((5, 7)), margin=0.1) == (0, 5, 0, 7)


@pytest.mark.parametrize("square", [True, False])
def test_crop_to_mask(square):
  rng = np.random.default_rng(2)
  image = rng.integers(1, 256, size=(40, 60, 3), dtype=np.uint8)
  mask = np.zeros((40, 60), bool)
  mask[5:15, 40:58] = True
  y0, y1, x0, x1 = pp.mask_bbox(mask, 0.1)
  assert y0 <= 5 and y1 >= 15 and x0 <= 40 and x1 >= 58
  crop = pp.crop_to_mask(image, mask, size=32, square=square)
  assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
  # Without blacking out and with the box at full size, crop pixels are image pixels.
  plain = pp.crop_to_mask(image, mask, size=32, margin=0.0, black_out=False, square=False)
  assert plain.any()
  blacked = pp.crop_to_mask(image, mask, size=16, margin=0.5, black_out=True, square=square)
  assert (blacked == 0).all(axis=-1).any()  # context outside the lesion is black


def test_crop_to_mask_square_identity():
  # A square mask box inside the image with margin 0 and size equal to the box: exact copy.
  image = np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3)
  mask = np.zeros((20, 20), bool)
  mask[4:12, 6:14] = True
  crop = pp.crop_to_mask(image, mask, size=8, margin=0.0, black_out=False)
  np.testing.assert_array_equal(crop, image[4:12, 6:14])


def test_crop_to_mask_empty_mask_uses_whole_image():
  image = np.full((10, 10, 3), 200, np.uint8)
  crop = pp.crop_to_mask(image, np.zeros((10, 10)), size=5)
  assert crop.shape == (5, 5, 3) and (crop == 200).all()


def test_mask_postprocess_is_threshold_then_cleaning_then_fallback():
  prob = np.zeros((12, 12), np.float32)
  prob[2:6, 2:6] = 0.9
  prob[3, 3] = 0.2  # a hole
  prob[8:10, 8:10] = 0.8  # a smaller second component
  mask, replaced = pp.MaskPostprocess()(prob)
  np.testing.assert_array_equal(mask, pp.clean_mask(prob > 0.5))
  assert mask[3, 3] and not mask[8:10, 8:10].any() and not replaced
  raw, _ = pp.MaskPostprocess(threshold=0.85, clean=False)(prob)
  np.testing.assert_array_equal(raw, prob > 0.85)
  # An empty mask (threshold above the map) is replaced by the map cut at half its maximum.
  faint = prob * 0.5
  empty, replaced = pp.MaskPostprocess(fallback=False)(faint)
  assert not empty.any() and not replaced
  fallback, replaced = pp.MaskPostprocess(fallback=True)(faint)
  assert replaced and fallback[2:6, 2:6].all() and not fallback[8:10, 8:10].any()


def test_mask_postprocess_reads_a_run_configs_flat_fields():
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  config = segmentation.SegmenterConfig(threshold=0.4, postprocess=False, fallback=True, fallback_max_fraction=0.8)
  assert pp.MaskPostprocess.of(config) == pp.MaskPostprocess(0.4, clean=False, fallback=True, fallback_max_fraction=0.8)
