"""Reference tests of the static-shape detection ops (lesion_jax.detection: boxes, nms, roi_align)
against plain NumPy loops written here: IoU, box deltas, anchors, mask boxes, greedy NMS (exact
indices), RoIAlign with torchvision's CPU-kernel rules and its gradient, FPN levels. Boxes are pixel
[y1, x1, y2, x2]. The ops are jitted once per module and shape (thresholds are traced)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lesion_jax.detection import boxes as boxes_lib
from lesion_jax.detection import nms as nms_lib
from lesion_jax.detection import roi_align as roi_lib

_box_iou = jax.jit(boxes_lib.box_iou)
_nms = jax.jit(nms_lib.nms, static_argnames="max_output")
_roi_align = jax.jit(roi_lib.roi_align, static_argnames=("output_size", "spatial_scale", "sampling_ratio",
                                                         "aligned"))


def _random_boxes(rng, n, low=0.0, high=40.0, max_size=15.0):
  y, x = rng.uniform(low, high, (2, n))
  h, w = rng.uniform(0.0, max_size, (2, n))
  return np.stack([y, x, y + h, x + w], axis=-1).astype(np.float32)


def _iou_ref(a, b):
  """IoU of two boxes, plainly, in float64; 0 when the union is 0."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  area = lambda t: max(t[2] - t[0], 0.0) * max(t[3] - t[1], 0.0)
  inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
  union = area(a) + area(b) - inter
  return inter / union if union > 0 else 0.0


# --- boxes ---------------------------------------------------------------------------------------

def test_box_area_and_iou_match_a_double_loop():
  rng = np.random.default_rng(0)
  a, b = _random_boxes(rng, 13), _random_boxes(rng, 9)
  # Degenerate boxes: zero height, zero width, a point, inverted, and two equal zero-area boxes.
  a[0] = [5, 5, 5, 12]
  a[1] = [3, 4, 9, 4]
  a[2] = [7, 7, 7, 7]
  a[3] = [10, 10, 2, 2]
  b[0] = [7, 7, 7, 7]
  b[1] = a[4]
  np.testing.assert_allclose(boxes_lib.box_area(a), [max(t[2] - t[0], 0) * max(t[3] - t[1], 0) for t in a],
                             rtol=1e-6)
  expected = np.array([[_iou_ref(s, t) for t in b] for s in a])
  got = np.asarray(_box_iou(a, b))
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  assert got[2, 0] == 0.0 and got[4, 1] == pytest.approx(1.0)
  # Leading axes broadcast (a batch of two images).
  batched = np.asarray(_box_iou(np.stack([a, a[::-1]]), np.stack([b, b])))
  np.testing.assert_allclose(batched[1], expected[::-1], rtol=1e-5, atol=1e-7)


def test_encode_decode_round_trip_and_clipping():
  rng = np.random.default_rng(1)
  boxes, anchors = _random_boxes(rng, 50, max_size=40.0) + [0, 0, 1, 1], _random_boxes(rng, 50) + [0, 0, 2, 2]
  weights = (10.0, 10.0, 5.0, 5.0)
  deltas = np.asarray(boxes_lib.encode_boxes(boxes, anchors, weights))
  # The parameterisation, directly, on one pair.
  (y1, x1, y2, x2), (ay1, ax1, ay2, ax2) = boxes[0].astype(np.float64), anchors[0].astype(np.float64)
  ha, wa = ay2 - ay1, ax2 - ax1
  np.testing.assert_allclose(deltas[0], [10 * ((y1 + y2) / 2 - (ay1 + ay2) / 2) / ha,
                                         10 * ((x1 + x2) / 2 - (ax1 + ax2) / 2) / wa,
                                         5 * math.log((y2 - y1) / ha), 5 * math.log((x2 - x1) / wa)], rtol=1e-5)
  np.testing.assert_allclose(boxes_lib.decode_boxes(deltas, anchors, weights), boxes, rtol=1e-5, atol=1e-4)
  # Zero-size boxes encode to finite deltas.
  assert np.isfinite(np.asarray(boxes_lib.encode_boxes(np.array([[3.0, 3.0, 3.0, 3.0]]), anchors[:1]))).all()
  # dh, dw are clipped (after the weights) at clip_log from above only.
  anchor = np.array([[0.0, 0.0, 16.0, 8.0]], np.float32)
  huge = np.array([[0.0, 0.0, 5.0 * 50, -5.0 * 5]], np.float32)
  out = np.asarray(boxes_lib.decode_boxes(huge, anchor, weights))[0]
  np.testing.assert_allclose(out[2] - out[0], 1000.0, rtol=1e-5)  # 16 * 1000 / 16
  np.testing.assert_allclose(out[3] - out[1], 8 * math.exp(-5), rtol=1e-4)
  out = np.asarray(boxes_lib.decode_boxes(huge, anchor, weights, clip_log=1.0))[0]
  np.testing.assert_allclose(out[2] - out[0], 16 * math.e, rtol=1e-5)
  np.testing.assert_allclose(out[:2] + out[2:], [16.0, 8.0], atol=1e-4)  # centre unchanged


