"""ABCD measurements on shapes whose answers are known."""
import math

import cv2
import numpy as np
import pytest

from lesion_jax.eval import measure


def disc(size=201, radius=50, centre=(100, 100)):
  yy, xx = np.mgrid[:size, :size]
  return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_disc_is_symmetric_compact_with_known_sizes():
  m = measure.measure_lesion(disc())
  assert m["area"] == pytest.approx(math.pi * 50 ** 2, rel=0.01)
  assert m["diameter"] == pytest.approx(100, abs=2)
  assert m["major_axis"] == pytest.approx(100, rel=0.02) and m["minor_axis"] == pytest.approx(100, rel=0.02)
  assert m["perimeter"] == pytest.approx(2 * math.pi * 50, rel=0.08)  # pixel contours overshoot a little
  assert m["asymmetry_major"] < 0.03 and m["asymmetry_minor"] < 0.03
  assert m["compactness"] < 1.2 and m["solidity"] > 0.98


def test_ellipse_axes_and_mm_scale():
  mask = np.zeros((200, 300), np.uint8)
  cv2.ellipse(mask, (150, 100), (80, 30), 30, 0, 360, 1, -1)
  m = measure.measure_lesion(mask, mm_per_pixel=0.5)
  assert m["unit"] == "mm"
  assert m["major_axis"] == pytest.approx(160 * 0.5, rel=0.03)
  assert m["minor_axis"] == pytest.approx(60 * 0.5, rel=0.05)
  assert m["diameter"] == pytest.approx(160 * 0.5, rel=0.03)
  assert m["asymmetry_major"] < 0.05 and m["asymmetry_minor"] < 0.05  # an ellipse is symmetric


def test_asymmetric_and_irregular_shapes_score_higher():
  blob = disc().astype(np.uint8)
  cv2.circle(blob, (150, 100), 25, 1, -1)  # a bump on one side
  star = np.zeros((201, 201), np.uint8)
  angles = np.linspace(0, 2 * np.pi, 17)[:-1]
  radii = np.where(np.arange(16) % 2 == 0, 90, 40)
  pts = np.stack([100 + radii * np.cos(angles), 100 + radii * np.sin(angles)], 1).astype(np.int32)
  cv2.fillPoly(star, [pts], 1)
  regular = measure.measure_lesion(disc())
  bumpy = measure.measure_lesion(blob)
  spiky = measure.measure_lesion(star)
  assert max(bumpy["asymmetry_major"], bumpy["asymmetry_minor"]) > 0.1
  assert spiky["compactness"] > 1.5 * regular["compactness"]
  assert spiky["solidity"] < 0.8


def test_colours_found_where_painted():
  image = np.full((100, 100, 3), (225, 180, 160), np.uint8)  # skin
  mask = np.zeros((100, 100), bool)
  mask[20:80, 20:80] = True
  image[20:80, 20:50] = (102, 58, 38)  # dark brown half
  image[20:80, 50:80] = (40, 30, 32)  # black half
  m = measure.measure_lesion(mask, image)
  assert set(m["colours"]) == {"dark_brown", "black"} and m["num_colours"] == 2
  image[20:80, 50:80] = (102, 58, 38)
  one = measure.measure_lesion(mask, image)
  assert one["colours"] == ["dark_brown"] and one["colour_spread"] < m["colour_spread"]


def test_empty_mask_gives_zeros():
  m = measure.measure_lesion(np.zeros((10, 10), bool), np.zeros((10, 10, 3), np.uint8))
  assert m["area"] == 0 and m["diameter"] == 0 and m["num_colours"] == 0
