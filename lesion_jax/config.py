"""One source of configuration: nested frozen dataclasses, their dict form, dotted overrides.

Defaults live only in the dataclasses. A run's `config.json` is `to_dict(config)`;
`from_dict(cls, to_dict(config)) == config` exactly, and a key that no field has is an error
naming the key (and the nearest field), so a typo never passes silently.

Errors name fields, never flags: a message about a field gives its dotted path from the config it
was given, in backquotes, then `=value` where the value is the point (FIELD_NAME):

    `input.image_size`=50: a U-Net with `model.levels`=4 needs a multiple of 16

The programs that set fields from a command line (experiments/common.py) rewrite each such name
into the option the user typed there (`--config.input.image_size=50`), so the library's messages
read the same whether it is called directly or through a verb.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Callable, Iterable, Iterator, TypeVar

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
  """A config key or value that does not fit the dataclass it is meant for (or the data, or the other
  runs, it names); the message names each field concerned as FIELD_NAME matches it."""


# A field named in a message: its dotted path in backquotes (`input.image_size`), see the module
# docstring. Group 1 is the path.
FIELD_NAME = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)`")


def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
  """(T, True) for `T | None`, else (tp, False)."""
  args = typing.get_args(tp)
  if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
    rest = [a for a in args if a is not type(None)]
    return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
  return tp, False


def to_dict(config: Any) -> Any:
  """JSON-ready nested dict of a dataclass config (tuples become lists)."""
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
  if isinstance(config, (list, tuple)):
    return [to_dict(v) for v in config]
  return config


def _unknown(key: str, cls: type, path: str) -> ConfigError:
  names = [f.name for f in dataclasses.fields(cls)]
  near = difflib.get_close_matches(key, names, n=1)
  hint = f"; did you mean `{path + near[0]}`?" if near else f"; {cls.__name__} has {names}"
  return ConfigError(f"`{path + key}`: no such config key{hint}")


def _convert(value: Any, tp: Any, path: str) -> Any:
  tp, optional = _strip_optional(tp)
  if value is None:
    if optional or tp is Any:
      return None
    raise ConfigError(f"`{path}`: may not be None")
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, dict):
      raise ConfigError(f"`{path}`: needs a mapping for {tp.__name__}, got {value!r}")
    return from_dict(tp, value, path + ".")
  origin = typing.get_origin(tp)
  if origin is tuple:
    args = typing.get_args(tp)
    item = args[0] if args else Any
    return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
  if origin is typing.Literal:
    if value not in typing.get_args(tp):
      raise ConfigError(f"`{path}`={value!r}: must be one of {typing.get_args(tp)}")
    return value
  if tp is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if tp in (int, float, str, bool) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
    raise ConfigError(f"`{path}`={value!r}: must be {tp.__name__}")
  return value


def from_dict(cls: type[ConfigT], values: dict[str, Any], path: str = "") -> ConfigT:
  """`cls` from a (partial) nested dict: missing keys keep their defaults, unknown keys and
  numbers out of range (`check_ranges`) raise. Keys of older records that have since moved
  (`MOVED`) are read at their new place."""
  if not isinstance(values, dict):
    where = f"`{path.rstrip('.')}`" if path else f"a {cls.__name__} record"
    raise ConfigError(f"{where}: must be a mapping, got {values!r}")
  values = _moved(cls, values, path)
  hints = _hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  for key in values:
    if key not in names:
      raise _unknown(key, cls, path)
  config = cls(**{k: _convert(v, hints[k], path + k) for k, v in values.items()})
  if not path:  # the nested parts are checked with their parent, by their full path
    check_ranges(config)
  return config


# Fields that moved since runs were recorded: {old key: new dotted path, relative to the same
# config}; an old key may name a field of a nested record ("model.dtype"). `from_dict` moves an old
# record's key there where the class no longer has the key but has the path's first part, so the
# config.json of an older run still loads (runner.load) and resumes (runner.write_config compares the
# records once both are read through from_dict); `replace` and `override` refuse an old key naming
# where it went.
MOVED: dict[str, str] = {
    # A task config's run fields, now its RunConfig (`config.run`).
    **{name: f"run.{name}" for name in ("num_steps", "eval_every", "checkpoint_every", "log_every",
                                        "train_split", "val_split")},
    # SelfLearningConfig's own test split, now its segmenter's.
    "test_split": "segmenter.run.test_split",
    # The feature network's own artifact folder, now its input's (InputConfig.artifact_dir).
    "artifact_dir": "input.artifact_dir",
    # Each model config's compute dtype, now the run's precision policy (train/precision.py).
    "model.dtype": "run.precision",
}


def _moved(cls: type, values: dict[str, Any], path: str) -> dict[str, Any]:
  """`values` with the keys `MOVED` names (and `cls` no longer has) at their new place (a copy);
  a config the record lacks (`run`) starts from the field's own default, as the old keys had."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  original, hints = values, _hints(cls)
  # Nested records first (a pipeline's segmenter written before RunConfig), so a key moved into
  # them from here joins their migrated fields.
  nested = {}
  for k, v in values.items():
    tp = _strip_optional(hints[k])[0] if k in fields else None
    if isinstance(v, dict) and dataclasses.is_dataclass(tp):
      nested[k] = _moved(tp, v, path + k + ".")
  values = {**values, **nested}
  moved = {k: v for k, v in values.items() if k not in fields and k in MOVED and MOVED[k].split(".")[0] in fields}
  # A field that moved out of a nested record ("model.dtype"): taken out of that record's copy.
  for old, new in MOVED.items():
    head, _, leaf = old.partition(".")
    record = values.get(head)
    if not (leaf and head in fields and isinstance(record, dict) and leaf in record and new.split(".")[0] in fields):
      continue
    tp = _strip_optional(hints[head])[0]
    if dataclasses.is_dataclass(tp) and leaf not in {f.name for f in dataclasses.fields(tp)}:
      values = {**values, head: {k: v for k, v in record.items() if k != leaf}}
      moved[old] = record[leaf]
  if not moved:
    return values
  values = {k: v for k, v in values.items() if k not in moved}
  for key, value in moved.items():
    *parents, leaf = MOVED[key].split(".")
    given = original
    for p in MOVED[key].split("."):
      given = given.get(p) if isinstance(given, dict) else None
    if given is not None:
      raise ConfigError(f"`{path + key}` and `{path + MOVED[key]}` are the same field, given twice")
    node, default = values, None
    for i, p in enumerate(parents):
      default = fields[p].default if i == 0 else getattr(default, p, None)
      if p not in node:
        node[p] = to_dict(default) if dataclasses.is_dataclass(default) else {}
      if not isinstance(node[p], dict):
        raise ConfigError(f"`{path + key}` (now `{path + MOVED[key]}`) cannot join `{path + p}`")
      node[p] = node = dict(node[p])
    node[leaf] = value
  return values


