"""Flag groups and run bookkeeping shared by the absl entry points (the only place FLAGS live)."""
from __future__ import annotations

import logging as logging_lib
import os
import sys
from typing import Any, Iterable

from absl import flags, logging

import lesion_jax
from lesion_jax import config as config_lib

# The verbs run with the package's runtime defaults (XLA:CPU flags, the compilation cache), set
# before anything computes; `import lesion_jax` alone leaves the process as it was.
lesion_jax.setup_runtime()

FLAGS = flags.FLAGS


class _LibraryInfoFilter(logging_lib.Filter):
  """Drops INFO records from orbax and TFDS internals, which would bury the progress lines."""
  NOISY = (os.sep + "orbax" + os.sep, os.sep + "tensorflow_datasets" + os.sep, "xla_bridge.py")

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return record.levelno > logging_lib.INFO or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs() -> None:
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Multi-host: 'auto' joins when --coordinator_address is set or SLURM / Cloud TPU "
                  "multi-host is detected.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host; auto-detected on TPU/SLURM).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host; auto-detected on TPU/SLURM).")

def init_distributed() -> None:
  """Call first in every main: joins a multi-host run when asked or detected."""
  from lesion_jax.train import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)


def define_workdir_flag() -> None:
  flags.DEFINE_string("workdir", None, "Run directory: config.json, metrics.json, checkpoints/, "
                      "TensorBoard events and figures/ go here. Re-running with the same workdir resumes.")
  flags.mark_flag_as_required("workdir")


def define_config_flags(default: Any, aliases: dict[str, str] | None = None,
                        skip: Iterable[str] = (), auto_aliases: bool = True) -> None:
  """One flag per leaf of the (nested dataclass) config `default`, named by its dotted path
  (`--model.features=32`), with the dataclass default and field doc, plus a short alias for each
  leaf name that is unique in the config (`--features`) and the explicit `aliases`
  ({flag: dotted path}). Defaults therefore live only in the dataclasses."""
  aliases = dict(aliases or {})
  skip = set(skip)
  # Listed under the calling experiment in --help (absl names the main module by its path).
  caller = sys._getframe(1).f_globals.get("__name__", "")  # pylint: disable=protected-access
  module = sys.argv[0] if caller == "__main__" else caller
  all_leaves = [leaf for leaf in config_lib.leaves(default) if leaf.path not in skip]
  names = [leaf.path.rsplit(".", 1)[-1] for leaf in all_leaves]
  for leaf, short in zip(all_leaves, names):
    _define_leaf(leaf, module)
    if (auto_aliases and names.count(short) == 1 and short != leaf.path and short not in FLAGS
        and short not in aliases):
      aliases[short] = leaf.path
  # The short names of fields that moved (config.MOVED) stay flags of their new place where no
  # field has them now: the older verbs' `--dtype=bfloat16` sets run.precision.
  paths = {leaf.path for leaf in all_leaves}
  for old, new in config_lib.MOVED.items():
    short = old.rsplit(".", 1)[-1]
    if auto_aliases and new in paths and short not in names and short not in FLAGS and short not in aliases:
      aliases[short] = new
  for alias, path in aliases.items():
    flags.DEFINE_alias(alias, path, module_name=module)
  _CONFIG_LEAVES.extend(all_leaves)


_CONFIG_LEAVES: list[config_lib.Leaf] = []


def _define_leaf(leaf: config_lib.Leaf, module: str) -> None:
  import typing  # pylint: disable=g-import-not-at-top
  help_text = leaf.doc or leaf.path
  tp = leaf.type
  kw = {"module_name": module}
  if typing.get_origin(tp) is typing.Literal:
    flags.DEFINE_enum(leaf.path, leaf.default, [str(v) for v in typing.get_args(tp)], help_text, **kw)
  elif tp is bool:
    flags.DEFINE_bool(leaf.path, leaf.default, help_text, **kw)
  elif tp is int:
    flags.DEFINE_integer(leaf.path, leaf.default, help_text, **kw)
  elif tp is float:
    flags.DEFINE_float(leaf.path, leaf.default, help_text, **kw)
  elif typing.get_origin(tp) is tuple:
    flags.DEFINE_list(leaf.path, None if leaf.default is None else [str(v) for v in leaf.default], help_text, **kw)
  else:
    flags.DEFINE_string(leaf.path, leaf.default, help_text, **kw)


