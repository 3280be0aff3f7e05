"""lesion_jax.pretrained: torchvision ResNet state_dicts onto the Flax ResNet, and the ResNet's
torchvision_padding mode. The fake state_dicts are built from torchvision's architecture (key names
and shapes as torchvision.models.resnet writes them), not from the Flax model; variable shapes
come from jax.eval_shape, so nothing here compiles a network except one tiny forward pass."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from lesion_jax import pretrained
from lesion_jax.models import classifiers
from lesion_jax.models.classifiers import build_classifier

RESNET18 = ((2, 2, 2, 2), "basic")
RESNET50 = ((3, 4, 6, 3), "bottleneck")


def torchvision_resnet_shapes(layers, block, width=64, num_classes=1000):
  """{state_dict key: shape} of torchvision.models.resnet.ResNet(BasicBlock or Bottleneck, layers)
  with base width `width` (64 in torchvision), in the order its state_dict() lists them."""
  expansion = 4 if block == "bottleneck" else 1
  shapes = {"conv1.weight": (width, 3, 7, 7)}

  def bn(prefix, channels):
    for name in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{prefix}.{name}"] = (channels,)
    shapes[f"{prefix}.num_batches_tracked"] = ()

  bn("bn1", width)
  inplanes = width
  for s, blocks in enumerate(layers):
    planes = width * 2 ** s
    for i in range(blocks):
      stride = 2 if s > 0 and i == 0 else 1
      p = f"layer{s + 1}.{i}"
      if block == "bottleneck":  # conv1 1x1, conv2 3x3 (stride: v1.5), conv3 1x1 to planes*4
        convs = [(planes, inplanes, 1, 1), (planes, planes, 3, 3), (planes * 4, planes, 1, 1)]
      else:  # conv1 3x3 (stride), conv2 3x3
        convs = [(planes, inplanes, 3, 3), (planes, planes, 3, 3)]
      for j, shape in enumerate(convs):
        shapes[f"{p}.conv{j + 1}.weight"] = shape
        bn(f"{p}.bn{j + 1}", shape[0])
      if stride != 1 or inplanes != planes * expansion:
        shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
        bn(f"{p}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  shapes["fc.weight"] = (num_classes, inplanes)
  shapes["fc.bias"] = (num_classes,)
  return shapes


def fake_state_dict(layers, block, width=64, num_classes=1000, seed=0):
  """Random float32 values (distinct everywhere: continuous draws), variances positive, int64
  num_batches_tracked, as torchvision's state_dict holds."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in torchvision_resnet_shapes(layers, block, width, num_classes).items():
    if key.endswith("num_batches_tracked"):
      out[key] = np.array(1234, np.int64)
    elif key.endswith("running_var"):
      out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
      out[key] = (rng.normal(size=shape) * (0.2 if len(shape) == 4 else 0.5)).astype(np.float32)
  return out