def _refuse_moved(cls: type, paths: Iterable[str]) -> None:
  """Refuses a dotted path that names a field since moved (`MOVED`), saying where it is now (other
  unknown paths are refused later, by name, with the nearest field)."""
  for dotted in paths:
    for old, new in MOVED.items():
      if dotted != old and not dotted.endswith("." + old):
        continue
      now = dotted[:len(dotted) - len(old)] + new
      if _has_path(cls, now) and not _has_path(cls, dotted):
        raise ConfigError(f"config key {dotted!r} has moved: it is now {now!r}")


def _has_path(cls: type, path: str) -> bool:
  try:
    field_type(cls, path)
  except ConfigError:
    return False
  return True


def replace(config: ConfigT, overrides: dict[str, Any]) -> ConfigT:
  """`config` with dotted-path overrides applied (`{"model.features": 32}`); unknown paths and
  numbers out of range (`check_ranges`) raise."""
  _refuse_moved(type(config), overrides)
  nested: dict[str, Any] = {}
  for dotted, value in overrides.items():
    node = nested
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  config = _replace_nested(config, nested, "")
  check_ranges(config)
  return config


def _replace_nested(config: Any, nested: dict[str, Any], path: str) -> Any:
  cls = type(config)
  hints = _hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  changes = {}
  for key, value in nested.items():
    if key not in names:
      raise _unknown(key, cls, path)
    current = getattr(config, key)
    if isinstance(value, dict) and dataclasses.is_dataclass(current):
      changes[key] = _replace_nested(current, value, path + key + ".")
    else:
      changes[key] = _convert(value, hints[key], path + key)
  return dataclasses.replace(config, **changes)


