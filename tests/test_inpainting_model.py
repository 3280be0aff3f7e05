"""The partial-convolution inpainter: PartialConv against a NumPy loop, the PConvUNet, the loss of
Liu et al. 2018 on hand-computed cases, and its train and predict steps."""
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lesion_jax.models import layers
from lesion_jax.models.inpainting import PConvUNet
from lesion_jax.pipelines.purification import losses, steps
from lesion_jax.train.state import TrainState


def _same_pads(size, k, stride, dilation):
  """lax's 'SAME' padding of one dimension (the odd pixel at the end)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
  return total // 2, total - total // 2


def reference_partial_conv(x, mask, kernel, bias, stride, padding, dilation):
  """NVIDIA's PartialConv2d (return_mask=True) written as a loop over output pixels, NHWC.

  Returns (y, new_mask) with NVIDIA's mask shape: (N, H', W', features) for a multi-channel mask,
  (N, H', W', 1) for a single-channel one."""
  n, h, w, c = x.shape
  kh, kw, _, f = kernel.shape
  multi = mask.shape[-1] == c
  if padding == "SAME":
    pads = (_same_pads(h, kh, stride, dilation), _same_pads(w, kw, stride, dilation))
  else:
    pads = ((padding, padding), (padding, padding))
  spec = ((0, 0),) + pads + ((0, 0),)
  xm = np.pad(x * mask, spec)  # zero padding: invalid
  mp = np.pad(mask, spec)
  oh = (h + sum(pads[0]) - (kh - 1) * dilation - 1) // stride + 1
  ow = (w + sum(pads[1]) - (kw - 1) * dilation - 1) // stride + 1
  y = np.zeros((n, oh, ow, f))
  new_mask = np.zeros((n, oh, ow, f if multi else 1))
  window_size = kh * kw * (c if multi else 1)
  for b in range(n):
    for i in range(oh):
      for j in range(ow):
        rows = i * stride + dilation * np.arange(kh)
        cols = j * stride + dilation * np.arange(kw)
        valid = mp[b][np.ix_(rows, cols)].sum()
        if valid > 0:
          window = xm[b][np.ix_(rows, cols)]
          y[b, i, j] = np.einsum("hwc,hwcf->f", window, kernel) * window_size / valid + bias
          new_mask[b, i, j] = 1.0
  return y, new_mask


def _hole_mask(kind, shape, rng):
  """(N, H, W, 1) masks, 1 = valid."""
  n, h, w, _ = shape
  mask = np.ones((n, h, w, 1))
  if kind == "random_pixels":
    mask = (rng.random((n, h, w, 1)) > 0.4).astype(np.float64)
  elif kind == "block":  # larger than a 3x3 window: some windows see no valid pixel
    mask[:, 2:8, 3:9] = 0.0
  elif kind == "all_invalid":
    mask[:] = 0.0
  elif kind == "border":
    mask[:, :2] = 0.0
    mask[:, :, -3:] = 0.0
  return mask


PCONV_CASES = [
    # (hole kind, kernel, stride, padding, dilation, multi-channel mask, bias)
    ("none", 3, 1, "SAME", 1, False, True),
    ("random_pixels", 3, 1, "SAME", 1, False, True),
    ("random_pixels", 3, 2, "SAME", 1, True, True),
    ("block", 3, 1, 1, 1, False, True),
    ("block", 5, 2, 2, 1, True, True),
    ("block", 3, 1, "SAME", 2, True, False),
    ("all_invalid", 3, 1, "SAME", 1, False, True),
    ("all_invalid", 3, 2, 1, 1, True, True),
    ("border", 3, 2, "SAME", 1, False, True),
    ("border", 5, 1, "SAME", 2, True, True),
    ("random_pixels", 7, 2, 3, 1, False, False),
]


@pytest.mark.parametrize("kind,k,stride,padding,dilation,multi,use_bias", PCONV_CASES)
def test_partial_conv_matches_a_numpy_loop(kind, k, stride, padding, dilation, multi, use_bias):
  rng = np.random.default_rng(zlib.crc32(repr((kind, k, stride, padding, dilation, multi)).encode()))
  shape, features = (2, 11, 12, 3), 4
  x = rng.normal(size=shape)
  mask = _hole_mask(kind, shape, rng)
  if multi:  # channels with holes of their own, on top of the shared ones
    mask = mask * (rng.random(shape) > 0.3)
  kernel = rng.normal(size=(k, k, 3, features)) / k
  bias = rng.normal(size=features) if use_bias else np.zeros(features)
  params = {"kernel": jnp.asarray(kernel, jnp.float32)}
  if use_bias:
    params["bias"] = jnp.asarray(bias, jnp.float32)
  module = layers.PartialConv(features, k, strides=stride, padding=padding, dilation=dilation,
                              use_bias=use_bias)
  y, new_mask = module.apply({"params": params}, jnp.asarray(x, jnp.float32), jnp.asarray(mask, jnp.float32))
  y_ref, mask_ref = reference_partial_conv(x, mask, kernel, bias, stride, padding, dilation)
  assert y.shape == y_ref.shape and new_mask.shape == y.shape[:-1] + (1,)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(jnp.broadcast_to(new_mask, mask_ref.shape), mask_ref)
  if kind == "all_invalid":
    assert not np.any(new_mask) and not np.any(y)
  if kind == "block" and dilation == 1:  # some windows lie wholly inside the hole: 0, even the bias
    dead = np.asarray(new_mask[..., 0]) == 0
    assert dead.any() and np.all(np.asarray(y)[dead] == 0)


def test_partial_conv_has_conv_parameters_and_is_a_conv_on_a_full_mask():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 8, 3)), jnp.float32)
  pconv, conv = layers.PartialConv(5, 3, padding="VALID"), nn.Conv(5, (3, 3), padding="VALID")
  params, conv_params = jax.jit(lambda key: (pconv.init(key, x, jnp.ones((2, 9, 8, 1)))["params"],
                                             conv.init(key, x)["params"]))(jax.random.key(0))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, conv_params)
  np.testing.assert_array_equal(params["kernel"], conv_params["kernel"])  # same initialiser
  params = {**params, "bias": jnp.arange(5.0)}
  y, new_mask = pconv.apply({"params": params}, x, jnp.ones((2, 9, 8, 3)))
  np.testing.assert_allclose(y, conv.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
  assert np.all(new_mask == 1)
  # No gradient reaches the mask; the input gradient vanishes in the holes.
  mask = jnp.ones((2, 9, 8, 1)).at[:, 3:6, 2:5].set(0.0)
  grad_x, grad_mask = jax.jit(jax.grad(lambda a, m: pconv.apply({"params": params}, a, m)[0].sum(),
                                       argnums=(0, 1)))(x, mask)
  assert not np.any(grad_mask)
  assert not np.any(np.asarray(grad_x)[:, 3:6, 2:5]) and np.any(grad_x)
  with pytest.raises(ValueError, match="mask of shape"):
    pconv.apply({"params": params}, x, jnp.ones((2, 9, 8, 2)))


def test_partial_conv_computes_in_its_dtype():
  x, mask = jnp.ones((1, 8, 8, 3)), jnp.ones((1, 8, 8, 1))
  module = layers.PartialConv(4, 3, strides=2, dtype=jnp.bfloat16)
  variables, (y, new_mask) = jax.jit(lambda key: module.init_with_output(key, x, mask)[::-1])(jax.random.key(0))
  assert y.dtype == jnp.bfloat16 and y.shape == (1, 4, 4, 4)
  assert new_mask.dtype == jnp.float32 and new_mask.shape == (1, 4, 4, 1)
  assert variables["params"]["kernel"].dtype == jnp.float32


# ---------------------------------------------------------------------------------------------------
# PConvUNet

SIZE = 32
SMALL = PConvUNet(features=8, levels=3)


def _images(n, seed=0, size=SIZE):
  """Smooth images in [-1, 1] with block holes (1 = valid)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size] / size
  phase = rng.random((n, 1, 1, 3)) * 6
  image = np.sin(3 * xx[None, ..., None] + phase) * np.cos(2 * yy[None, ..., None] + phase)
  mask = np.ones((n, size, size, 1), np.float32)
  for b in range(n):
    top, left = rng.integers(2, size - 12, 2)
    mask[b, top:top + 10, left:left + 8] = 0.0
  mask[:, 1, :] = 0.0  # a thin line too, like a hair
  return jnp.asarray(image, jnp.float32), jnp.asarray(mask)