def test_clip_boxes():
  boxes = np.array([[-3.0, -1.0, 50.0, 7.0], [2.0, 3.0, 4.0, 90.0]], np.float32)
  np.testing.assert_array_equal(boxes_lib.clip_boxes(boxes, 40, 60), [[0, 0, 40, 7], [2, 3, 4, 60]])
  np.testing.assert_array_equal(jax.jit(boxes_lib.clip_boxes)(boxes, 40.0, 60.0), [[0, 0, 40, 7], [2, 3, 4, 60]])


def test_generate_anchors_counts_centres_shapes_and_order():
  strides, sizes, ratios = (8, 16, 32), (32.0, 64.0, 128.0), (0.5, 1.0, 2.0)
  levels = boxes_lib.generate_anchors((64, 100), strides, sizes, ratios)
  grids = [(8, 13), (4, 7), (2, 4)]  # ceil(64 / s) x ceil(100 / s)
  assert [a.shape for a in levels] == [(h * w * 3, 4) for h, w in grids]
  assert all(a.dtype == np.float32 for a in levels)
  for a, (h, w), stride, size in zip(levels, grids, strides, sizes):
    grid = a.reshape(h, w, 3, 4)
    centre = (grid[..., :2] + grid[..., 2:]) / 2
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(centre[..., 0], np.broadcast_to(((i + 0.5) * stride)[..., None], (h, w, 3)))
    np.testing.assert_allclose(centre[..., 1], np.broadcast_to(((j + 0.5) * stride)[..., None], (h, w, 3)))
    ah, aw = grid[..., 2] - grid[..., 0], grid[..., 3] - grid[..., 1]
    np.testing.assert_allclose(ah * aw, size ** 2, rtol=1e-5)
    np.testing.assert_allclose(ah / aw, np.broadcast_to(ratios, (h, w, 3)), rtol=1e-5)
  # Hand case: row-major cells, ratios innermost; cell (0, 1) of stride 8 is centred at (4, 12).
  s = math.sqrt(2.0)
  np.testing.assert_allclose(levels[0][:6], [
      [4 - 8 * s, 4 - 16 * s, 4 + 8 * s, 4 + 16 * s],    # r = 0.5: h = 32 / sqrt 2, w = 32 sqrt 2
      [-12, -12, 20, 20],                                # r = 1
      [4 - 16 * s, 4 - 8 * s, 4 + 16 * s, 4 + 8 * s],    # r = 2
      [4 - 8 * s, 12 - 16 * s, 4 + 8 * s, 12 + 16 * s],  # cell (0, 1)
      [-12, -4, 20, 28],
      [4 - 16 * s, 12 - 8 * s, 4 + 16 * s, 12 + 8 * s]], rtol=1e-5)
  assert len(boxes_lib.generate_anchors(40, [16], [32.0], [1.0])[0]) == 9  # int size: square, ceil(2.5) = 3
  with pytest.raises(ValueError, match="one anchor size per level"):
    boxes_lib.generate_anchors(64, [8, 16], [32.0], [1.0])