_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


def parse_text(text: str, tp: Any, path: str) -> Any:
  """The value a command-line `text` gives the field of type `tp` at `path`: none / null for an
  optional field; true / false for a bool; comma-separated items for a tuple ("" is empty); a
  number; the text itself for a string. ConfigError naming `path` otherwise."""
  base, optional = _strip_optional(tp)
  if optional and text.strip().lower() in ("none", "null"):
    return None
  if dataclasses.is_dataclass(base):
    raise ConfigError(f"`{path}` is a group of fields: set them one by one "
                      f"({', '.join(f'`{path}.{f.name}`' for f in dataclasses.fields(base))})")
  origin = typing.get_origin(base)
  if origin is tuple:
    args = typing.get_args(base)
    item = _strip_optional(args[0])[0] if args else str
    try:
      return tuple(_parse_scalar(v.strip(), item) for v in text.split(",")) if text else ()
    except ValueError:
      raise ConfigError(f"`{path}`={text!r}: must be comma-separated {getattr(item, '__name__', item)} "
                        "values") from None
  try:
    return _parse_scalar(text, base)
  except ValueError:
    raise ConfigError(f"`{path}`={text!r}: must be {getattr(base, '__name__', base)}") from None


def _parse_scalar(text: str, tp: Any) -> Any:
  """`text` as a bool, int or float where `tp` is one (ValueError if it does not read as one); the
  text itself otherwise."""
  if tp is bool:
    if text.strip().lower() not in _TRUE + _FALSE:
      raise ValueError(text)
    return text.strip().lower() in _TRUE
  if tp is int:
    return int(text)
  if tp is float:
    return float(text)
  return text


def field_type(cls: type, path: str) -> Any:
  """The declared type of the dotted `path` in config class `cls` (unknown paths raise by name)."""
  tp, walked = cls, ""
  for key in path.split("."):
    base, _ = _strip_optional(tp)
    if not dataclasses.is_dataclass(base):
      raise ConfigError(f"`{walked.rstrip('.')}` has no field {key!r}")
    if key not in {f.name for f in dataclasses.fields(base)}:
      raise _unknown(key, base, walked)
    tp, walked = _hints(base)[key], walked + key + "."
  return tp