def flax_variables(model, size=64, seed=1):
  """The model's variables from eval_shape, filled with numpy normal values (no compiled init)."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jnp.zeros((1, size, size, 3), jnp.float32))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


@pytest.fixture(scope="module")
def resnet50_variables():
  return flax_variables(build_classifier("resnet50", 1000, torchvision_padding=True))


@pytest.fixture(scope="module")
def resnet18_variables():
  return flax_variables(build_classifier("resnet18", 1000, torchvision_padding=True))


def _fingerprint(a):
  return np.sort(np.asarray(a, np.float32).ravel()).tobytes()


def _check_every_leaf_from_one_key(state_dict, variables, skip=()):
  """Each Flax leaf holds exactly the values of one state_dict entry (up to layout), and each
  entry (but num_batches_tracked and `skip`) fills exactly one leaf."""
  by_values = {_fingerprint(v): k for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  leaves = flatten_dict(variables)
  sources = [by_values.get(_fingerprint(v)) for path, v in leaves.items() if path[1] != "Dense_0" or not skip]
  assert None not in sources
  assert sorted(sources) == sorted(set(by_values.values()) - set(skip))


def test_resnet50_every_key_mapped_with_torch_layout(resnet50_variables):
  state_dict = fake_state_dict(*RESNET50)
  assert len(state_dict) == 320  # torchvision.models.resnet50().state_dict()
  new, report = pretrained.resnet_variables_from_torchvision(state_dict, resnet50_variables, return_report=True)
  assert len(report.loaded) == 267 and not report.skipped_head and len(report.ignored) == 53
  assert set(report.loaded) | set(report.ignored) == set(state_dict)
  _check_every_leaf_from_one_key(state_dict, new)
  p, s = new["params"], new["batch_stats"]
  # Specific leaves, named by hand (blocks count over the stages: layer3.5 is block 3+4+5 = 12).
  w = state_dict["conv1.weight"]
  assert p["Conv_0"]["kernel"].shape == (7, 7, 3, 64)
  assert p["Conv_0"]["kernel"][1, 5, 2, 7] == w[7, 2, 1, 5]  # HWIO from OIHW, H and W not swapped
  np.testing.assert_array_equal(p["BottleneckBlock_12"]["Conv_1"]["kernel"],
                                state_dict["layer3.5.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["BottleneckBlock_3"]["Conv_3"]["kernel"][0, 0],
                                state_dict["layer2.0.downsample.0.weight"][:, :, 0, 0].T)
  np.testing.assert_array_equal(p["BottleneckBlock_3"]["BatchNorm_3"]["scale"], state_dict["layer2.0.downsample.1.weight"])
  np.testing.assert_array_equal(s["BottleneckBlock_15"]["BatchNorm_2"]["var"], state_dict["layer4.2.bn3.running_var"])
  np.testing.assert_array_equal(s["BottleneckBlock_0"]["BatchNorm_1"]["mean"], state_dict["layer1.0.bn2.running_mean"])
  np.testing.assert_array_equal(p["BottleneckBlock_7"]["BatchNorm_0"]["bias"], state_dict["layer3.0.bn1.bias"])
  np.testing.assert_array_equal(p["Dense_0"]["kernel"], state_dict["fc.weight"].T)
  np.testing.assert_array_equal(p["Dense_0"]["bias"], state_dict["fc.bias"])
  assert p["Dense_0"]["kernel"].dtype == np.float32
  # The input variables are left as they were.
  assert not np.array_equal(resnet50_variables["params"]["Dense_0"]["bias"], state_dict["fc.bias"])


def test_resnet18_basic_blocks(resnet18_variables):
  state_dict = fake_state_dict(*RESNET18)
  assert len(state_dict) == 122  # torchvision.models.resnet18().state_dict()
  new, report = pretrained.resnet_variables_from_torchvision(state_dict, resnet18_variables, return_report=True)
  assert len(report.loaded) == 102 and len(report.ignored) == 20
  _check_every_leaf_from_one_key(state_dict, new)
  p, s = new["params"], new["batch_stats"]
  assert "Conv_2" not in p["ResNetBlock_0"]  # layer1.0: 64 -> 64, stride 1, no downsample
  np.testing.assert_array_equal(p["ResNetBlock_2"]["Conv_2"]["kernel"],
                                state_dict["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["ResNetBlock_2"]["BatchNorm_2"]["scale"], state_dict["layer2.0.downsample.1.weight"])
  np.testing.assert_array_equal(p["ResNetBlock_7"]["Conv_1"]["kernel"],
                                state_dict["layer4.1.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(s["ResNetBlock_5"]["BatchNorm_0"]["mean"], state_dict["layer3.1.bn1.running_mean"])


def test_head_kept_when_classes_differ(resnet50_variables):
  variables = flax_variables(build_classifier("resnet50", 3, torchvision_padding=True))
  state_dict = fake_state_dict(*RESNET50)  # 1000 ImageNet classes
  new, report = pretrained.resnet_variables_from_torchvision(state_dict, variables, return_report=True)
  assert report.skipped_head == ("fc.weight", "fc.bias") and "(1000, 2048)" in report.head_reason
  assert len(report.loaded) == 265
  np.testing.assert_array_equal(new["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["kernel"])
  np.testing.assert_array_equal(new["params"]["Dense_0"]["bias"], variables["params"]["Dense_0"]["bias"])
  _check_every_leaf_from_one_key(state_dict, new, skip=pretrained.HEAD_KEYS)
  with pytest.raises(ValueError, match=r"'fc.weight' has shape \(1000, 2048\).*\(3, 2048\)"):
    pretrained.resnet_variables_from_torchvision(state_dict, variables, head="load")
  # head="skip" keeps a matching head too.
  kept = pretrained.resnet_variables_from_torchvision(state_dict, resnet50_variables, head="skip")
  np.testing.assert_array_equal(kept["params"]["Dense_0"]["bias"], resnet50_variables["params"]["Dense_0"]["bias"])
  # A backbone-only state_dict (no fc): the head is kept, except with head="load".
  backbone = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
  _, report = pretrained.resnet_variables_from_torchvision(backbone, variables, return_report=True)
  assert report.skipped_head == pretrained.HEAD_KEYS and report.head_reason == "the state_dict has no fc"
  with pytest.raises(ValueError, match=r"missing 2 keys: \['fc.bias', 'fc.weight'\]"):
    pretrained.resnet_variables_from_torchvision(backbone, variables, head="load")
  with pytest.raises(ValueError, match="head must be one of"):
    pretrained.resnet_variables_from_torchvision(state_dict, variables, head="drop")


def test_mismatches_are_errors_naming_the_keys(resnet18_variables):
  good = fake_state_dict(*RESNET18)
  wrong = dict(good, **{"layer3.1.conv1.weight": np.zeros((256, 256, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"'layer3.1.conv1.weight' has shape \(256, 256, 1, 1\).*"
                                       r"needs \(256, 256, 3, 3\) in torch layout"):
    pretrained.resnet_variables_from_torchvision(wrong, resnet18_variables)
  missing = {k: v for k, v in good.items() if k != "layer2.1.bn2.running_var"}
  with pytest.raises(ValueError, match=r"missing 1 keys: \['layer2.1.bn2.running_var'\]"):
    pretrained.resnet_variables_from_torchvision(missing, resnet18_variables)
  extra = dict(good, **{"layer5.0.conv1.weight": np.zeros((1,), np.float32)})
  with pytest.raises(ValueError, match=r"1 keys with no Flax leaf: \['layer5.0.conv1.weight'\]"):
    pretrained.resnet_variables_from_torchvision(extra, resnet18_variables)
  # ResNet-50 weights into the ResNet-18: the keys of conv3, bn3, the later blocks and layer1's
  # downsample have no leaf; and ResNet-18 weights miss those of the ResNet-50.
  with pytest.raises(ValueError, match=r"165 keys with no Flax leaf: \['layer1.0.bn3.bias'"):
    pretrained.resnet_variables_from_torchvision(fake_state_dict(*RESNET50), resnet18_variables)
  with pytest.raises(ValueError, match=r"missing 165 keys: \['layer1.0.bn3.bias'"):
    pretrained.resnet_variables_from_torchvision(good, flax_variables(build_classifier("resnet50", 1000)))
  with pytest.raises(ValueError, match="not a lesion_jax ResNet parameter tree"):
    pretrained.resnet_variables_from_torchvision(good, {"params": {"Dense_0": {}}, "batch_stats": {}})


def test_load_npz_and_bad_files(tmp_path, resnet18_variables):
  state_dict = fake_state_dict(*RESNET18)
  path = tmp_path / "resnet18.npz"
  np.savez(path, **state_dict)
  new = pretrained.load_torchvision_resnet(path, resnet18_variables)
  np.testing.assert_array_equal(new["params"]["Dense_0"]["kernel"], state_dict["fc.weight"].T)
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    pretrained.load_torchvision_resnet(tmp_path / "nope.npz", resnet18_variables)
  (tmp_path / "bad.npz").write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match=r"bad.npz.*not a readable .npz"):
    pretrained.load_torchvision_resnet(tmp_path / "bad.npz", resnet18_variables)
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match=r"w.h5.*unknown extension"):
    pretrained.load_torchvision_resnet(tmp_path / "w.h5", resnet18_variables)
  np.savez(tmp_path / "partial.npz", **{k: v for k, v in state_dict.items() if k != "layer1.1.conv2.weight"})
  with pytest.raises(ValueError, match=r"partial.npz.*missing 1 keys: \['layer1.1.conv2.weight'\]"):
    pretrained.load_torchvision_resnet(tmp_path / "partial.npz", resnet18_variables)
  # Leaves that were jax arrays come back as jax arrays (on their sharding), of their dtype.
  on_device = jax.tree.map(jnp.asarray, resnet18_variables)
  new = pretrained.load_torchvision_resnet(path, on_device)
  leaf = new["batch_stats"]["ResNetBlock_1"]["BatchNorm_1"]["var"]
  assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32
  np.testing.assert_array_equal(leaf, state_dict["layer1.1.bn2.running_var"])


def test_pth_without_torch_says_how_to_convert(tmp_path, resnet18_variables):
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    pytest.skip("torch is importable here")
  except ImportError:
    pass
  (tmp_path / "resnet18.pth").write_bytes(b"\x80")
  with pytest.raises(ImportError, match=r"resnet18.pth.*needs torch.*export_torchvision_weights.py"):
    pretrained.load_torchvision_resnet(tmp_path / "resnet18.pth", resnet18_variables)


def _reference_forward(state_dict, layers, block, x_nchw):
  """torchvision's ResNet.forward (eval mode) written out with lax on the state_dict, NCHW/OIHW."""
  hi = jax.lax.Precision.HIGHEST
  conv = lambda x, key, stride, pad: jax.lax.conv_general_dilated(
      x, state_dict[key], (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW"),
      precision=hi)
  col = lambda v: v[None, :, None, None]

  def bn(x, p):
    mean, var = state_dict[f"{p}.running_mean"], state_dict[f"{p}.running_var"]
    return (x - col(mean)) / jnp.sqrt(col(var) + 1e-5) * col(state_dict[f"{p}.weight"]) + col(state_dict[f"{p}.bias"])

  x = jax.nn.relu(bn(conv(x_nchw, "conv1.weight", 2, 3), "bn1"))
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))
  for s, blocks in enumerate(layers):
    for i in range(blocks):
      p, stride = f"layer{s + 1}.{i}", 2 if s > 0 and i == 0 else 1
      if block == "bottleneck":
        y = jax.nn.relu(bn(conv(x, f"{p}.conv1.weight", 1, 0), f"{p}.bn1"))
        y = jax.nn.relu(bn(conv(y, f"{p}.conv2.weight", stride, 1), f"{p}.bn2"))
        y = bn(conv(y, f"{p}.conv3.weight", 1, 0), f"{p}.bn3")
      else:
        y = jax.nn.relu(bn(conv(x, f"{p}.conv1.weight", stride, 1), f"{p}.bn1"))
        y = bn(conv(y, f"{p}.conv2.weight", 1, 1), f"{p}.bn2")
      if f"{p}.downsample.0.weight" in state_dict:
        x = bn(conv(x, f"{p}.downsample.0.weight", stride, 0), f"{p}.downsample.1")
      x = jax.nn.relu(x + y)
  x = jnp.mean(x, axis=(2, 3))
  return jnp.dot(x, state_dict["fc.weight"].T, precision=hi) + state_dict["fc.bias"]