def config_from_flags(default: Any) -> Any:
  """`default` with every config flag given on the command line applied."""
  overrides = {}
  for leaf in _CONFIG_LEAVES:
    if leaf.path in FLAGS and FLAGS[leaf.path].present:
      value = FLAGS[leaf.path].value
      if isinstance(value, list):
        item = getattr(leaf.type, "__args__", (str,))[0]
        value = tuple(item(v) for v in value)
      overrides[leaf.path] = value
  return config_lib.replace(default, overrides)


def define_augment_flag() -> None:
  flags.DEFINE_bool("augment", True, "Flips, rotation about the lesion centroid, random crops (and "
                    "colour jitter if set); --noaugment switches them all off.")


def without_augmentation(config: Any, path: str = "input.augment") -> Any:
  """`config` with the augmentation at `path` switched off when --noaugment is given."""
  if FLAGS.augment:
    return config
  from lesion_jax.data.augment import AugmentConfig  # pylint: disable=g-import-not-at-top
  return config_lib.replace(config, {path: AugmentConfig.off()})


def define_segmenter_flags() -> None:
  """Every SegmenterConfig field as a flag (the K-means settings also by their KMEANS_FLAGS names,
  --artifact_dir for input.artifact_dir), plus --augment (train_segmenter and
  self_learning)."""
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  define_augment_flag()
  define_config_flags(segmentation.SegmenterConfig(),
                      aliases={"model": "model.name", "optimizer": "optimizer.name",
                               "color_jitter": "input.augment.color",
                               "iterations": "superpixels.iterations",  # kmeans.iterations has it too
                               # manual_masks.* has them too: the input's, as before it existed
                               "dataset": "input.dataset", "data_dir": "input.data_dir", "manual_dir": "input.manual_dir",
                               **{name: f"kmeans.{field}" for name, (field, _) in KMEANS_FLAGS.items()}},
                      skip={"mask_artifacts", "keep_unmatched_masks"})


def segmenter_config_from_flags() -> Any:
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  return without_augmentation(config_from_flags(segmentation.SegmenterConfig()))


def define_tta_flags() -> None:
  """evaluate's and predict's test-time options (None: the run's own)."""
  flags.DEFINE_bool("tta", False, "Test-time augmentation. Segmentation: the map averaged over the four "
                    "horizontal/vertical flips (at each of --tta_scales); classification: the class probabilities "
                    "averaged over the eight flips and quarter turns.")
  flags.DEFINE_list("tta_scales", None, "With --tta: input sides (px) to average over (default: the run's "
                    "--tta_scales, else the model size).")
  flags.DEFINE_bool("fallback", None, "Segmentation: replace catastrophic masks (empty / whole field of view) "
                    "by the map cut at its own threshold (default: the run's own --fallback).")