def override(config: ConfigT, texts: dict[str, str]) -> ConfigT:
  """`config` with command-line overrides applied: {dotted path: text}, each text parsed by the
  field's type (`parse_text`); unknown paths and numbers out of range raise, naming the path."""
  _refuse_moved(type(config), texts)
  return replace(config, {path: parse_text(text, field_type(type(config), path), path)
                          for path, text in texts.items()})


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One scalar field of a nested config: what a command-line flag is generated from."""
  path: str  # dotted, e.g. "model.features"
  type: Any  # int, float, str, bool, a Literal, or tuple[scalar, ...]
  optional: bool
  default: Any
  doc: str
  location: bool = False


def leaves(config: Any, prefix: str = "") -> Iterator[Leaf]:
  """Every scalar (or tuple-of-scalars) field of a config instance, depth first. Tuples of
  dataclasses (e.g. artifact joins) are set in code, not from the command line, and skipped."""
  hints = _hints(type(config))
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    tp, optional = _strip_optional(hints[f.name])
    if dataclasses.is_dataclass(tp):
      yield from leaves(value, prefix + f.name + ".")
      continue
    if typing.get_origin(tp) is tuple:
      args = typing.get_args(tp)
      if args and dataclasses.is_dataclass(args[0]):
        continue
    yield Leaf(prefix + f.name, tp, optional, value, f.metadata.get("doc", ""), f.metadata.get("location", False))


def field(default: Any, doc: str = "", location: bool = False, **kwargs) -> Any:
  """A dataclass field with a one-line description (becomes the flag's help text). `location`:
  the field says where something is (a data folder, another run's workdir, a weights file), not
  what the run computes, so a moved or copied one still resumes (`location_paths`)."""
  return dataclasses.field(default=default, metadata={"doc": doc, "location": location}, **kwargs)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How long and how often a task's run trains, and the splits it reads: every task config's
  `run` (each with its own defaults)."""
  num_steps: int = field(2000, "Training steps.")
  eval_every: int = field(500, "Validate (and checkpoint) every this many steps.")
  checkpoint_every: int | None = field(None, "Checkpoint every this many steps (default: with each evaluation).")
  log_every: int = field(50, "Progress line and TensorBoard scalars every this many steps.")
  train_split: str = field("train", "Split trained on.")
  val_split: str = field("validation", "Split that picks the best checkpoint (\"\": none, keep the last).")
  test_split: str = field("test", "Split scored at the end (as \"test\" in metrics.json).")
  holdout: float = field(0.0, "Hold out this fraction of train_split (stratified by class, fixed by holdout_seed) "
                         "and select the checkpoint on it: train_split and val_split become its two parts "
                         "(explicit TFDS slices, recorded in config.json), so the reported split picks nothing. 0: off.")
  holdout_seed: int = field(0, "Seed of the holdout split (kept fixed across training seeds).")
  precision: str = field("float32", "Numeric precision policy (lesion_jax/train/precision.py): float32, or "
                         "bfloat16 (bfloat16 activations and input images, float32 parameters, logits and "
                         "losses; for accelerators). float16 is refused: it needs dynamic loss scaling.")


def location_paths(config: Any) -> frozenset[str]:
  """Dotted paths of the fields of `config` marked `location=True`."""
  return frozenset(leaf.path for leaf in leaves(config) if leaf.location)


def diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
  """Dotted paths whose values differ between two `to_dict` forms: {path: (old, new)}."""
  out = {}
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out.update(diff(a, b, f"{prefix}{key}."))
    elif a != b:
      out[prefix + key] = (a, b)
  return out


# ----------------------------------------------------------------------------------------------
# Ranges: the one place where every numeric config field is checked, before anything is written
# (from_dict and replace check what they build; Task.check checks a config made in code).
# A field name means one thing in every config of the project (one vocabulary), so ranges are
# declared by name. Every number must be finite; a name not listed must be >= 0.


@dataclasses.dataclass(frozen=True)
class Range:
  low: float | None = 0.0  # None: no lower bound
  high: float | None = None
  low_open: bool = False  # low < value instead of low <= value
  high_open: bool = False

  def holds(self, value: float) -> bool:
    if self.low is not None and (value <= self.low if self.low_open else value < self.low):
      return False
    return self.high is None or (value < self.high if self.high_open else value <= self.high)

  def __str__(self) -> str:
    low = "-inf" if self.low is None else f"{self.low:g}"
    high = "inf" if self.high is None else f"{self.high:g}"
    return f"{'(' if self.low_open or self.low is None else '['}{low}, {high}{')' if self.high_open or self.high is None else ']'}"


AT_LEAST_ONE = Range(1)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1)
ANY = Range(None)

RANGES: dict[str, Range] = {
    **dict.fromkeys((
        "batch_size", "box_fc_features", "checkpoint_every", "depth", "detections",
        "discriminator_features", "eval_every", "expanded_shuffle", "features",
        "folds", "fpn_features", "generator_features", "head_features", "image_size", "latent_dim",
        "levels", "log_every", "mask_features", "max_instances", "max_side", "num_steps",
        "num_superpixels", "perceptual_layers", "rois_per_image", "rpn_batch_per_image",
        "rpn_post_nms_topk_test", "rpn_post_nms_topk_train", "rpn_pre_nms_topk_test",
        "rpn_pre_nms_topk_train", "sample_every", "shuffle_buffer", "size", "test_scales",
        "tta_scales"), AT_LEAST_ONE),
    **dict.fromkeys(("anchor_sizes", "aspect_ratios", "channel_std", "compactness", "shades_of_gray_p",
                     "sigma"), POSITIVE),
    **dict.fromkeys((
        "alpha", "color", "detection_nms_iou", "fusion_weight", "high", "low", "margin",
        "max_hole_fraction", "min_fraction", "roi_fg_fraction", "roi_fg_iou", "roi_margin",
        "rpn_nms_iou"), FRACTION),
    # Probability cut-offs: 0 or 1 would keep every pixel or detection, or none.
    **dict.fromkeys(("threshold", "score_threshold"), Range(0, 1, low_open=True, high_open=True)),
    "fallback_max_fraction": Range(0, 1, low_open=True),
    "fd_samples": Range(2),  # a covariance needs two samples
    # A learning rate above 10 only diverges; 0 trains nothing.
    "learning_rate": Range(0, 10, low_open=True),
    "decay_factor": Range(0, 1, low_open=True),
    "keep_probability": Range(0, 1, low_open=True),
    "min_crop_scale": Range(0, 1, low_open=True),
    "real_label": Range(0, 1, low_open=True),
    **dict.fromkeys(("beta1", "momentum", "label_smoothing", "holdout"), Range(0, 1, high_open=True)),
    **dict.fromkeys(("seed", "holdout_seed", "channel_mean"), ANY),
}


def _numbers(value: Any) -> list[Any]:
  if isinstance(value, bool):
    return []
  if isinstance(value, (int, float)):
    return [value]
  if isinstance(value, (list, tuple)):
    return [v for item in value for v in _numbers(item)]
  return []


def _precision_refusal(value: Any) -> str | None:
  from lesion_jax.train import precision  # pylint: disable=g-import-not-at-top  (it imports this module)
  return precision.refusal(value)


# String fields whose value names one thing of a fixed set, by field name (as RANGES): {name: fn(value)
# -> why the value is refused, or None}.
NAMED: dict[str, Callable[[Any], str | None]] = {
    "precision": _precision_refusal,
}


def check_ranges(config: Any) -> None:
  """Raises ConfigError naming the field (`model.features`=0: FIELD_NAME) for a number that is
  not finite or outside its `RANGES` entry (default: >= 0), or a name its `NAMED` entry refuses."""
  for leaf in leaves(config):
    value = _value_at(config, leaf.path)
    name = leaf.path.rsplit(".", 1)[-1]
    problem = NAMED[name](value) if name in NAMED else None
    if problem:
      raise ConfigError(f"`{leaf.path}`={value!r}: {problem}")
    allowed = RANGES.get(name, Range())
    for number in _numbers(value):
      if not math.isfinite(number):
        raise ConfigError(f"`{leaf.path}`={_show(value)}: must be a finite number")
      if not allowed.holds(number):
        raise ConfigError(f"`{leaf.path}`={_show(value)}: must be in {allowed}")


def _value_at(config: Any, path: str) -> Any:
  for part in path.split("."):
    config = getattr(config, part)
  return config


def _show(value: Any) -> str:
  return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
