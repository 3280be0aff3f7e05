"""The task contract: what a pipeline declares, so that one runner (tasks/runner.py) can train,
resume, restore, evaluate and predict for every pipeline.

A task is a class bound to its config (a frozen dataclass, `config_cls`) and registered by name:

    @base.register
    class MyTask(base.Task):
      name = "my_task"
      config_cls = MyConfig
      def init_state(self, rng): ...            # any pytree with an integer `step`
      def train_step(self): ...                 # pure (state, batch, rng) -> (state, metrics)
      def train_batches(self, start_step): ...  # host batches (pytrees), resumable by step
      def eval_batches(self, split): ...        # the split once, padded, with 'weight' and 'id'
      def predict_fns(self): ...                # {"predict": fn(state, batch) -> pytree}
      def per_example(self, batch, outputs, real, kept): ...  # rows of the batch's real examples
      def summarize(self, rows, ids, examples): ...           # Evaluation from every host's rows

The default `evaluate` runs the predict function over `eval_batches(split)`, collects each real
example's rows with `per_example` (or the object `example_accumulator` gives), gathers them from
every host (`gather_examples`) and hands them to `summarize`: a task writes what one example
scores and what the split's summary is, never the loop. A task whose outputs come from elsewhere
(the LIN's sum of several runs' maps, segmentation's scoring against the dataset's own masks)
overrides `outputs_over` or `example_accumulator`, not `evaluate`.

`config.json` records `{"task": name, "config": to_dict(config)}`, so `runner.load(workdir)` gives
the task back and `experiments/evaluate.py` / `predict.py` work on any task's workdir.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Iterable, Iterator, Protocol, Sequence

import jax
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax.eval import inference
from lesion_jax.train import loop, precision, sharding

Batch = dict[str, Any]
_REGISTRY: dict[str, type] = {}  # tasks and pipelines, by name


def register(cls: type["Task"]) -> type["Task"]:
  """Class decorator: makes a task (or a Pipeline) loadable by name from a workdir's config.json."""
  if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
    raise ValueError(f"task name {cls.name!r} is registered twice ({_REGISTRY[cls.name]} and {cls})")
  _REGISTRY[cls.name] = cls
  return cls


def get(name: str) -> type["Task"]:
  import lesion_jax.tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registers)
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


@dataclasses.dataclass
class Evaluation:
  """A task's scores over a split, gathered over every host.

  scores: JSON-ready summary (what metrics.json holds, without the split prefix).
  per_example: arrays with one row per example, in `ids` order (e.g. per-image Jaccard).
  ids: example ids.
  examples: a few host examples for figures (task-defined keys).
  predictions: per-example outputs worth keeping in predictions.json (None: not written).
  """
  scores: dict[str, Any]
  per_example: dict[str, np.ndarray]
  ids: list[str]
  examples: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  predictions: dict[str, Any] | None = None


class PredictionUnsupported(ValueError):
  """A run that cannot predict on a user's photos; the message says why, in one line."""


