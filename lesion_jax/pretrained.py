"""torchvision's ImageNet ResNet weights in the Flax ResNet of lesion_jax.models.classifiers.

  model = build_classifier("resnet50", num_classes, torchvision_padding=True)
  variables = model.init(rng, image, train=False)
  variables = load_torchvision_resnet("resnet50.npz", variables)

The file is torchvision's state_dict: a `.npz` whose keys are the state_dict keys (written by
experiments/export_torchvision_weights.py, which needs torch), or the `.pth`/`.pt` itself when torch
is importable. Build the model with `torchvision_padding=True`, or the stride-2 layers are padded
differently from the network the weights were trained in.

The torchvision names map onto the Flax tree as follows (k: the block's index counted over all
stages, j: its conv; BatchNorm weight/bias/running_mean/running_var -> params scale/bias and
batch_stats mean/var; conv kernels OIHW -> HWIO, the dense kernel transposed):

  conv1, bn1                     -> Conv_0, BatchNorm_0
  layer{s}.{i}.conv{j}, .bn{j}   -> {ResNetBlock,BottleneckBlock}_k / Conv_{j-1}, BatchNorm_{j-1}
  layer{s}.{i}.downsample.0, .1  -> the same block's Conv_n, BatchNorm_n (n = 2 basic, 3 bottleneck)
  fc                             -> Dense_0

`num_batches_tracked` entries are ignored. The ImageNet head (fc, 1000 classes) is kept as the
freshly initialised Dense when its shape differs from the model's (head="auto").
"""
from __future__ import annotations

import os
import re
import zipfile
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np
from absl import logging
from flax.core import frozen_dict

# Main convs of a block, by the Flax block class: torchvision's BasicBlock has conv1, conv2,
# Bottleneck conv1..conv3; the downsample conv/BatchNorm come after them.
_BLOCK_CONVS = {"ResNetBlock": 2, "BottleneckBlock": 3}
_BN_PARAMS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
HEAD_KEYS = ("fc.weight", "fc.bias")
HEADS = ("auto", "load", "skip")


class TorchvisionLoadReport(NamedTuple):
  """What resnet_variables_from_torchvision did: the state_dict keys copied, those of the head kept
  at the model's own initialisation (and why), and the num_batches_tracked keys ignored."""
  loaded: tuple[str, ...]
  skipped_head: tuple[str, ...]
  head_reason: str
  ignored: tuple[str, ...]


class _Leaf(NamedTuple):
  collection: str
  path: tuple[str, ...]
  transpose: tuple[int, ...] | None


def _conv(path: tuple[str, ...]) -> _Leaf:
  return _Leaf("params", path + ("kernel",), (2, 3, 1, 0))  # OIHW -> HWIO


def _bn(prefix: str, path: tuple[str, ...]) -> dict[str, _Leaf]:
  return {f"{prefix}.{name}": _Leaf(collection, path + (leaf,), None)
          for name, (collection, leaf) in _BN_PARAMS.items()}


def _block_index(name: str) -> tuple[str, int] | None:
  match = re.fullmatch(r"([A-Za-z]+)_(\d+)", name)
  return (match.group(1), int(match.group(2))) if match and match.group(1) in _BLOCK_CONVS else None


def torchvision_key_map(params: Mapping[str, Any]) -> dict[str, _Leaf]:
  """torchvision state_dict key -> the Flax leaf it sets, derived from the Flax ResNet's `params`.
  Stages are told apart by the blocks' width (their first conv's output channels), so any
  stage_sizes work. Raises ValueError on a tree that is not the classifiers.ResNet."""
  blocks = sorted((idx[1], idx[0], name) for name in params if (idx := _block_index(name)))
  expected = {"Conv_0", "BatchNorm_0", "Dense_0"} | {name for _, _, name in blocks}
  if set(params) != expected or not blocks:
    raise ValueError("not a lesion_jax ResNet parameter tree: expected Conv_0, BatchNorm_0, "
                     f"ResNetBlock_k or BottleneckBlock_k, Dense_0; got {sorted(params)}")
  if [k for k, _, _ in blocks] != list(range(len(blocks))) or len({kind for _, kind, _ in blocks}) != 1:
    raise ValueError(f"ResNet blocks are not numbered 0..{len(blocks) - 1} of one kind: "
                     f"{[name for _, _, name in blocks]}")
  mapping = {"conv1.weight": _conv(("Conv_0",)), **_bn("bn1", ("BatchNorm_0",)),
             "fc.weight": _Leaf("params", ("Dense_0", "kernel"), (1, 0)),
             "fc.bias": _Leaf("params", ("Dense_0", "bias"), None)}
  stage, index, width = 0, 0, None
  for _, kind, name in blocks:
    block_width = np.shape(params[name]["Conv_0"]["kernel"])[-1]
    if block_width != width:
      stage, index, width = stage + 1, 0, block_width
    convs = _BLOCK_CONVS[kind]
    prefix = f"layer{stage}.{index}"
    for j in range(convs):
      mapping[f"{prefix}.conv{j + 1}.weight"] = _conv((name, f"Conv_{j}"))
      mapping.update(_bn(f"{prefix}.bn{j + 1}", (name, f"BatchNorm_{j}")))
    if f"Conv_{convs}" in params[name]:
      mapping[f"{prefix}.downsample.0.weight"] = _conv((name, f"Conv_{convs}"))
      mapping.update(_bn(f"{prefix}.downsample.1", (name, f"BatchNorm_{convs}")))
    index += 1
  return mapping


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for name in path[:-1]:
    tree = tree[name]
  tree[path[-1]] = value


