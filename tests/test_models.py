"""The Flax modules: shapes, the U-Net's faster layers against their textbook forms, classifiers."""
import dataclasses
import functools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lesion_jax.models import layers
from lesion_jax.models.classifiers import CLASSIFIERS, build_classifier
from lesion_jax.models.unet import UNet


def test_max_pool_2x_matches_reduce_window_pool_and_its_gradient():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 6, 3)), jnp.float32)  # no ties
  reference = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool_2x(x), reference(x))
  weights = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3, 3)), jnp.float32)
  grad = jax.grad(lambda y: jnp.sum(layers.max_pool_2x(y) * weights))(x)
  grad_reference = jax.grad(lambda y: jnp.sum(reference(y) * weights))(x)
  np.testing.assert_allclose(grad, grad_reference, rtol=0, atol=1e-6)
  # Exactly one input per 2x2 window receives the window's gradient.
  assert int(jnp.sum(grad != 0)) == 2 * 4 * 3 * 3


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 9, 7, 3), (1, 5, 6, 2)])
@pytest.mark.parametrize("padding", ["SAME", ((1, 1), (1, 1))])
def test_max_pool_3x3_2x_matches_nn_max_pool_and_its_gradient(shape, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)  # no ties
  reference = lambda y: nn.max_pool(y, (3, 3), (2, 2), padding=padding)
  np.testing.assert_array_equal(layers.max_pool_3x3_2x(x, padding), reference(x))
  weights = jnp.asarray(rng.normal(size=reference(x).shape), jnp.float32)
  grad = jax.grad(lambda y: jnp.sum(layers.max_pool_3x3_2x(y, padding) * weights))(x)
  np.testing.assert_allclose(grad, jax.grad(lambda y: jnp.sum(reference(y) * weights))(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape, strides, padding, features", [
    ((2, 8, 8, 5), (1, 1), "SAME", 7), ((2, 9, 7, 5), (2, 2), "SAME", 4), ((1, 6, 6, 3), (2, 2), ((0, 0), (0, 0)), 6),
    ((2, 6, 6, 4), (1, 1), "VALID", 3)])
def test_pointwise_conv_is_nn_conv_and_its_gradients(shape, strides, padding, features):
  # nn.Conv with layers.conv_general_dilated: the same parameters, outputs and gradients as lax's.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ours = nn.Conv(features, (1, 1), strides, padding=padding, conv_general_dilated=layers.conv_general_dilated)
  plain = nn.Conv(features, (1, 1), strides, padding=padding)
  variables = plain.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
  assert "conv_general_dilated" not in str(jax.make_jaxpr(ours.apply)(variables, x))  # the matmul path ran
  out = plain.apply(variables, x)
  np.testing.assert_allclose(ours.apply(variables, x), out, rtol=1e-5, atol=1e-5)
  weights = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
  loss = lambda module: lambda v, y: jnp.sum(module.apply(v, y) * weights)
  for got, want in zip(jax.grad(loss(ours), argnums=(0, 1))(variables, x),
                       jax.grad(loss(plain), argnums=(0, 1))(variables, x)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got, want)


def test_conv_general_dilated_leaves_other_convolutions_to_lax():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 6, 2)), jnp.float32)
  for kernel, kwargs in (((3, 3), {}), ((1, 1), {"padding": ((1, 1), (1, 1))}), ((1, 1), {"kernel_dilation": 2}),
                         ((1, 1), {"feature_group_count": 2}), ((1, 1), {"precision": jax.lax.Precision.HIGHEST})):
    kwargs = {"padding": "SAME", **kwargs}
    variables = nn.Conv(4, kernel, **kwargs).init(jax.random.key(0), x)
    ours = nn.Conv(4, kernel, conv_general_dilated=layers.conv_general_dilated, **kwargs)
    assert "conv_general_dilated" in str(jax.make_jaxpr(ours.apply)(variables, x))
    np.testing.assert_allclose(
        nn.Conv(4, kernel, conv_general_dilated=layers.conv_general_dilated, **kwargs).apply(variables, x),
        nn.Conv(4, kernel, **kwargs).apply(variables, x), rtol=1e-6, atol=1e-6)


def test_max_pool_2x_rejects_odd_sizes():
  with pytest.raises(ValueError, match="even height and width"):
    layers.max_pool_2x(jnp.zeros((1, 5, 4, 1)))