class Task:
  """Base class of every pipeline's task; see the module docstring for the contract."""
  name: ClassVar[str]
  config_cls: ClassVar[type]
  # Input geometries (InputConfig.geometry) the task maps back; colour constancy where True.
  geometries: ClassVar[tuple[str, ...]] = ("stretch",)
  color_constancy: ClassVar[bool] = False
  # Whether the "predict" outputs are probabilities (per pixel or per image) that an ensemble of
  # runs may average (`jit_predict(..., ensemble=True)`); not where they are instance lists or detections.
  averages_outputs: ClassVar[bool] = False
  # The keys of `predict_images`' records ("mask", "probabilities", "purified", "scores").
  predicts: ClassVar[frozenset[str]] = frozenset()
  # A segmenter: its `predict_images` gives the lesion "mask", so other runs may crop with it.
  makes_masks: ClassVar[bool] = False
  # Config fields a restored run may change for evaluation or prediction (`with_overrides`):
  # how its outputs are post-processed or what it reads at test time, never what it learnt.
  evaluation_overrides: ClassVar[frozenset[str]] = frozenset()
  # Batch keys of the model's input images: sent to the device in the precision policy's input
  # dtype (`host_inputs`). Not the targets: a task whose input is also its target (the inpainter)
  # lists none.
  input_keys: ClassVar[tuple[str, ...]] = ("image",)

  def __init__(self, config: Any):
    if not isinstance(config, self.config_cls):
      raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
    self.config = config

  # --- what every task declares -------------------------------------------------------------
  def init_state(self, rng: jax.Array) -> Any:
    raise NotImplementedError

  def warm_start(self, state: Any) -> Any:
    """The state training starts from: `init_state`'s with the weights a run brings from elsewhere
    (a pretrained file, another run's checkpoint). Only training calls it, so restoring a finished
    run never needs those sources again."""
    return state

  def train_step(self) -> Callable:
    raise NotImplementedError

  def train_batches(self, start_step: int) -> Iterator[Batch]:
    raise NotImplementedError

  def eval_batches(self, split: str) -> Iterator[Batch]:
    raise NotImplementedError

  def predict_fns(self) -> dict[str, Callable]:
    """Pure `fn(state, batch) -> outputs` by name; "predict" is the default one."""
    raise NotImplementedError

  def per_example(self, batch: Batch, outputs: Any, real: np.ndarray, kept: "Kept") -> dict[str, np.ndarray]:
    """Rows (arrays, one row per entry of `real`) of the real examples of one host batch, given
    the predict function's host `outputs`; figure examples go to `kept`."""
    raise NotImplementedError

  def summarize(self, rows: dict[str, np.ndarray], ids: list[str], examples: dict[str, np.ndarray]) -> Evaluation:
    """The Evaluation of a split from every host's rows (in `ids` order) and this host's examples."""
    raise NotImplementedError

  def evaluate(self, state: Any, split: str, mesh: jax.sharding.Mesh,
               predict: Callable | None = None, keep_examples: int = 0) -> Evaluation:
    """Scores `state` on `split` (every host's share of it), keeping up to `keep_examples` host
    examples for figures."""
    predict = predict or self.jit_predict(state, mesh)
    accumulator = self.example_accumulator(split)
    rows, ids, examples = gather_examples(self.outputs_over(state, split, mesh, predict), accumulator,
                                          keep_examples)
    return self.summarize(rows, ids, examples)

  def outputs_over(self, state: Any, split: str, mesh: jax.sharding.Mesh, predict: Callable
                   ) -> Iterable[tuple[Batch, Any]]:
    """(host batch, host outputs) over `split` once, as `evaluate` scores them."""
    return inference.predict_over(predict, state, self.eval_batches(split), mesh, self.host_inputs)

  def example_accumulator(self, split: str) -> "Accumulator":
    """What collects the rows of one evaluation of `split`: `per_example`'s, batch after batch."""
    return ExampleRows(self.per_example)

  # --- defaults a task may override ---------------------------------------------------------
  @functools.cached_property
  def builder(self):
    """The TFDS builder of `config.input`, prepared on first use."""
    from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
    c = self.config.input
    return pipeline.get_builder(c.dataset, c.data_dir, c.manual_dir)

  @property
  def seed(self) -> int:
    return self.config.input.seed

  @property
  def policy(self) -> precision.Policy:
    """The run's precision policy (`run.precision`): the models' compute dtype, the host inputs'."""
    return precision.policy(self.config.run.precision)

  def host_inputs(self, batch: Batch) -> Batch:
    """A host batch as it goes to the device: its `input_keys` images in the policy's input dtype
    (training, evaluation and prediction place their batches through it)."""
    return self.policy.host_inputs(batch, self.input_keys)

  @property
  def batch_size(self) -> int:
    return self.config.input.batch_size

  @property
  def val_split(self) -> str:
    """Split that picks the best checkpoint; "" trains without validation (latest = best)."""
    return self.config.run.val_split

  def best_metric(self) -> tuple[str, str] | None:
    """(validation metric, "max" | "min") ranking checkpoints; None keeps the latest."""
    return None

  def loop_config(self) -> loop.LoopConfig:
    best = self.best_metric() if self.val_split else None
    c = self.config
    return loop.LoopConfig(num_steps=c.run.num_steps, batch_size=self.batch_size, eval_every=c.run.eval_every,
                           log_every=c.run.log_every, checkpoint_every=c.run.checkpoint_every,
                           best_metric=best[0] if best else None, best_mode=best[1] if best else "max")

  def validate(self, state: Any, mesh: jax.sharding.Mesh, predict: Callable) -> dict[str, float]:
    """Validation metrics (logged, stored with the checkpoint, ranking it) on `val_split`."""
    return self.validation_metrics(self.evaluate(state, self.val_split, mesh, predict))

  def validation_metrics(self, evaluation: Evaluation) -> dict[str, float]:
    """What the loop logs (and stores with the checkpoint) from a validation Evaluation."""
    return {f"val/{k}": float(v) for k, v in evaluation.scores.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "num_images"}

  def check(self, mesh: jax.sharding.Mesh, extra_splits: Sequence[tuple[str, str]] = ()) -> None:
    """Refuses, before anything is written, a config the run would fail on later: numbers out of
    range (config.check_ranges), the batch size, and every split the run will read (`extra_splits`:
    (the config field that names it, split) pairs). Raises ConfigError naming the field.
    Tasks extend it with their own checks (call super)."""
    c = self.config
    config_lib.check_ranges(c)  # every number of the config, in the one place ranges are declared
    try:
      sharding.check_batch_size(self.batch_size, mesh)
    except ValueError as e:
      raise config_lib.ConfigError(f"`input.batch_size`={self.batch_size}: {e}") from None
    data = getattr(c, "input", None)
    if data is not None and getattr(data, "geometry", "stretch") not in self.geometries:
      raise config_lib.ConfigError(f"`input.geometry`={data.geometry!r}: a {self.name!r} run takes "
                                   f"{' or '.join(self.geometries)}")
    if data is not None and getattr(data, "color_constancy", "none") != "none" and not self.color_constancy:
      raise config_lib.ConfigError(f"`input.color_constancy`={data.color_constancy!r}: not supported by a {self.name!r} run")
    splits = [("run.train_split", c.run.train_split)] + ([("run.val_split", c.run.val_split)] if c.run.val_split else [])
    for field, split in [*splits, *extra_splits]:
      if split:  # "": nothing scored there
        check_split(self.builder, split, field)

  @classmethod
  def with_dependent_defaults(cls, config: Any, given: Iterable[str]) -> Any:
    """`config` (this task's) once fields were set by dotted path (`given`, e.g. a command line's
    overrides of a config file): the defaults that depend on a given field's value (SGD's learning
    rate where `optimizer.name` became sgd) re-derived for the fields not given themselves, so an
    override means what the same field set in code would. The default: no such defaults."""
    del given
    return config

  def with_overrides(self, **changes: Any) -> "Task":
    """This run with evaluation-time settings changed, checked (`check_overrides`): the one way
    evaluate, predict, lesion crops and the report scripts change a restored run. Only the fields
    the task declares in `evaluation_overrides` may change (ConfigError naming the others)."""
    if not changes:
      return self
    refused = sorted(set(changes) - self.evaluation_overrides)
    if refused:
      allowed = sorted(self.evaluation_overrides) or "none"
      raise config_lib.ConfigError(f"`{refused[0]}`: a {self.name!r} run cannot change {refused} after training "
                                   f"(it may change: {allowed})")
    task = type(self)(config_lib.replace(self.config, changes))
    task.check_overrides()
    return task

  def check_overrides(self) -> None:
    """Checks the fields of `evaluation_overrides` (called by `check` and `with_overrides`)."""

  # --- before and after training, and on a user's photos ------------------------------------
  def prepare(self, splits: Sequence[str]) -> "Task":
    """This task with what its run reads built first, for `splits` (lesion crops, purified images,
    K-means pseudo-masks, input statistics, superpixels: stored once as artifacts, so a re-run
    finds them). `runner.run` calls it after `check` and before training; the returned task's
    config is what config.json records. The default reads the dataset as it is."""
    del splits
    return self

  def fit_post_hoc(self, state: Any, workdir: str, mesh: jax.sharding.Mesh) -> "Task":
    """This task with what its run fits once the network is trained, on the selection split
    (`val_split`, never the reported one), and keeps beside its checkpoints in `workdir` (a
    classifier's softmax temperature); `runner.run` calls it between training and scoring the
    final splits, so they are scored with it. The default fits nothing."""
    del state, workdir, mesh
    return self

  def with_post_hoc(self, workdir: str, which: Any = "best", predict: str = "predict") -> "Task":
    """This task with what `fit_post_hoc` kept in `workdir` for its checkpoint `which` and predict
    function `predict` (the one way a restored run gets it: `runner.predictor`, evaluate); as
    configured where nothing was fitted, or not for that checkpoint."""
    del workdir, which, predict
    return self

  def after_training(self, state: Any, workdir: str, mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """What a run makes from its final (best) state once scored (e.g. a GAN's generated images);
    returns metrics to add to metrics.json."""
    del state, workdir, mesh
    return {}

  def check_predict(self) -> None:
    """Refuses (PredictionUnsupported), before any photo is read or any file written, a run whose
    predictions cannot be made (e.g. a classifier whose source run is gone)."""
    if not self.predicts:
      self.predict_images(None, [])

  def predict_images(self, state: Any, images: Sequence[np.ndarray], predict: str = "predict"
                     ) -> list[dict[str, Any]]:
    """One record per uint8 RGB image (any size): what "predict on a user's photo" means for this
    task, replaying what the run read (its crops, its purification). Record keys by kind:
    "mask" (bool, the image's own height x width), "probabilities" (one per `class_names`),
    "purified" (uint8 RGB: the photo with its occlusions filled), "scores" ({name: float}); the
    keys a task gives are its `predicts`. A task that cannot
    predict on photos raises PredictionUnsupported with the one-line reason."""
    del state, images, predict
    raise PredictionUnsupported(f"a {self.name!r} run does not predict on photos")

  @property
  def stratify_key(self) -> str | None:
    """The class feature a holdout split is stratified by (None: the dataset's own, data/selection.py)."""
    return None

  # --- cross-validation (runner.cross_validate), for a task whose `folds` > 1 -------------------
  # Scores averaged over folds (mean and std) beside the pooled held-out scores.
  summary_keys: ClassVar[tuple[str, ...]] = ()

  @property
  def folds(self) -> int:
    """k of k-fold cross-validation over the train split; 1: an ordinary run."""
    return 1

  def with_splits(self, train_split: str, val_split: str) -> "Task":
    """The run of one fold: trained on `train_split`, validated on the held-out `val_split`."""
    raise NotImplementedError(f"task {self.name!r} does not cross-validate")

  def pooled(self, evaluations: list[Evaluation]) -> Evaluation:
    """One Evaluation of every fold's held-out predictions."""
    raise NotImplementedError(f"task {self.name!r} does not cross-validate")

  def hooks(self, workdir: str, mesh: jax.sharding.Mesh) -> Sequence[loop.PeriodicHook]:
    return ()

  def final_splits(self, test_split: str) -> list[tuple[str, str]]:
    """(metrics prefix, split) scored at the end of a run into metrics.json (test_split "": none,
    e.g. a self-learned segmenter of a mask-less archive, scored later on another)."""
    return [("test", test_split)] if test_split else []

  def write_figures(self, evaluation: Evaluation, fig_dir: str, prefix: str) -> None:
    """Figures of one evaluation (overlays, ROC, ...) into `fig_dir`, files named by `prefix`."""

  def example_input(self, image: np.ndarray) -> Batch:
    """A model input example from one uint8 RGB image, preprocessed exactly as in training (for
    `runner.predict_examples`); a task whose model takes more than the image overrides it."""
    from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
    data = self.config.input
    return {"image": pipeline.preprocess_image(image, data.image_size, **pipeline.image_prep(data))}

  # --- helpers -------------------------------------------------------------------------------
  def jit_predict(self, state: Any, mesh: jax.sharding.Mesh, name: str = "predict",
                  ensemble: bool = False) -> Callable:
    """The jitted predict function `name`. With `ensemble`, `state` is a tuple of states (runs of
    this task's configuration, e.g. other seeds) and the outputs are their mean."""
    fns = self.predict_fns()
    if name not in fns:
      raise ValueError(f"task {self.name!r} has no predict function {name!r}; it has {sorted(fns)}")
    fn = fns[name]
    if ensemble:
      if not self.averages_outputs:
        raise ValueError(f"task {self.name!r}: its predictions cannot be averaged over an ensemble")
      fn = averaged_over_states(fn)
    return sharding.jit_predict_step(fn, state, mesh)

  def describe(self) -> dict[str, Any]:
    """What config.json records."""
    return {"task": self.name, "config": config_lib.to_dict(self.config)}


class Pipeline:
  """A run made of runs: the multi-run pipelines (two-stage, self-learning, the LIN = DR + DM
  FCRNs, ...). Registered by name like a task (`@base.register`), so `runner.load(workdir)` opens
  its config.json too; each stage is an ordinary task run in a subfolder of the pipeline's
  workdir, so evaluate, predict and resume work on a stage as on any run.

      @base.register
      class MyPipeline(base.Pipeline):
        name = "my_pipeline"
        config_cls = MyPipelineConfig
        def run(self, workdir): ...        # trains every stage (resumable), writes metrics.json
        def stages(self, workdir): ...     # {stage name: its run's workdir}
        def predictor(self, workdir, predict): ...  # (task, state) that predicts on a user's photos
  """
  name: ClassVar[str]
  config_cls: ClassVar[type]

  def __init__(self, config: Any):
    if not isinstance(config, self.config_cls):
      raise TypeError(f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config).__name__}")
    self.config = config

  def run(self, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) every stage into `workdir`; returns (and writes) the pipeline's metrics."""
    raise NotImplementedError

  def stages(self, workdir: str) -> dict[str, str]:
    """{stage name: workdir of its run}, in the order they run."""
    raise NotImplementedError

  def predictor(self, workdir: str, predict: str = "predict") -> tuple[Task, Any]:
    """(task, state) whose `predict_images(..., predict=predict)` is the pipeline's prediction on a
    user's photos (a stage's run, with what it fitted for `predict`, or a task combining several
    stages' states); PredictionUnsupported otherwise."""
    raise PredictionUnsupported(f"a {self.name!r} pipeline does not predict on photos")

  def describe(self) -> dict[str, Any]:
    return {"task": self.name, "config": config_lib.to_dict(self.config)}