@pytest.fixture(scope="module")
def small_variables():
  image, mask = _images(2)
  return jax.jit(lambda key: SMALL.init(key, image, mask, train=False))(jax.random.key(0))


def test_pconv_unet_layout_and_shapes(small_variables):
  params, stats = small_variables["params"], small_variables["batch_stats"]
  assert set(params) == {"enc_conv1", "enc_conv2", "enc_conv3", "dec_conv3", "dec_conv2", "dec_conv1",
                         "enc_bn2", "enc_bn3", "dec_bn3", "dec_bn2"}
  assert set(stats) == {"enc_bn2", "enc_bn3", "dec_bn3", "dec_bn2"}
  shapes = {name: p["kernel"].shape for name, p in params.items() if "conv" in name}
  assert shapes == {"enc_conv1": (7, 7, 3, 8), "enc_conv2": (5, 5, 8, 16), "enc_conv3": (5, 5, 16, 32),
                    "dec_conv3": (3, 3, 32 + 16, 16), "dec_conv2": (3, 3, 16 + 8, 8),
                    "dec_conv1": (3, 3, 8 + 3, 3)}
  assert {name for name, p in params.items() if "bias" in p and "conv" in name} == {"enc_conv1", "dec_conv1"}
  # The paper's widths: 64, 128, 256, 512, 512, ... for features=64.
  assert [PConvUNet(features=64, levels=8).width(level) for level in range(1, 9)] == [64, 128, 256] + [512] * 5
  with pytest.raises(ValueError, match="divisible by 8"):
    SMALL.init(jax.random.key(0), jnp.zeros((1, 36, 32, 3)), jnp.ones((1, 36, 32, 1)))
  with pytest.raises(ValueError, match="mask of shape"):
    SMALL.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.ones((1, 32, 32, 2)))