def test_masks_to_boxes_on_hand_masks():
  masks = np.zeros((5, 6, 7), np.uint8)
  masks[0, 2, 3] = 1                  # one pixel
  masks[1, 1:4, 0:5] = 255            # rows 1..3, cols 0..4
  masks[2] = 1                        # everything
  masks[3, 0, 6] = masks[3, 5, 0] = 1  # two far corners
  # masks[4] is empty
  expected = [[2, 3, 3, 4], [1, 0, 4, 5], [0, 0, 6, 7], [0, 0, 6, 7], [0, 0, 0, 0]]
  got = jax.jit(boxes_lib.masks_to_boxes)(masks)
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(jax.vmap(boxes_lib.masks_to_boxes)(masks.astype(bool)[:, None])[:, 0], expected)


# --- NMS -----------------------------------------------------------------------------------------

def _greedy_nms_ref(boxes, scores, iou_threshold, score_threshold=-np.inf):
  """Plain greedy NMS: stable sort by descending score, keep the best remaining, suppress the
  remaining boxes with IoU > threshold, repeat."""
  order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i]) and scores[i] > score_threshold]
  keep, suppressed = [], set()
  for i in order:
    if i in suppressed:
      continue
    keep.append(int(i))
    suppressed.update(j for j in order if j != i and _iou_ref(boxes[i], boxes[j]) > iou_threshold)
  return keep


def _clustered(rng, n=64, clusters=6):
  """Boxes jittered around a few cluster boxes, so that IoUs spread over (0, 1)."""
  centre = rng.uniform(10, 90, (clusters, 2))[rng.integers(0, clusters, n)] + rng.normal(0, 2, (n, 2))
  size = rng.uniform(8, 20, (clusters, 2))[rng.integers(0, clusters, n)] * rng.uniform(0.8, 1.25, (n, 2))
  return np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)


def _check_nms(boxes, scores, iou_threshold, max_output, score_threshold=-np.inf):
  indices, valid = _nms(boxes, scores, iou_threshold, max_output=max_output, score_threshold=score_threshold)
  indices, valid = np.asarray(indices), np.asarray(valid)
  expected = _greedy_nms_ref(boxes, scores, iou_threshold, score_threshold)[:max_output]
  assert indices.dtype == np.int32 and indices.shape == valid.shape == (max_output,)
  np.testing.assert_array_equal(valid, np.arange(max_output) < len(expected))
  np.testing.assert_array_equal(indices[:len(expected)], expected)
  np.testing.assert_array_equal(indices[len(expected):], 0)
  return expected


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_is_plain_greedy_nms(iou_threshold):
  for seed in range(4):
    rng = np.random.default_rng(seed)
    boxes, scores = _clustered(rng), rng.random(64).astype(np.float32)
    kept = _check_nms(boxes, scores, iou_threshold, 64)
    assert 4 < len(kept) < 60  # both suppression and survivors
    _check_nms(boxes, scores, iou_threshold, 5)  # fewer slots than boxes kept: the best 5
    # Many ties (scores on a 0.1 grid): the lower index wins, as after a stable sort.
    _check_nms(boxes, np.round(scores, 1), iou_threshold, 64)


def test_nms_score_threshold_and_non_finite_scores():
  rng = np.random.default_rng(7)
  boxes, scores = _clustered(rng), rng.random(64).astype(np.float32)
  scores[[3, 10, 20]] = [np.nan, np.inf, -np.inf]
  kept = _check_nms(boxes, scores, 0.5, 64, score_threshold=0.4)
  assert kept and min(scores[kept]) > 0.4
  _check_nms(boxes, scores, 0.5, 64)
  none_kept = _check_nms(boxes, scores, 0.5, 5, score_threshold=2.0)
  assert none_kept == []


def test_nms_hand_case_ties_strictness_and_zero_area():
  boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 5], [30, 30, 30, 30]], np.float32)
  scores = np.array([0.9, 0.9, 0.8, 0.95], np.float32)
  # Box 1 ties box 0 and loses; box 2 has IoU exactly 0.5 with box 0: kept at 0.5 (suppression is
  # IoU > threshold), suppressed at 0.49; the zero-area box 3 is kept and suppresses nothing.
  for threshold, expected in [(0.5, [3, 0, 2]), (0.49, [3, 0])]:
    indices, valid = _nms(boxes, scores, threshold, max_output=4)
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(valid)], expected)
    assert _greedy_nms_ref(boxes, scores, threshold) == expected
  # Batched by vmap, thresholds per image.
  indices, valid = jax.vmap(lambda b, s, t: nms_lib.nms(b, s, t, 4))(
      np.stack([boxes, boxes]), np.stack([scores, scores[::-1]]), np.array([0.5, 0.49]))
  np.testing.assert_array_equal(indices, [[3, 0, 2, 0], [0, 3, 0, 0]])
  np.testing.assert_array_equal(valid, [[True, True, True, False], [True, True, False, False]])