def averaged_over_states(predict_step: Callable) -> Callable:
  """`predict_step(state, batch)` averaged over a tuple of states, leaf by leaf, in one program."""
  def predict(states: tuple[Any, ...], batch: Batch) -> Any:
    outputs = [predict_step(state, batch) for state in states]
    return jax.tree.map(lambda *xs: sum(xs) / len(xs), *outputs)
  return predict


def from_record(record: dict[str, Any], where: str = "config.json") -> Task | Pipeline:
  """The task a config.json record describes; unknown keys are errors naming the key."""
  if "task" not in record or "config" not in record:
    raise ValueError(f"{where} has no 'task'/'config' entries: it was not written by a lesion_jax "
                     "task run (runs made before the task runner need retraining)")
  cls = get(record["task"])
  try:
    return cls(config_lib.from_dict(cls.config_cls, record["config"]))
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f"{where}: {e}") from e


def for_config(config: Any) -> "Task | Pipeline":
  """The registered task or pipeline whose config class `config` is, bound to it (how a config file's
  `get_config()` becomes a run)."""
  import lesion_jax.tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registers)
  matches = [cls for cls in _REGISTRY.values() if cls.config_cls is type(config)]
  if len(matches) != 1:
    raise config_lib.ConfigError(f"a {type(config).__name__} is the config of "
                                 f"{[m.name for m in matches] or 'no registered task or pipeline'}")
  return matches[0](config)