def _like(value: np.ndarray, leaf: Any) -> Any:
  """`value` as the leaf it replaces: its dtype, and a jax.Array on its sharding if it was one."""
  value = np.asarray(value, dtype=leaf.dtype)
  return jax.device_put(value, leaf.sharding) if isinstance(leaf, jax.Array) else value


def resnet_variables_from_torchvision(state_dict: Mapping[str, Any], variables: Mapping[str, Any], *,
                                      head: str = "auto", return_report: bool = False):
  """`variables` ({"params", "batch_stats", ...} of a classifiers.ResNet, as from model.init or
  jax.eval_shape of it) with every leaf set from torchvision's ResNet `state_dict` (key -> array;
  numpy or anything np.asarray takes). Every state_dict key must map onto a leaf and every leaf
  have its key (`*.num_batches_tracked` ignored), with the same shape after the layout change;
  otherwise ValueError naming the keys (and both shapes).

  head: "auto" copies fc when its shapes match the model's Dense_0 and otherwise keeps the
  model's initialised Dense_0 (e.g. 1000 ImageNet classes vs 2); "load" requires it to match;
  "skip" always keeps Dense_0. With "auto" and "skip" a state_dict without fc.weight and fc.bias
  (a backbone) is accepted too, Dense_0 kept.

  Returns new variables (plain dicts; the input is not modified), or (variables,
  TorchvisionLoadReport) with return_report. Build the model with torchvision_padding=True to get
  torchvision's outputs."""
  if head not in HEADS:
    raise ValueError(f"head must be one of {HEADS}, not {head!r}")
  variables = frozen_dict.unfreeze(variables)  # plain nested dicts, a fresh copy of the containers
  if "params" not in variables or "batch_stats" not in variables:
    raise ValueError(f"variables need 'params' and 'batch_stats' collections; got {sorted(variables)}")
  mapping = torchvision_key_map(variables["params"])
  ignored = tuple(sorted(k for k in state_dict if k.endswith(".num_batches_tracked")))
  given = set(state_dict) - set(ignored)
  headless = head != "load" and not given & set(HEAD_KEYS)  # a backbone-only state_dict
  if headless:
    mapping = {k: v for k, v in mapping.items() if k not in HEAD_KEYS}
  missing, extra = sorted(set(mapping) - given), sorted(given - set(mapping))
  if missing or extra:
    raise ValueError(
        "torchvision state_dict does not match the Flax ResNet"
        + (f"; missing {len(missing)} keys: {missing[:10]}{' ...' if len(missing) > 10 else ''}" if missing else "")
        + (f"; {len(extra)} keys with no Flax leaf: {extra[:10]}{' ...' if len(extra) > 10 else ''}" if extra else ""))

  def target_shape(key: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    leaf = mapping[key]
    source = tuple(np.shape(state_dict[key]))
    expect = tuple(np.shape(_get(variables[leaf.collection], leaf.path)))
    if leaf.transpose:  # the torch-layout shape the Flax leaf needs
      expect = tuple(expect[leaf.transpose.index(i)] for i in range(len(expect)))
    return source, expect

  if headless:
    skipped, reason = HEAD_KEYS, "the state_dict has no fc"
  elif head == "skip":
    skipped, reason = HEAD_KEYS, "head='skip'"
  elif head == "auto" and any(target_shape(k)[0] != target_shape(k)[1] for k in HEAD_KEYS):
    skipped = HEAD_KEYS
    reason = f"fc.weight {target_shape('fc.weight')[0]} vs the model's {target_shape('fc.weight')[1]} (out, in)"
  else:
    skipped, reason = (), ""

  new = frozen_dict.unfreeze(variables)  # containers of its own for the leaves set below
  loaded = []
  for key, leaf in mapping.items():
    if key in skipped:
      continue
    source, expect = target_shape(key)
    if source != expect:
      raise ValueError(f"torchvision key {key!r} has shape {source} but the Flax leaf "
                       f"{leaf.collection}/{'/'.join(leaf.path)} needs {expect} in torch layout "
                       f"({tuple(np.shape(_get(variables[leaf.collection], leaf.path)))} in Flax layout)")
    value = np.asarray(state_dict[key])
    if leaf.transpose:
      value = value.transpose(leaf.transpose)
    _set(new[leaf.collection], leaf.path, _like(value, _get(variables[leaf.collection], leaf.path)))
    loaded.append(key)
  logging.info("torchvision ResNet weights: %d keys loaded, %d num_batches_tracked ignored%s",
               len(loaded), len(ignored), f"; head kept at initialisation ({reason})" if skipped else "")
  report = TorchvisionLoadReport(tuple(loaded), tuple(skipped), reason, ignored)
  return (new, report) if return_report else new


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """torchvision's state_dict from a `.npz` (keys = state_dict keys) or, with torch importable, a
  `.pth`/`.pt` (a state_dict, or a checkpoint dict holding one under 'state_dict' or 'model')."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"torchvision weights {path!r}: no such file")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    try:
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
      raise ValueError(f"torchvision weights {path!r}: not a readable .npz ({type(e).__name__}: {e})") from e
  if ext in (".pth", ".pt"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"torchvision weights {path!r}: reading .pth/.pt needs torch, which is not importable here. "
          "Convert the file to .npz in an environment with torch: python "
          "experiments/export_torchvision_weights.py --input=FILE.pth --output=FILE.npz") from e
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (pickle, zip, runtime)
      raise ValueError(f"torchvision weights {path!r}: torch.load failed ({type(e).__name__}: {e})") from e
    return _tensors_to_numpy(path, _unwrap(obj, path))
  raise ValueError(f"torchvision weights {path!r}: unknown extension {ext!r}; expected .npz, .pth or .pt")


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  if isinstance(obj, Mapping):
    for key in ("state_dict", "model"):
      if isinstance(obj.get(key), Mapping):
        obj = obj[key]
        break
  if not isinstance(obj, Mapping) or not obj:
    raise ValueError(f"torchvision weights {path!r}: expected a state_dict (a dict of tensors), "
                     f"got {type(obj).__name__}")
  if all(isinstance(k, str) and k.startswith("module.") for k in obj):  # saved from DataParallel
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return obj


def _tensors_to_numpy(path: str, state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in state_dict.items():
    if not hasattr(value, "detach"):
      raise ValueError(f"torchvision weights {path!r}: entry {key!r} is a {type(value).__name__}, not a tensor")
    value = value.detach().cpu()
    out[key] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def load_torchvision_resnet(path: str | os.PathLike, variables: Mapping[str, Any], *, head: str = "auto",
                            return_report: bool = False):
  """read_state_dict(path) then resnet_variables_from_torchvision; errors name the file."""
  state_dict = read_state_dict(path)
  try:
    return resnet_variables_from_torchvision(state_dict, variables, head=head, return_report=return_report)
  except ValueError as e:
    raise ValueError(f"torchvision weights {os.fspath(path)!r}: {e}") from e


def copy_matching(source: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[dict, dict[str, Any]]:
  """`target` (a variables tree: {"params": ..., "batch_stats": ...}) with every leaf that
  `source` has at the same path and shape replaced by the source's (fine-tuning from another run
  of the same network). Returns (tree, report): the copied leaf count and the paths kept fresh
  (absent in `source`, or another shape, e.g. a head of another class count)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat_source = traverse_util.flatten_dict(frozen_dict.unfreeze(source), sep="/")
  flat_target = traverse_util.flatten_dict(frozen_dict.unfreeze(target), sep="/")
  out, fresh = {}, []
  for path, leaf in flat_target.items():
    value = flat_source.get(path)
    if value is not None and np.shape(value) == np.shape(leaf):
      out[path] = jax.numpy.asarray(value, dtype=jax.numpy.asarray(leaf).dtype)
    else:
      out[path] = leaf
      fresh.append(path)
  if len(fresh) == len(flat_target):
    raise ValueError("no parameter of the source matches the model (another network or width?)")
  return traverse_util.unflatten_dict(out, sep="/"), {"copied": len(flat_target) - len(fresh), "fresh": fresh}