def test_pconv_unet_ignores_hole_contents_and_takes_either_mask_shape(small_variables):
  image, mask = _images(2)
  noise = jax.random.normal(jax.random.key(1), image.shape) * 5
  apply = jax.jit(lambda i, m: SMALL.apply(small_variables, i, m))
  out = apply(image, mask)
  assert out.shape == (2, SIZE, SIZE, 3) and out.dtype == jnp.float32 and np.all(np.isfinite(out))
  np.testing.assert_array_equal(apply(jnp.where(mask > 0, image, noise), mask), out)
  # A 3-channel copy of the mask is the same mask (NVIDIA's multi-channel counts scale by 3).
  np.testing.assert_allclose(apply(image, jnp.broadcast_to(mask, image.shape)), out, rtol=1e-5, atol=1e-5)


def test_freeze_encoder_bn_keeps_encoder_statistics(small_variables):
  image, mask = _images(2)
  frozen = PConvUNet(features=8, levels=3, freeze_encoder_bn=True)
  _, updates = jax.jit(lambda v: frozen.apply(v, image, mask, train=True, mutable=["batch_stats"]))(small_variables)
  old, new = small_variables["batch_stats"], updates["batch_stats"]
  for name in old:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old[name]), jax.tree.leaves(new[name])))
    assert same == name.startswith("enc_"), name


# ---------------------------------------------------------------------------------------------------
# The loss


def _loss(output, target, mask, feature_fn=None, weights=losses.InpaintingLossWeights()):
  # Jitted: one compile beats the eager dispatch of the loss's many small ops.
  loss = jax.jit(lambda *a: losses.loss_per_example(*a, feature_fn=feature_fn, weights=weights))
  terms = loss(*(jnp.asarray(a, jnp.float32) for a in (output, target, mask)))
  return {k: np.asarray(v) for k, v in terms.items()}