# --- RoIAlign ------------------------------------------------------------------------------------

def _roi_align_ref(features, boxes, output_size, spatial_scale, sampling_ratio, aligned):
  """torchvision's CPU roi_align kernel as a plain loop (coordinates in float32 as there, sums in
  float64), on (H, W, C) features and [y1, x1, y2, x2] boxes. Returns (output (R, oh, ow, C), the
  linear map's weights (R, oh, ow, H, W))."""
  f32 = np.float32
  height, width, _ = features.shape
  oh, ow = output_size
  s = sampling_ratio
  out = np.zeros((len(boxes), oh, ow, features.shape[2]))
  weights = np.zeros((len(boxes), oh, ow, height, width))
  offset = f32(0.5 if aligned else 0.0)
  for r, box in enumerate(boxes):
    y1, x1, y2, x2 = [f32(v) * f32(spatial_scale) - offset for v in box]
    roi_h, roi_w = y2 - y1, x2 - x1
    if not aligned:
      roi_h, roi_w = max(roi_h, f32(1)), max(roi_w, f32(1))
    bin_h, bin_w = roi_h / f32(oh), roi_w / f32(ow)
    for p in range(oh):
      for q in range(ow):
        for iy in range(s):
          for ix in range(s):
            y = y1 + f32(p) * bin_h + (f32(iy) + f32(0.5)) * bin_h / f32(s)
            x = x1 + f32(q) * bin_w + (f32(ix) + f32(0.5)) * bin_w / f32(s)
            if y < -1.0 or y > height or x < -1.0 or x > width:
              continue
            y, x = max(y, f32(0)), max(x, f32(0))
            y_low, x_low = int(y), int(x)
            if y_low >= height - 1:
              y_low = y_high = height - 1
              y = f32(y_low)
            else:
              y_high = y_low + 1
            if x_low >= width - 1:
              x_low = x_high = width - 1
              x = f32(x_low)
            else:
              x_high = x_low + 1
            ly, lx = float(y) - y_low, float(x) - x_low
            hy, hx = 1.0 - ly, 1.0 - lx
            for yy, xx, w in ((y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx),
                              (y_high, x_high, ly * lx)):
              out[r, p, q] += w * features[yy, xx] / (s * s)
              weights[r, p, q, yy, xx] += w / (s * s)
  return out, weights


def _roi_case(seed, height=9, width=11, channels=3, scale=0.25):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(height, width, channels)).astype(np.float32)
  ih, iw = height / scale, width / scale
  y = rng.uniform(-0.3 * ih, 1.1 * ih, 10)
  x = rng.uniform(-0.3 * iw, 1.1 * iw, 10)
  h, w = rng.uniform(0, 0.6 * ih, 10), rng.uniform(0, 0.6 * iw, 10)
  boxes = np.stack([y, x, y + h, x + w], axis=-1)
  boxes[0] = [-0.2 * ih, -0.2 * iw, 1.2 * ih, 1.2 * iw]  # covers the map and beyond
  boxes[1] = [ih - 2, iw - 3, ih + 30, iw + 30]    # mostly outside, bottom right
  boxes[2] = [5.0, 7.0, 5.3, 7.2]                  # tiny
  boxes[3] = [12.0, 12.0, 12.0, 12.0]              # zero size
  boxes[4] = [-9.0, 3.0, -5.0, 9.0]                # above the map
  return features, boxes.astype(np.float32)


ROI_CASES = [  # (output_size, spatial_scale, sampling_ratio, aligned)
    ((3, 5), 0.25, 2, True),
    ((3, 5), 0.25, 2, False),
    ((4, 4), 1.0, 1, True),
    ((2, 3), 0.5, 3, False),
]