def check_split(builder, split: str, field: str) -> None:
  """A TFDS split string (`train`, `train[:80%]`, `train+validation`) the builder can read; else
  ConfigError naming the config `field` that gave it."""
  try:
    builder.info.splits[split].num_examples  # pylint: disable=expression-not-assigned
  except (KeyError, ValueError, AssertionError) as e:
    raise config_lib.ConfigError(
        f"`{field}`={split!r}: {builder.info.full_name} has no such split (its splits: "
        f"{sorted(builder.info.splits)}; {e})") from None


def decode_ids(ids: np.ndarray) -> list[str]:
  return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


# ----------------------------------------------------------------------------------------------
# The evaluation loop every task shares


class Kept:
  """A few of this host's examples, kept for figures (`Evaluation.examples`): by default the first
  `limit` real examples the host reads (`wants`); a task may choose others (e.g. a few per class).
  Each `add` appends one example's arrays; `stacked` gives one array per key."""

  def __init__(self, limit: int):
    self.limit = limit
    self.seen = 0  # real examples of this host before the current batch
    self.lists: dict[str, list] = {}

  def wants(self, j: int = 0) -> bool:
    """Whether the current batch's `j`-th real example is among the host's first `limit`."""
    return self.seen + j < self.limit

  def add(self, **arrays: Any) -> None:
    for k, v in arrays.items():
      self.lists.setdefault(k, []).append(v)

  def stacked(self) -> dict[str, np.ndarray]:
    return {k: np.stack(v) for k, v in self.lists.items()}


