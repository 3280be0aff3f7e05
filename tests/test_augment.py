"""Augmentations: geometry keeps image and mask aligned; eager and tf.data agree; off is identity."""
import math

import numpy as np
import pytest
import tensorflow as tf

from lesion_jax.data import augment


def _example(size=32, center=(10, 20), radius=6):
  """A uniform grey image with a red disc (the 'lesion') and its mask."""
  yy, xx = np.mgrid[:size, :size]
  disc = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2
  image = np.full((size, size, 3), 0.5, np.float32)
  image[disc] = (1.0, 0.0, 0.0)
  return tf.constant(image), tf.constant(disc[..., None].astype(np.float32))


def _red(image):
  image = np.asarray(image)
  return (image[..., 0] > 0.75) & (image[..., 1] < 0.25)


def _assert_aligned(image, mask, tolerance=0.1):
  red, m = _red(image), np.asarray(mask)[..., 0] > 0.5
  assert m.sum() > 0
  assert (red ^ m).sum() <= tolerance * m.sum(), "mask and image disagree after the transform"


def test_flip_matches_one_of_four_flips_and_stays_aligned():
  image, mask = _example()
  seen = set()
  for s in range(12):
    out_image, out_mask = augment.random_flip(image, mask, tf.constant([s, 1]))
    m = np.asarray(out_mask)[..., 0]
    base = np.asarray(mask)[..., 0]
    options = {"id": base, "lr": base[:, ::-1], "ud": base[::-1], "both": base[::-1, ::-1]}
    match = [k for k, v in options.items() if np.array_equal(v, m)]
    assert match, "flip produced something that is not a flip"
    seen.add(match[0])
    _assert_aligned(out_image, out_mask, 0.0)
  assert len(seen) >= 3  # the seed actually matters


def test_centroid_of_mask_and_of_empty_mask():
  _, mask = _example(center=(10, 20))
  cy, cx = augment.mask_centroid(mask, 32, 32)
  assert abs(float(cy) - 10) < 0.01 and abs(float(cx) - 20) < 0.01
  cy, cx = augment.mask_centroid(tf.zeros((32, 32, 1)), 32, 32)
  assert float(cy) == pytest.approx(15.5) and float(cx) == pytest.approx(15.5)


@pytest.mark.parametrize("degrees", [0.0, 37.0, 90.0, -120.0])
def test_rotation_about_centroid_keeps_lesion_in_place(degrees):
  # An off-centre lesion: rotating about the image centre would move it; about its centroid, not.
  image, mask = _example(center=(10, 20), radius=6)
  angle = tf.constant(degrees * math.pi / 180)
  out_image, out_mask = augment.rotate(image, mask, angle, augment.mask_centroid(mask, 32, 32))
  cy, cx = augment.mask_centroid(out_mask, 32, 32)
  assert abs(float(cy) - 10) < 0.6 and abs(float(cx) - 20) < 0.6
  assert abs(float(tf.reduce_sum(out_mask)) - float(tf.reduce_sum(mask))) <= 0.1 * float(tf.reduce_sum(mask))
  _assert_aligned(out_image, out_mask)
  if degrees == 0.0:
    np.testing.assert_allclose(out_image, image, atol=1e-6)


def test_rotation_moves_an_asymmetric_shape_and_fills_corners_black():
  image = np.full((32, 32, 3), 0.5, np.float32)
  mask = np.zeros((32, 32, 1), np.float32)
  mask[8:24, 14:18] = 1  # a vertical bar
  out_image, out_mask = augment.rotate(tf.constant(image), tf.constant(mask), tf.constant(math.pi / 2),
                                       (tf.constant(15.5), tf.constant(15.5)))
  m = np.asarray(out_mask)[..., 0]
  assert m[14:18, 8:24].mean() > 0.9 and m[8:13, 14:18].mean() < 0.1  # now horizontal
  out = augment.rotate(tf.constant(image), None, tf.constant(math.pi / 4), (15.5, 15.5))[0]
  assert np.asarray(out)[0, 0].max() == 0.0  # uncovered corner is black


def test_crop_resize_keeps_shape_binary_mask_and_alignment():
  image, mask = _example(center=(16, 16), radius=8)
  out_image, out_mask = augment.random_crop_resize(image, mask, tf.constant([3, 4]), min_scale=0.6)
  assert out_image.shape == image.shape and out_mask.shape == mask.shape
  assert set(np.unique(out_mask)) <= {0.0, 1.0}
  _assert_aligned(out_image, out_mask, 0.15)
  same_image, same_mask = augment.random_crop_resize(image, mask, tf.constant([3, 4]), min_scale=1.0)
  np.testing.assert_allclose(same_image, image, atol=1e-5)
  np.testing.assert_array_equal(same_mask, mask)


def test_color_jitter_stays_in_range_and_changes_image():
  image, _ = _example()
  out = augment.random_color(image, tf.constant([1, 2]), strength=1.0)
  assert float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 1
  assert not np.allclose(out, image)


def test_off_is_identity_and_on_changes_examples():
  image, mask = _example()
  out_image, out_mask = augment.augment(image, mask, tf.constant([0, 7]), augment.AugmentConfig.off())
  np.testing.assert_array_equal(out_image, image)
  np.testing.assert_array_equal(out_mask, mask)
  changed = [not np.array_equal(augment.augment(image, mask, tf.constant([0, s]), augment.AugmentConfig())[1], mask)
             for s in range(5)]
  assert any(changed)


def test_same_results_eagerly_and_inside_tf_data():
  image, mask = _example()
  config = augment.AugmentConfig(color=0.5)
  seeds = tf.constant([[0, i] for i in range(6)], tf.int64)
  eager = [augment.augment(image, mask, s, config) for s in seeds]
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: augment.augment(image, mask, s, config), num_parallel_calls=2, deterministic=True)
  for (e_image, e_mask), (g_image, g_mask) in zip(eager, ds.as_numpy_iterator()):
    np.testing.assert_allclose(g_image, e_image, atol=1e-5)
    np.testing.assert_array_equal(g_mask, e_mask)
    _assert_aligned(g_image, g_mask, 0.25)


def test_classification_images_without_mask():
  image, _ = _example()
  out, none = augment.augment(image, None, tf.constant([1, 1]), augment.AugmentConfig(color=0.2))
  assert none is None and out.shape == image.shape