@pytest.mark.parametrize("output_size,scale,sampling_ratio,aligned", ROI_CASES)
def test_roi_align_matches_torchvision_kernel_semantics(output_size, scale, sampling_ratio, aligned):
  features, boxes = _roi_case(len(output_size) + sampling_ratio, scale=scale)
  expected, weights = _roi_align_ref(features, boxes, output_size, scale, sampling_ratio, aligned)
  kwargs = dict(output_size=output_size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
  got = _roi_align(features, boxes, **kwargs)
  assert got.shape == expected.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, atol=1e-5)
  assert np.abs(expected[4]).max() == 0 and np.abs(expected[0]).max() > 0  # above the map: nothing
  # The op is linear in the features: its VJP of any cotangent is the reference weights' transpose.
  cotangent = np.random.default_rng(0).normal(size=expected.shape).astype(np.float32)
  _, vjp = jax.vjp(lambda f: roi_lib.roi_align(f, boxes, **kwargs), features)
  np.testing.assert_allclose(vjp(cotangent)[0], np.einsum("rpqhw,rpqc->hwc", weights, cotangent), atol=1e-5)


def test_roi_align_under_vmap_and_rejects_adaptive_sampling():
  (f0, b0), (f1, b1) = _roi_case(0), _roi_case(1)
  kwargs = dict(output_size=(3, 5), spatial_scale=0.25, sampling_ratio=2, aligned=True)
  batched = jax.vmap(lambda f, b: roi_lib.roi_align(f, b, **kwargs))(np.stack([f0, f1]), np.stack([b0, b1]))
  np.testing.assert_allclose(batched[1], _roi_align(f1, b1, **kwargs), atol=1e-6)
  # Gradients under vmap too (the batched custom VJP), against the unbatched one.
  loss = lambda f: jax.vmap(lambda f, b: roi_lib.roi_align(f, b, **kwargs).sum())(f, np.stack([b0, b1])).sum()
  grads = jax.grad(loss)(np.stack([f0, f1]))
  np.testing.assert_allclose(grads[1], jax.grad(lambda f: roi_lib.roi_align(f, b1, **kwargs).sum())(f1), atol=1e-6)
  with pytest.raises(ValueError, match="sampling_ratio"):
    roi_lib.roi_align(f0, b0, (3, 5), 0.25, sampling_ratio=0)


def test_fpn_levels_on_hand_boxes():
  sides = [224, 112, 111, 448, 100, 56, 50, 1000, 0]
  boxes = np.array([[10, 20, 10 + s, 20 + s] for s in sides], np.float32)
  np.testing.assert_array_equal(roi_lib.fpn_levels(boxes, 2, 5), [4, 3, 2, 5, 2, 2, 2, 5, 2])
  np.testing.assert_array_equal(roi_lib.fpn_levels(boxes, 2, 5, canonical_size=56.0, canonical_level=3),
                                [5, 4, 3, 5, 3, 3, 2, 5, 2])
  assert roi_lib.fpn_levels(boxes.reshape(3, 3, 4), 2, 5).shape == (3, 3)


def test_multilevel_roi_align_pools_each_box_from_its_level():
  rng = np.random.default_rng(3)
  features = [rng.normal(size=(16 >> i, 16 >> i, 3)).astype(np.float32) for i in range(3)]  # levels 2..4, 64 px
  boxes = _random_boxes(rng, 12, low=-4.0, high=50.0, max_size=40.0)
  levels = np.array(roi_lib.fpn_levels(boxes, 2, 4, canonical_size=8.0, canonical_level=3))
  assert len(set(levels.tolist())) == 3
  levels[-1] = 6  # a level that is not there pools nothing
  got = np.asarray(jax.jit(roi_lib.multilevel_roi_align, static_argnums=(3, 4))(
      features, boxes, levels, 2, (3, 3)))
  for r, level in enumerate(levels[:-1]):
    expected = _roi_align(features[level - 2], boxes, output_size=(3, 3), spatial_scale=2.0 ** -level,
                          sampling_ratio=2, aligned=True)[r]
    np.testing.assert_allclose(got[r], expected, atol=1e-6)
  assert np.abs(got[-1]).max() == 0