def test_valid_and_hole_terms_by_hand():
  output = np.array([[1.0, 2.0], [3.0, -4.0]]).reshape(1, 2, 2, 1)
  mask = np.array([[1.0, 0.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)
  terms = _loss(output, np.zeros_like(output), mask)
  np.testing.assert_allclose(terms["valid"], [(1 + 3 + 4) / 4])
  np.testing.assert_allclose(terms["hole"], [2 / 4])
  for name in ("perceptual", "style_out", "style_comp"):  # no feature_fn: off
    np.testing.assert_array_equal(terms[name], [0.0])
  # Two channels, a 1-channel mask: N = C·H·W = 8.
  terms = _loss(np.concatenate([output, 2 * output], -1), np.zeros((1, 2, 2, 2)), mask)
  np.testing.assert_allclose(terms["valid"], [3 * 8 / 8])
  np.testing.assert_allclose(terms["hole"], [3 * 2 / 8])


def test_tv_term_counts_pairs_inside_the_dilated_hole_only():
  target = np.zeros((1, 4, 4, 1))
  target[..., 3, :] = 5.0  # a jump between columns 2 and 3, outside P: not counted
  output = np.ones((1, 4, 4, 1))
  mask = np.ones((1, 4, 4, 1))
  mask[0, 1, 1] = 0.0  # P = rows 0-2 x columns 0-2
  # I_comp is the target with a 1 at (1, 1): its 2 horizontal and 2 vertical pairs differ by 1.
  np.testing.assert_allclose(_loss(output, target, mask)["tv"], [4 / 16])
  mask = np.ones((1, 4, 4, 1))
  mask[0, 0, 0] = 0.0  # in the corner: one pair each way
  np.testing.assert_allclose(_loss(output, target, mask)["tv"], [2 / 16])
  np.testing.assert_allclose(_loss(output, target, np.ones_like(mask))["tv"], [0.0])  # no hole, no P
  region = np.asarray(losses.hole_region_dilated(jnp.asarray(mask)))[0, ..., 0]
  np.testing.assert_array_equal(region, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_perceptual_and_style_terms_with_identity_features():
  # Two pixels, two channels: Ψ = [[1, 0], [0, 2]] (pixels x channels), K = 1 / (2·1·2).
  output = np.array([[1.0, 0.0], [0.0, 2.0]]).reshape(1, 1, 2, 2)
  target = np.zeros_like(output)
  mask = np.array([1.0, 0.0]).reshape(1, 1, 2, 1)  # the second pixel is the hole
  terms = _loss(output, target, mask, feature_fn=lambda x: [x])
  # ||Ψ(out) - Ψ(gt)||_1 / 4 + ||Ψ(comp) - Ψ(gt)||_1 / 4, comp = [[0, 0], [0, 2]].
  np.testing.assert_allclose(terms["perceptual"], [3 / 4 + 2 / 4])
  # Gram(out) = [[1, 0], [0, 4]] / 4, Gram(comp) = [[0, 0], [0, 4]] / 4; mean over the 2x2 entries.
  np.testing.assert_allclose(terms["style_out"], [(0.25 + 1.0) / 4])
  np.testing.assert_allclose(terms["style_comp"], [1.0 / 4])
  # Layers add up: [x, 2x] gives 1 + 2 times the perceptual and 1 + 4 times the style terms.
  doubled = _loss(output, target, mask, feature_fn=lambda x: [x, 2 * x])
  np.testing.assert_allclose(doubled["perceptual"], 3 * terms["perceptual"], rtol=1e-6)
  np.testing.assert_allclose(doubled["style_out"], 5 * terms["style_out"], rtol=1e-6)
  # The total weighs each term; style weighs style_out and style_comp.
  w = losses.InpaintingLossWeights(valid=2.0, hole=3.0, tv=5.0, perceptual=7.0, style=11.0)
  weighted = _loss(output, target, mask, feature_fn=lambda x: [x], weights=w)
  expected = (2 * terms["valid"] + 3 * terms["hole"] + 5 * terms["tv"] + 7 * terms["perceptual"]
              + 11 * (terms["style_out"] + terms["style_comp"]))
  np.testing.assert_allclose(weighted["total"], expected, rtol=1e-6)
  default = losses.InpaintingLossWeights()
  assert (default.valid, default.hole, default.tv, default.perceptual, default.style) == (1, 6, 0.1, 0.05, 120)


def test_style_term_matches_numpy_gram_on_random_features():
  rng = np.random.default_rng(0)
  output, target = rng.normal(size=(3, 8, 8, 3)), rng.normal(size=(3, 8, 8, 3))
  mask = (rng.random((3, 8, 8, 1)) > 0.3).astype(np.float64)
  pool = lambda x: x.reshape(x.shape[0], 4, 2, 4, 2, 3).mean(axis=(2, 4))
  terms = _loss(output, target, mask, feature_fn=lambda x: [x, pool(x)])

  def gram(f):
    n, h, w, c = f.shape
    flat = f.reshape(n, h * w, c)
    return np.einsum("npc,npd->ncd", flat, flat) / (c * h * w)

  comp = (1 - mask) * output + mask * target
  expected = sum(np.abs(gram(f(output)) - gram(f(target))).mean(axis=(1, 2)) for f in (lambda x: x, pool))
  np.testing.assert_allclose(terms["style_out"], expected, rtol=1e-5)
  expected = sum(np.abs(gram(f(comp)) - gram(f(target))).mean(axis=(1, 2)) for f in (lambda x: x, pool))
  np.testing.assert_allclose(terms["style_comp"], expected, rtol=1e-5)


def test_the_loss_is_zero_when_output_equals_target():
  rng = np.random.default_rng(1)
  image = rng.normal(size=(2, 8, 8, 3))
  mask = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float64)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
  feature_fn = lambda x: [jax.nn.relu(jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                                                   dimension_numbers=("NHWC", "HWIO", "NHWC")))]
  terms = _loss(image, image, mask, feature_fn=feature_fn)
  assert set(terms) == {"valid", "hole", "tv", "perceptual", "style_out", "style_comp", "total"}
  for name in ("valid", "hole", "perceptual", "style_out", "style_comp"):
    assert terms[name].shape == (2,)
    np.testing.assert_allclose(terms[name], 0.0, atol=1e-6, err_msg=name)
  # TV is a smoothness penalty on I_comp (= the target here), not a difference: only the rest is 0.
  np.testing.assert_allclose(terms["total"], 0.1 * terms["tv"], rtol=1e-6)
  flat = np.zeros_like(image)
  np.testing.assert_allclose(_loss(flat, flat, mask, feature_fn=feature_fn)["total"], 0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Train and predict steps


@pytest.fixture(scope="module")
def trained(small_variables):
  """Six jitted train steps of the small PConvUNet on one batch: (state, per-step metrics)."""
  target, mask = _images(2, seed=3)
  state = TrainState.create(apply_fn=SMALL.apply, params=small_variables["params"], tx=optax.adam(3e-3),
                            batch_stats=small_variables["batch_stats"])
  step = jax.jit(steps.make_train_step(losses.InpaintingLossWeights()))
  batch = {"target": target, "mask": mask, "weight": jnp.array([1.0, 0.5])}
  history = []
  for i in range(6):
    state, metrics = step(state, batch, jax.random.key(i))
    history.append(jax.device_get(metrics))
  return state, history


def test_inpainting_train_step_lowers_the_loss(trained):
  _, history = trained
  assert set(history[0]) == {"loss", "total", "valid", "hole", "tv", "perceptual", "style_out",
                             "style_comp", "hole_l1", "hole_psnr"}
  assert history[0]["loss"] == history[0]["total"]
  assert history[0]["perceptual"] == history[0]["style_out"] == 0.0  # no feature_fn
  assert history[-1]["loss"] < 0.8 * history[0]["loss"], [h["loss"] for h in history]
  assert np.isfinite(history[-1]["hole_psnr"]) and history[-1]["hole_l1"] > 0


def test_inpainting_predict_keeps_valid_pixels_exactly(trained):
  state, _ = trained
  image, mask = _images(2, seed=4)
  predict = jax.jit(steps.predict_step)
  out = np.asarray(predict(state, {"image": image, "mask": mask}))
  valid = np.broadcast_to(np.asarray(mask) > 0.5, out.shape)
  assert out.shape == (2, SIZE, SIZE, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[valid], np.asarray(image)[valid])
  assert np.all(np.abs(out[~valid]) <= 1.0)
  scrambled = jnp.where(mask > 0.5, image, 10.0)  # hole contents do not matter
  np.testing.assert_array_equal(predict(state, {"image": scrambled, "mask": mask}), out)