def with_segmentation_overrides(task: Any, tta_scales: list[str] | None, fallback: bool | None) -> Any:
  """A restored task with evaluate / predict's --tta_scales and --fallback applied (None: the
  run's own), through Task.with_overrides (a task that has no such setting is refused by name)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  changes = {}
  if tta_scales is not None:
    try:
      changes["tta_scales"] = tuple(int(v) for v in tta_scales)
    except ValueError:
      raise app.UsageError(f"--tta_scales={','.join(tta_scales)}: give integer sides in px") from None
  if fallback is not None:
    changes["fallback"] = fallback
  return task.with_overrides(**changes)


def run_directory(workdir: str) -> None:
  """Quiets library logs; the task runner creates `workdir` once the config has passed its
  checks (a refused run leaves nothing behind) and records config.json there."""
  quiet_library_logs()
  logging.info("Run directory %s", workdir)


def print_scores(scores: dict[str, Any]) -> None:
  """One line of the scores; a long text value (a holdout's split expression) is shortened: the
  JSON file the verb wrote keeps it whole."""
  def shown(v: Any) -> str:
    text = f"{v:.4f}" if isinstance(v, float) else str(v)
    return text if len(text) <= 60 else text[:40] + f"...({len(text)} characters)"
  print(" ".join(f"{k}={shown(v)}" for k, v in sorted(scores.items()) if isinstance(v, (int, float, str, bool))))


def checkpoint_flag_value(value: str):
  """--checkpoint: 'best', 'latest' or a step number."""
  from absl import app  # pylint: disable=g-import-not-at-top
  if value.isdigit():
    return int(value)
  if value not in ("best", "latest"):
    raise app.UsageError(f"--checkpoint={value!r}: give 'best', 'latest' or a step number")
  return value


# Failures that are the run's or the user's situation, not a bug: one line on stderr, no traceback.
def _stopping_errors() -> tuple[type[BaseException], ...]:
  from lesion_jax import checkpoint, run_lock  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import runner  # pylint: disable=g-import-not-at-top
  return (checkpoint.CheckpointDamagedError, checkpoint.CheckpointNotFoundError, checkpoint.NonFiniteStateError,
          checkpoint.DiskFullError, run_lock.WorkdirBusyError, runner.RunNotFoundError, runner.base.PredictionUnsupported)


# ----------------------------------------------------------------------------------------------
# The library names config fields in its messages (`input.image_size`: config.FIELD_NAME); the
# user set them with options. Every error a program reports passes through `_fail`, which spells
# each field as the option that sets it on this command line.

_COMMAND_CONFIG: list[Any] = []  # the config this command's --config.<field>=<value> set (the last one registered)


def register_command_config(config: Any) -> None:
  """`config` is the one this command's --config.<field>=<value> options set (a verb's config
  file's, or the restored run's whose evaluation-time fields evaluate changes): errors naming
  its fields name those options."""
  _COMMAND_CONFIG.append(config)


def _names_a_field(config: Any, path: str) -> bool:
  try:
    config_lib.field_type(type(config), path)
  except config_lib.ConfigError:
    return False
  return True


def as_options(message: str) -> str:
  """`message` with each config field it names (`input.image_size`, config.FIELD_NAME) spelled
  as the option that sets it here: the --config.<field> the user typed (even misspelt, for "no
  such key"), an option of the program's own given on the command line (evaluate's --refine, an
  older script's --input.image_size), a field of the command's config (--config.<field>), else
  any option of the program (--workdir). A name that is none of these (a stage's own field inside
  a pipeline's config) keeps the library's spelling, which still names the field."""
  config = _COMMAND_CONFIG[-1] if _COMMAND_CONFIG else None

  def option(match) -> str:
    path = match.group(1)
    if path in CONFIG_OVERRIDES:
      return f"--config.{path}"
    if path in FLAGS and FLAGS[path].present:
      return f"--{path}"
    if config is not None and _names_a_field(config, path):
      return f"--config.{path}"
    if path in FLAGS:
      return f"--{path}"
    return match.group(0)

  return config_lib.FIELD_NAME.sub(option, message)


def _fail(message: str, code: int) -> None:
  program = os.path.basename(sys.argv[0]) if sys.argv else "lesion_jax"
  message = as_options(message)
  logging.error("%s", message)
  sys.stderr.write(f"{program}: error: {message}\n")
  sys.stderr.flush()
  sys.exit(code)


def main_with_usage_errors(main):
  """`main` with config problems (ConfigError: a field, its value and what is wrong) and usage
  errors reported as one line (not absl's page of help), raised before anything is written; a
  preempted run exits with 128 + the signal after its checkpoint; a damaged checkpoint, a diverged
  state, a full disk or a busy workdir end the run with one line naming the path or the step."""
  import functools  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top

  from lesion_jax.data.builders import common as builders_common  # pylint: disable=g-import-not-at-top
  from lesion_jax.train import loop  # pylint: disable=g-import-not-at-top

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (config_lib.ConfigError, builders_common.ManualDataError, app.UsageError) as e:
      _fail(f"{e} (--helpshort lists the flags)", getattr(e, "exitcode", 1) or 1)
    except loop.Preempted as e:
      _fail(str(e), e.exit_code)
    except _stopping_errors() as e:
      _fail(str(e), 1)

  return wrapped


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, except that asking for help is not a failure (absl exits 1 after --help)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    return app.parse_flags_with_usage(argv)
  except SystemExit as e:
    asked = {"--help", "--helpshort", "--helpfull", "--helpxml", "-h", "-?"}
    if e.code == 1 and asked & {a.split("=")[0] for a in argv[1:]}:
      sys.exit(0)
    raise


def run(main, successor: str | None = None) -> None:
  """Every entry point's `app.run`: one-line errors (main_with_usage_errors), help exits 0. An
  older per-task script names its `successor` config file: it still runs, after a notice giving
  the verb's command (kept for one release)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  if successor:
    inner = main

    def main(argv):  # pylint: disable=function-redefined
      program = os.path.splitext(os.path.basename(sys.argv[0]))[0]
      logging.warning("experiments.%s is the older spelling, kept for one release, of: python -m experiments.train "
                      "--config=%s --workdir=... [--config.<field>=<value>] (docs/cli.md)", program, successor)
      return inner(argv)
  app.run(main_with_usage_errors(main), flags_parser=_parse_flags)


# The K-means knobs exposed as flags: flag name → KMeansConfig field (defaults come from there).
KMEANS_FLAGS = {"kmeans_k": ("k", "K-means clusters per image."),
                "kmeans_coord_weight": ("coord_weight", "Weight of pixel coordinates in spatial K-means."),
                "kmeans_hair_filter": ("hair_filter", "Closing radius (fraction of side) erasing hairs; 0 = off."),
                "kmeans_work_size": ("work_size", "Images are clustered at this square size.")}


def define_kmeans_flags(artifact_dir: bool = True) -> None:
  from lesion_jax.artifacts import kmeans  # pylint: disable=g-import-not-at-top
  if artifact_dir:
    flags.DEFINE_string("artifact_dir", None, "Where artifacts live (default: <data_dir>/lesion_jax_artifacts).")
  default = kmeans.KMeansConfig()
  for name, (field_name, help_text) in KMEANS_FLAGS.items():
    value = getattr(default, field_name)
    (flags.DEFINE_integer if isinstance(value, int) else flags.DEFINE_float)(name, value, help_text)


def kmeans_config_from_flags():
  from lesion_jax.artifacts import kmeans  # pylint: disable=g-import-not-at-top
  return kmeans.KMeansConfig(**{field_name: FLAGS[name].value for name, (field_name, _) in KMEANS_FLAGS.items()})


# ----------------------------------------------------------------------------------------------
# The verbs' config files: --config=experiments/configs/<...>.py plus --config.<field>=<value>


CONFIG_OVERRIDES: dict[str, str] = {}  # --config.<dotted field>=<text>, in command-line order


def _parse_flags_and_overrides(argv: list[str]) -> list[str]:
  """absl's parser (`_parse_flags`) for every argument but the --config.<field>=<value>
  overrides, which go to CONFIG_OVERRIDES (applied to the config file's config by its types)."""
  rest = []
  for arg in argv:
    if arg.startswith("--config."):
      key, sep, value = arg[len("--config."):].partition("=")
      if not sep or not key:
        _fail(f"{arg}: give --config.<field>=<value>, e.g. --config.run.num_steps=500", 1)
      CONFIG_OVERRIDES[key] = value
    else:
      rest.append(arg)
  return _parse_flags(rest)


def run_verb(main) -> None:
  """A verb's `app.run`: `run`'s, plus --config.<field>=<value> overrides of its config file."""
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(main_with_usage_errors(main), flags_parser=_parse_flags_and_overrides)


def load_config_file(path: str) -> Any:
  """The typed config a config file's `get_config()` returns (a task's or a pipeline's)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise app.UsageError(f"--config={path}: no such file (the configs are in experiments/configs/)")
  spec = importlib.util.spec_from_file_location(f"lesion_jax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise app.UsageError(f"--config={path}: has no get_config()")
  return module.get_config()


def config_from_file(path: str, overrides: dict[str, str] | None = None) -> Any:
  """The config of `path` with the --config.<field> overrides applied (unknown fields refused by
  name), then the task's defaults that depend on an overridden field (Task.with_dependent_defaults:
  --config.optimizer.name=sgd brings SGD's learning rate, momentum and weight decay unless they are
  overridden too, as the field set in code would)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import base  # pylint: disable=g-import-not-at-top
  overrides = CONFIG_OVERRIDES if overrides is None else overrides
  config = load_config_file(path)
  register_command_config(config)
  try:
    config = config_lib.override(config, overrides)
  except config_lib.ConfigError as e:
    raise app.UsageError(f"--config={path}: {e}") from None
  run = base.for_config(config)
  return run.with_dependent_defaults(config, overrides) if isinstance(run, base.Task) else config