def test_depth_to_space_upsample_is_a_2x2_stride_2_transposed_conv():
  """The docstring's claim: same function class, here with the weights mapped one to one."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32)
  transpose = layers.Upsample2x(6, "transpose")
  params_t = transpose.init(jax.random.key(0), x)["params"]
  kernel_t = params_t["up"]["kernel"]  # (2, 2, in, out)
  # Output pixel (2i+a, 2j+b) of the transposed conv sees input (i, j) through kernel_t[a, b]
  # (flipped: lax's transposed conv correlates); pixel shuffle reads channel (a*2+b)*out+o.
  kernel_d = jnp.flip(kernel_t, (0, 1)).transpose(2, 0, 1, 3).reshape(5, 4 * 6)
  bias_d = jnp.tile(params_t["up"]["bias"], 4)
  params_d = {"up": {"kernel": kernel_d, "bias": bias_d}}
  out_t = transpose.apply({"params": params_t}, x)
  out_d = layers.Upsample2x(6, "depth_to_space").apply({"params": params_d}, x)
  assert out_d.shape == out_t.shape == (2, 6, 8, 6)
  np.testing.assert_allclose(out_d, out_t, rtol=1e-5, atol=1e-5)


def test_space_to_depth_inverts_depth_to_space():
  x = jnp.arange(2 * 3 * 4 * 8, dtype=jnp.float32).reshape(2, 3, 4, 8)
  up = layers.depth_to_space(x, 2)
  assert up.shape == (2, 6, 8, 2)
  np.testing.assert_array_equal(layers.space_to_depth(up, 2), x)


def test_pixel_shuffle_dense_is_dense_then_depth_to_space_with_the_same_parameters():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4, 5)), jnp.float32)
  dense = nn.Dense(4 * 6)
  shuffle = layers.PixelShuffleDense(6)
  params_dense = dense.init(jax.random.key(3), x)["params"]
  params_shuffle = shuffle.init(jax.random.key(3), x)["params"]
  assert jax.tree.map(jnp.shape, params_shuffle) == jax.tree.map(jnp.shape, params_dense)
  np.testing.assert_array_equal(params_shuffle["kernel"], params_dense["kernel"])
  params = {"kernel": params_dense["kernel"], "bias": jnp.linspace(-1, 1, 24)}
  np.testing.assert_allclose(shuffle.apply({"params": params}, x),
                             layers.depth_to_space(dense.apply({"params": params}, x), 2), rtol=1e-6, atol=1e-6)


def test_dense_depth_to_space_hand_written_gradient_matches_autodiff():
  rng = np.random.default_rng(0)
  x, kernel, bias, grad = (jnp.asarray(rng.normal(size=s), jnp.float32)
                           for s in ((2, 3, 4, 5), (5, 12), (12,), (2, 6, 8, 3)))
  _, vjp = jax.vjp(layers.dense_depth_to_space, x, kernel, bias)
  _, vjp_reference = jax.vjp(lambda a, k, b: layers.depth_to_space(a @ k + b, 2), x, kernel, bias)
  for got, want in zip(vjp(grad), vjp_reference(grad)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pixel_shuffle_dense_bfloat16_gradients_match_dense_then_depth_to_space():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4, 5)), jnp.float32)
  weights = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 8, 3)), jnp.float32)
  shuffle = layers.PixelShuffleDense(3, dtype=jnp.bfloat16)
  params = shuffle.init(jax.random.key(0), x)["params"]
  reference = lambda p, y: layers.depth_to_space(nn.Dense(12, dtype=jnp.bfloat16).apply({"params": p}, y), 2)
  loss = lambda f: lambda p, y: jnp.sum(f(p, y).astype(jnp.float32) * weights)
  grads = jax.grad(loss(lambda p, y: shuffle.apply({"params": p}, y)), argnums=(0, 1))(params, x)
  grads_reference = jax.grad(loss(reference), argnums=(0, 1))(params, x)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_reference)):
    assert got.dtype == want.dtype == jnp.float32  # float32 parameters and inputs get float32 gradients
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("upsample", layers.UPSAMPLE_MODES)
def test_unet_shapes_and_size_check(upsample):
  model = UNet(features=4, levels=3, num_outputs=2, norm="batch", upsample=upsample)
  x = jnp.zeros((2, 16, 24, 3))
  variables = model.init(jax.random.key(0), x)
  logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 16, 24, 2) and logits.dtype == jnp.float32
  with pytest.raises(ValueError, match="divisible by 8"):
    model.init(jax.random.key(0), jnp.zeros((1, 20, 16, 3)))


def test_unet_bfloat16_compute_float32_params():
  model = UNet(features=4, levels=2, dtype=jnp.bfloat16)
  x = jnp.ones((1, 8, 8, 3))
  variables = model.init(jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  assert model.apply(variables, x).dtype == jnp.float32


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifiers_give_logits_per_class(name):
  model = build_classifier(name, 3, width=0.125 if name.startswith("resnet") else 1.0)
  x = jnp.zeros((2, 32, 32, 3))
  variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 3)
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_unknown_names_fail_clearly():
  with pytest.raises(ValueError, match="unknown upsample"):
    layers.Upsample2x(4, "bilinear").init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
  with pytest.raises(ValueError):
    build_classifier("vgg16", 2)


def test_flip_tta_prediction_is_flip_equivariant():
  import optax  # pylint: disable=g-import-not-at-top
  from lesion_jax.train import steps  # pylint: disable=g-import-not-at-top
  from lesion_jax.train.state import create_train_state  # pylint: disable=g-import-not-at-top
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
  state = create_train_state(UNet(features=4, levels=2, norm="batch"), optax.sgd(0.1),
                             jax.random.key(0), images[:1])
  plain = jax.jit(lambda st, x: steps.segmentation_predict_step(st, {"image": x}))
  tta = jax.jit(lambda st, x: steps.segmentation_predict_step_flip_tta(st, {"image": x}))
  mirrored = jnp.flip(images, 2)
  # A single pass of a random U-Net is not mirror-symmetric; the flip average is, by construction.
  assert float(jnp.max(jnp.abs(plain(state, mirrored) - jnp.flip(plain(state, images), 2)))) > 1e-4
  np.testing.assert_allclose(tta(state, mirrored), jnp.flip(tta(state, images), 2), atol=1e-6)
  by_hand = (plain(state, images) + jnp.flip(plain(state, jnp.flip(images, 1)), 1)
             + jnp.flip(plain(state, jnp.flip(images, 2)), 2)
             + jnp.flip(plain(state, jnp.flip(images, (1, 2))), (1, 2))) / 4
  np.testing.assert_allclose(tta(state, images), by_hand, atol=1e-6)


def test_classifier_tta_is_invariant_to_flips_and_quarter_turns():
  import optax  # pylint: disable=g-import-not-at-top
  from lesion_jax.train import steps  # pylint: disable=g-import-not-at-top
  from lesion_jax.train.state import create_train_state  # pylint: disable=g-import-not-at-top
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  state = create_train_state(build_classifier("lenet5", 3), optax.sgd(0.1), jax.random.key(0), images[:1])
  plain = jax.jit(lambda st, x: steps.classification_predict_step(st, {"image": x}))
  tta = jax.jit(lambda st, x: steps.classification_predict_step_tta(st, {"image": x}))
  turned = jnp.rot90(jnp.flip(images, 1), 1, axes=(1, 2))
  # One pass of a random LeNet sees a turned image differently; the average over the 8 views does not.
  assert float(jnp.max(jnp.abs(plain(state, turned) - plain(state, images)))) > 1e-4
  np.testing.assert_allclose(tta(state, turned), tta(state, images), atol=1e-6)
  np.testing.assert_allclose(jnp.sum(tta(state, images), -1), 1.0, atol=1e-6)
  by_hand = sum(plain(state, jnp.rot90(v, k, axes=(1, 2))) for v in (images, jnp.flip(images, 1)) for k in range(4)) / 8
  np.testing.assert_allclose(tta(state, images), by_hand, atol=1e-6)


def test_sgd_gets_sgd_sized_defaults_unless_given_and_config_json_records_them():
  from lesion_jax.tasks import classification  # pylint: disable=g-import-not-at-top
  base_config = classification.ClassifierConfig()
  sgd = dataclasses.replace(base_config, optimizer=dataclasses.replace(base_config.optimizer, name="sgd"))
  resolved = classification.with_optimizer_defaults(sgd)
  assert (resolved.optimizer.learning_rate, resolved.optimizer.momentum, resolved.optimizer.weight_decay) == (1e-2, 0.9, 5e-4)
  assert resolved.optimizer.warmup_steps == base_config.optimizer.warmup_steps  # the rest as ClassifierConfig's
  # What config.json records (runner.write_config writes task.describe()) is the resolved value.
  record = classification.ClassificationTask(resolved).describe()
  assert record["config"]["optimizer"]["learning_rate"] == 1e-2 and record["config"]["optimizer"]["weight_decay"] == 5e-4
  # A value given explicitly (a flag) wins, even when it equals the Adam-sized default.
  sgd_slow = dataclasses.replace(sgd, optimizer=dataclasses.replace(sgd.optimizer, learning_rate=1e-3))
  kept = classification.with_optimizer_defaults(sgd_slow, given={"learning_rate"})
  assert (kept.optimizer.learning_rate, kept.optimizer.weight_decay) == (1e-3, 5e-4)
  # Adam keeps ClassifierConfig's defaults.
  assert classification.with_optimizer_defaults(base_config) == base_config



def test_every_network_is_one_lookup_by_name():
  from lesion_jax import models  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.lesion_index import task as lesion_index  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import classification, segmentation  # pylint: disable=g-import-not-at-top
  assert models.names("classifier") == ("lenet5", "alexnet", "resnet18", "resnet50")
  assert models.names("segmenter") == ("fcn", "unet", "dilated_unet")
  assert set(models.names("fcrn")) == {"fcrn_small", "fcrn50", "fcrn88"}
  assert models.get("dilated_unet", features=4, levels=2) == models.UNet(features=4, levels=2,
                                                                         bottleneck_dilations=(2, 4))
  config = segmentation.SegmenterModelConfig(name="fcn", features=8, levels=3, head_features=16)
  assert config.build() == models.FCN(features=8, levels=3, head_features=16)
  with pytest.raises(ValueError, match=r"model 'unet': .*'featurs'.*it takes \['features'"):
    models.get("unet", featurs=3)
  with pytest.raises(ValueError, match="unknown model 'unet3d'"):
    models.get("unet3d")
  # The task configs list the registry's names in their flag help.
  assert "resnet50" in classification.ClassifierModelConfig.__dataclass_fields__["name"].metadata["doc"]
  assert "fcrn88" in lesion_index.FCRNConfig.__dataclass_fields__["variant"].metadata["doc"]


@pytest.mark.parametrize("train", [True, False])
def test_matmul_batch_norm_is_flax_batch_norm(train):
  """models/batch_norm.BatchNorm: nn.BatchNorm's variables, outputs, gradients and running statistics."""
  from lesion_jax.models.batch_norm import BatchNorm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 6, 5, 7)) * 3 + 1, jnp.float32)
  ours, flax_bn = (cls(use_running_average=not train, momentum=0.9) for cls in (BatchNorm, nn.BatchNorm))
  assert (jax.tree_util.tree_structure(ours.init(jax.random.key(0), x))
          == jax.tree_util.tree_structure(flax_bn.init(jax.random.key(0), x)))
  variables = {"params": {"scale": jnp.asarray(rng.normal(size=7), jnp.float32),
                          "bias": jnp.asarray(rng.normal(size=7), jnp.float32)},
               "batch_stats": {"mean": jnp.asarray(rng.normal(size=7), jnp.float32),
                               "var": jnp.asarray(rng.random(7) + 0.5, jnp.float32)}}
  weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

  def loss(module, params, inputs):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, inputs, mutable=["batch_stats"])
    return jnp.sum(y * weights), updates

  results = [jax.value_and_grad(functools.partial(loss, module), argnums=(0, 1), has_aux=True)(variables["params"], x)
             for module in (ours, flax_bn)]
  (ours_loss, ours_stats), ours_grads = results[0]
  (flax_loss, flax_stats), flax_grads = results[1]
  np.testing.assert_allclose(ours_loss, flax_loss, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves((ours_grads, ours_stats)), jax.tree_util.tree_leaves((flax_grads, flax_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_matmul_batch_norm_keeps_float64_in_float64(train):
  # In float64 (the twin benchmarks' --check) the statistics are float64, as flax's are: computed in
  # float32 they moved ResNet-50's losses by 3e-5 against PyTorch's float64.
  from lesion_jax.models.batch_norm import BatchNorm  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 4, 5)) * 1e3 + 1e4, jnp.float64)
    outputs = []
    for module in (BatchNorm(use_running_average=not train), nn.BatchNorm(use_running_average=not train)):
      variables = module.init(jax.random.key(0), x)
      variables = {**variables, "batch_stats": {"mean": jnp.full(5, 1e4), "var": jnp.full(5, 1e6)}}
      y = module.apply(variables, x, mutable=["batch_stats"])[0]
      assert y.dtype == jnp.float64
      outputs.append(y)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("size", [16, 18])
def test_lfn_pools_even_and_odd_sizes_as_nn_max_pool(size):
  # 16 px pools 16 -> 8 -> 4 -> 2 by layers.max_pool_2x; 18 px reaches 9, an odd size, which
  # nn.max_pool floors: the network must give the classes either way, the same as with nn.max_pool.
  from lesion_jax.models.lfn import lfn  # pylint: disable=g-import-not-at-top
  model = lfn("lfn_narrow", num_classes=5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, size, size, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 5) and bool(jnp.all(jnp.isfinite(logits)))
  with mock.patch.object(layers, "max_pool_2x", lambda y: nn.max_pool(y, (2, 2), (2, 2))):
    np.testing.assert_allclose(model.apply(variables, x), logits, rtol=1e-5, atol=1e-5)