@pytest.mark.parametrize("block_name", ["basic", "bottleneck"])
def test_torchvision_padding_forward_matches_torchvision_formula(block_name):
  """A width-8 ResNet, one block per stage, 64 px (so every stride-2 layer sees an even size, where
  flax's 'SAME' would pad by (0, 1), not torchvision's (1, 1)): the Flax forward with loaded weights
  equals the torchvision forward written out on the state_dict."""
  layers = (1, 1, 1, 1)
  block = classifiers.BottleneckBlock if block_name == "bottleneck" else classifiers.ResNetBlock
  model = classifiers.ResNet(layers, block, num_classes=5, width=8, torchvision_padding=True)
  state_dict = fake_state_dict(layers, block_name, width=8, num_classes=5)
  variables = pretrained.resnet_variables_from_torchvision(state_dict, flax_variables(model, size=64))
  x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with jax.default_matmul_precision("highest"):
    logits = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  reference = _reference_forward(state_dict, layers, block_name, x.transpose(0, 3, 1, 2))
  np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * float(jnp.abs(reference).max()))
  if block_name != "basic":
    return
  # The default padding computes another function on the same weights (at 128 px and up, where it
  # has the same stem).
  default = model.clone(torchvision_padding=False)
  x128 = np.random.default_rng(3).normal(size=(1, 128, 128, 3)).astype(np.float32)
  ours = jax.jit(functools.partial(model.apply, train=False))(variables, x128)
  theirs = jax.jit(functools.partial(default.apply, train=False))(variables, x128)
  assert float(jnp.abs(ours - theirs).max()) > 1e-3 * float(jnp.abs(ours).max())


def test_default_param_tree_unchanged_and_shared_with_torchvision_mode():
  """The default ResNets keep their parameters (the README's results were measured with them):
  torchvision's parameter count at 1000 classes, and the same tree as torchvision_padding=True from
  128 px up; below 128 px the default keeps its 3x3 stem."""
  for name, count in (("resnet18", 11_689_512), ("resnet50", 25_557_032)):
    shapes = lambda model, size: jax.tree.map(lambda s: s.shape, jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, size, size, 3))))
    default = shapes(build_classifier(name, 1000), 128)
    assert default == shapes(build_classifier(name, 1000, torchvision_padding=True), 128)
    assert sum(np.prod(s) for s in jax.tree.leaves(default["params"], is_leaf=lambda s: isinstance(s, tuple))) == count
    assert shapes(build_classifier(name, 1000), 64)["params"]["Conv_0"]["kernel"] == (3, 3, 3, 64)
    assert shapes(build_classifier(name, 1000, torchvision_padding=True), 64)["params"]["Conv_0"]["kernel"] == (7, 7, 3, 64)
  assert not build_classifier("resnet18", 2).torchvision_padding
  with pytest.raises(ValueError, match="ResNets only"):
    build_classifier("alexnet", 2, torchvision_padding=True)