class Accumulator(Protocol):
  """Collects one host's rows of an evaluation, batch by batch (`add`, with the indices of the
  batch's real examples), then gives them (`rows`: arrays of one row per real example, in order).
  A task whose scoring keeps state between batches (a stateful scorer, running sums) implements it;
  the others write `per_example` and get `ExampleRows`."""

  def add(self, batch: Batch, outputs: Any, real: np.ndarray, kept: Kept) -> None: ...

  def rows(self) -> dict[str, np.ndarray]: ...


class ExampleRows:
  """The default accumulator: `per_example(batch, outputs, real, kept)`'s rows, concatenated."""

  def __init__(self, per_example: Callable[[Batch, Any, np.ndarray, Kept], dict[str, np.ndarray]]):
    self.per_example = per_example
    self.parts: list[dict[str, np.ndarray]] = []

  def add(self, batch: Batch, outputs: Any, real: np.ndarray, kept: Kept) -> None:
    self.parts.append(self.per_example(batch, outputs, real, kept))

  def rows(self) -> dict[str, np.ndarray]:
    """{} where no batch came (the task's `summarize` decides what an empty split scores)."""
    return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]} if self.parts else {}


def gather_examples(outputs: Iterable[tuple[Batch, Any]], accumulator: Accumulator | Callable,
                    keep_examples: int = 0) -> tuple[dict[str, np.ndarray], list[str], dict[str, np.ndarray]]:
  """(rows, ids, examples) of an evaluation: `accumulator` (an Accumulator, or a `per_example`
  function) collects the rows of the real examples (weight > 0) of each (host batch, host outputs);
  each host scored its own shard of the split, so rows and ids are then gathered from every host,
  in host order. `examples`: this host's kept examples (its first `keep_examples`, unless the task
  chooses its own), for figures."""
  acc = accumulator if hasattr(accumulator, "add") else ExampleRows(accumulator)
  kept = Kept(keep_examples)
  ids: list[str] = []
  for batch, out in outputs:
    real = np.flatnonzero(batch["weight"] > 0)
    acc.add(batch, out, real, kept)
    ids.extend(decode_ids(batch["id"][real]))
    kept.seen += len(real)
  rows = acc.rows()  # {} on every host alike: each host reads the same number of batches
  return sharding.allgather_rows(rows) if rows else rows, sharding.allgather_strings(ids), kept.stacked()
