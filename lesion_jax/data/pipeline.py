"""tf.data input pipelines: TFDS split → shuffle → preprocessing ops → batch → numpy.

What happens to each example is an op list (lesion_jax.data.ops: decode, resize, augment, ...;
`ops.segmentation_ops` / `ops.classification_ops` for the two tasks); this module reads splits,
shuffles, seeds and batches: `train_stream` / `eval_stream` (tf.data) and `train_iterator` /
`eval_iterator` (numpy, the latter padded to full batches).

Training streams are a pure function of (seed, step): epoch e is the split shuffled with the seed
seed·1_000_003 + e, and example i of the stream is preprocessed with the stateless seed
(seed, i) (on host p > 0 of a multi-host run, (process_stream_seed(seed), i): hosts augment
differently). `train_iterator(config, ops, start_step=s)` therefore resumes exactly where an
interrupted run stopped, and the same seed always gives the same batches.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lesion_jax.config import ConfigError, field
from lesion_jax.data import batching, ops
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.data.batching import pad_batch  # numpy only (also imported from here)
from lesion_jax import data as data_lib

data_lib.hide_accelerators_from_tensorflow()  # TensorFlow is for input only

# The dataset functions here have no Python control flow on tensors: AutoGraph has nothing to
# convert, and its attempts only print warnings about lambdas.
tf.autograph.set_verbosity(0)
_plain = tf.autograph.experimental.do_not_convert


LESION_DATASETS = ("synthetic_lesions", "isic2016", "isic2017", "isic2018", "ph2", "ham10000", "isic2017_features",
                   "isic2018_features")


@dataclasses.dataclass(frozen=True)
class ArtifactJoin:
  """Replace feature `feature` of every example by the PNG artifact stored for its id in
  `directory` (an `ArtifactStore.directory`): pseudo-masks instead of ground truth, lesion crops
  instead of images."""
  feature: str
  directory: str
  drop_flagged: bool = False  # leave out examples whose artifact record says "uncertain"
  # Examples without an artifact keep their own feature (manual masks beside pseudo-masks);
  # otherwise a missing artifact is an error.
  keep_unmatched: bool = False


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """What to read, and the shape and augmentation a task's op list gives it. `dataset` is a TFDS
  name, optionally with a config (`synthetic_lesions`, `synthetic_lesions/s128`, `isic2017`).
  train_stream / eval_stream read the dataset fields, batch_size, seed, shuffle_buffer and joins;
  image_size and augment are read by the tasks when they build their op lists."""
  dataset: str = field("synthetic_lesions", "TFDS dataset name[/config], e.g. synthetic_lesions, "
                       "synthetic_lesions/s128, isic2017.")
  data_dir: str | None = field(None, "TFDS data directory (default: ~/tensorflow_datasets).", location=True)
  manual_dir: str | None = field(None, "Folder with the hand-downloaded archive (real datasets).", location=True)
  artifact_dir: str | None = field(None, "Where artifacts the run reads are stored (lesion crops, purified images, "
                                   "pseudo-masks, superpixels; default: <data_dir>/lesion_jax_artifacts).", location=True)
  image_size: int = field(64, "Images are resized to image_size x image_size.")
  geometry: str = field("stretch", "How an image becomes a square: stretch (resize, the papers') or "
                        "letterbox (keep the aspect ratio, pad with black; maps are cut back before scoring).")
  color_constancy: str = field("none", "Colour correction of every input: none or shades_of_gray "
                               "(Finlayson and Trezzi's Shades of Gray, as ISIC winners use).")
  shades_of_gray_p: float = field(6.0, "The Shades of Gray exponent (6: the ISIC winners'; 1: Grey World).")
  batch_size: int = field(16, "Global batch size (split across devices).")
  seed: int = field(0, "Seed for initialisation, shuffling and augmentation.")
  augment: AugmentConfig = AugmentConfig()
  shuffle_buffer: int = field(4096, "Shuffle buffer (encoded examples).")
  joins: tuple[ArtifactJoin, ...] = ()  # artifacts joined by id (set by the tasks, not by flags)

  def artifact_root(self) -> str:
    """The folder artifacts of this input live under: `artifact_dir`, or <data_dir>/lesion_jax_artifacts."""
    from lesion_jax.artifacts import store  # pylint: disable=g-import-not-at-top
    return self.artifact_dir or store.default_root(self.data_dir)


def get_builder(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                prepare: bool = True, field: str = "input.dataset") -> tfds.core.DatasetBuilder:
  """The TFDS builder for `name`, prepared on first use (the synthetic set renders itself; the
  real archives read `manual_dir`). An unknown name is a ConfigError naming `field`, the config
  field that gave it."""
  import lesion_jax.data.builders  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    ours = ", ".join(LESION_DATASETS)
    raise ConfigError(f"`{field}`={name!r}: no such dataset (this package's: {ours}; any TFDS name "
                      "also works)") from None
  if prepare and not _is_prepared(builder):
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=download_config)
  return builder


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  try:
    return bool(builder.info.splits)
  except Exception:  # pylint: disable=broad-except
    return False


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  return builder.info.splits[split].num_examples


def _image_keys(builder: tfds.core.DatasetBuilder) -> list[str]:
  return [k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Image)]


def read_split(builder: tfds.core.DatasetBuilder, split: str, per_process: bool = True,
               joins: tuple[ArtifactJoin, ...] = ()) -> tf.data.Dataset:
  """Examples of `split` in a fixed order with images still PNG/JPEG-encoded (decoded later, after
  shuffling and skipping, so those stay cheap), artifacts joined by id. With several hosts each
  reads its own shard."""
  if per_process and jax.process_count() > 1:
    split = tfds.split_for_jax_process(split)
  decoders = {k: tfds.decode.SkipDecoding() for k in _image_keys(builder)}
  ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False,
                          read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1))
  for join in joins:
    ds = join_artifact(ds, join, split)
  return ds


def _record(directory: str, image_id: str) -> dict[str, Any]:
  from lesion_jax import io  # pylint: disable=g-import-not-at-top
  from lesion_jax.artifacts import store  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, store.safe_name(image_id) + ".json")
  return io.read_json(path) if os.path.exists(path) else {}


def join_artifact(ds: tf.data.Dataset, join: ArtifactJoin, split: str) -> tf.data.Dataset:
  """Swaps `join.feature` for the artifact file `<directory>/<safe id>.png` of each example.
  Every id must have its artifact (a missing one is reported up front with the command to run),
  unless `join.keep_unmatched`: then examples without one keep their own feature."""
  from lesion_jax.artifacts import store  # pylint: disable=g-import-not-at-top
  ids = [i.decode() for i in ds.map(_plain(lambda ex: ex["id"])).as_numpy_iterator()]
  missing = [i for i in ids if not os.path.exists(os.path.join(join.directory, store.safe_name(i) + ".png"))]
  if missing and not join.keep_unmatched:
    raise FileNotFoundError(
        f"{len(missing)} of {len(ids)} examples of split {split!r} have no artifact in "
        f"{join.directory} (first: {missing[:3]}); run experiments.annotate for this split first")
  if missing and join.feature not in ds.element_spec:
    raise ValueError(f"split {split!r} has no {join.feature!r} feature to keep for the {len(missing)} examples "
                     f"with no artifact in {join.directory} (first: {missing[:3]})")
  prefix = join.directory.rstrip("/") + "/"
  if join.drop_flagged:
    flagged = [i for i in ids if _record(join.directory, i).get("uncertain")]
    if len(flagged) == len(ids):
      raise ValueError(f"every artifact of split {split!r} in {join.directory} is flagged uncertain")
    if flagged:
      table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(tf.constant(flagged), tf.ones(len(flagged), tf.int32)), 0)
      ds = ds.filter(_plain(lambda ex: table.lookup(ex["id"]) == 0))
      ds = ds.apply(tf.data.experimental.assert_cardinality(len(ids) - len(flagged)))

  if missing:  # keep_unmatched: only the examples with an artifact are swapped
    has_artifact = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(missing), tf.zeros(len(missing), tf.int32)), 1)
  else:
    has_artifact = None

  def swap(example):
    name = tf.strings.regex_replace(example["id"], store.UNSAFE_PATTERN, "_")
    if has_artifact is None:
      return dict(example, **{join.feature: tf.io.read_file(prefix + name + ".png")})
    value = tf.cond(has_artifact.lookup(example["id"]) == 1, lambda: tf.io.read_file(prefix + name + ".png"),
                    lambda: example[join.feature])
    return dict(example, **{join.feature: value})

  return ds.map(_plain(swap), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def normalize_image(image01):
  """[0, 1] → [-1, 1]; the single definition shared by training, evaluation and predict."""
  return ops.normalize_image(image01)


def resize_image(image_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, 3) → float32 [0, 1] (size, size, 3), area-preserving (antialiased) bilinear."""
  return ops.resize_image_tensor(image_uint8, size)


def resize_mask(mask_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, 1) with values {0, 255} (or {0, 1}) → float32 {0, 1} (size, size, 1)."""
  return ops.resize_mask_tensor(mask_uint8, size)


def preprocess_image(image_uint8, size: int, geometry: str = "stretch", color_constancy: str = "none",
                     p: float = 6.0) -> np.ndarray:
  """Model input for one uint8 RGB image (numpy): exactly what the pipelines feed the model
  (`ops.image_ops` with the same geometry and colour constancy, then [-1, 1])."""
  example = ops.chain(ops.image_ops(size, geometry, color_constancy, p))(
      {"image": tf.convert_to_tensor(image_uint8)}, tf.zeros(2, tf.int64))
  return normalize_image(example["image"]).numpy()


def image_prep(config: InputConfig) -> dict[str, Any]:
  """The keyword arguments of ops.image_ops / preprocess_image that `config` sets."""
  return {"geometry": config.geometry, "color_constancy": config.color_constancy, "p": config.shades_of_gray_p}


def _epochs(base: tf.data.Dataset, buffer: int, seed: int, start_epoch: int = 0) -> tf.data.Dataset:
  """Endless stream of `base`, reshuffled each epoch with a seed of (seed, epoch)."""

  def epoch(e):
    return base.shuffle(max(1, buffer), seed=seed * 1_000_003 + e, reshuffle_each_iteration=False)

  return tf.data.Dataset.range(start_epoch, 2 ** 62).flat_map(epoch)


def num_classes(builder: tfds.core.DatasetBuilder, label_key: str) -> int:
  return builder.info.features[label_key].num_classes


def _label_counts(ds: tf.data.Dataset, label_key: str, classes: int) -> np.ndarray:
  """Examples of each class of `label_key` in `ds` (one pass over the labels only)."""
  labels = np.fromiter(ds.map(_plain(lambda ex: ex[label_key])).as_numpy_iterator(), np.int64)
  return np.bincount(labels, minlength=classes)


def process_stream_seed(seed: int, process_index: int | None = None) -> int:
  """The seed of process `process_index`'s (default: this one's) preprocessing stream.

  Every host's stream has the same positions, so without the process in the seed host p would
  augment its i-th example exactly as host 0 augments its own i-th. Process 0 keeps `seed`
  itself, so every single-host run, and process 0 of a multi-host one, draws bit for bit what it
  drew before hosts were told apart; only process p > 0 folds p in (an int64 mix of (seed, p))."""
  p = jax.process_index() if process_index is None else process_index
  if p == 0:
    return seed
  mixed = np.random.SeedSequence([seed % 2 ** 63, p]).generate_state(1, np.uint64)[0]
  return int(mixed >> np.uint64(1))  # fits tf.int64


def _preprocessed(ds: tf.data.Dataset, preprocess: ops.OpLike, seed: int,
                  builder: tfds.core.DatasetBuilder) -> tf.data.Dataset:
  """`ds` of (position, example) through `preprocess`, each example seeded with
  (process_stream_seed(seed), position): (seed, position) on one host."""
  try:  # ops check their inputs while tf.data traces them, i.e. here
    return ops.apply(ds, preprocess, stream_seed=process_stream_seed(seed))
  except ops.MissingFeatureError as e:
    raise ops.MissingFeatureError(f"dataset {builder.info.full_name}: {e}") from None


def extra_examples(records: list[dict[str, Any]], keys: tuple[str, ...]) -> tf.data.Dataset:
  """Examples from outside the TFDS split (generated images), in the layout `read_split` gives:
  each record has 'id', 'image' (PNG bytes) and the int class features in `keys`."""
  columns = {"id": tf.constant([r["id"] for r in records], tf.string),
             "image": tf.constant([r["image"] for r in records], tf.string),
             **{k: tf.constant([int(r[k]) for r in records], tf.int64) for k in keys}}
  return tf.data.Dataset.from_tensor_slices(columns)


def train_stream(config: InputConfig, preprocess: ops.OpLike, split: str = "train", start_step: int = 0,
                 builder: tfds.core.DatasetBuilder | None = None,
                 balance_key: str | None = None, expanded_shuffle: int = 0,
                 extra: tf.data.Dataset | None = None) -> tf.data.Dataset:
  """An endless stream of batches of `preprocess`ed training examples, starting at `start_step`.

  Uses config's dataset, data_dir, manual_dir, batch_size (global), seed, shuffle_buffer and
  joins; the op list decides everything else (image_size, augment, task, mask_key, label_key are
  not read). Example i of the stream (0 = the first of step 0) gets the stateless seed
  (seed, i), so the stream is a pure function of (seed, step). With a one-to-many op the stream
  counts its outputs: resuming then re-runs the preprocessing of the skipped part (exact, slower).

  `balance_key` (a ClassLabel feature) samples every class equally often (each class's examples
  cycle in their own shuffled epochs), for the skewed benign/malignant ratios of dermoscopy archives.
  `extra` (from `extra_examples`) adds examples to the split before shuffling (the split is then
  cut to the extra examples' keys, which must cover what `preprocess` reads).
  `expanded_shuffle` > 0 shuffles the outputs of a one-to-many op in a buffer of that many
  (decoded) examples, seeded, so that e.g. the rotated copies of one image do not fill whole
  batches; the stream stays a pure function of (seed, step).
  """
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  base = read_split(builder, split, joins=config.joins)
  if extra is not None:
    keys = tuple(extra.element_spec)
    base = base.map(_plain(lambda ex: {k: ex[k] for k in keys})).concatenate(extra)
  n = int(base.cardinality().numpy())
  if n <= 0:
    raise ValueError(f"split {split!r} of {config.dataset} is empty")
  buffer = min(n, config.shuffle_buffer)  # buffers hold encoded examples; bound their memory
  local_batch = config.batch_size // jax.process_count()
  first = start_step * local_batch  # position in the example stream where this run starts
  expands = ops.chain(preprocess).expands
  skip = 0 if expands else first  # input examples to skip before preprocessing
  seed = config.seed
  if balance_key is not None:
    features = builder.info.features
    if balance_key not in features or not isinstance(features[balance_key], tfds.features.ClassLabel):
      raise ValueError(f"{builder.info.full_name} has no class feature {balance_key!r} to balance "
                       f"(features: {sorted(features)})")
    classes = num_classes(builder, balance_key)
    counts = _label_counts(base, balance_key, classes)
    present = [c for c in range(classes) if counts[c]]
    streams = [_epochs(base.filter(_plain(lambda ex, c=c: ex[balance_key] == c)), min(int(counts[c]), buffer),
                       seed + 7919 * (c + 1)) for c in present]
    ds = tf.data.Dataset.sample_from_datasets(streams, [1.0 / len(present)] * len(present),
                                              seed=seed, stop_on_empty_dataset=False).skip(skip)
  else:
    start_epoch, offset = divmod(skip, n)
    ds = _epochs(base, buffer, seed, start_epoch).skip(offset)
  ds = _preprocessed(ds.enumerate(start=skip), preprocess, seed, builder)
  if expands and expanded_shuffle > 0:
    ds = ds.shuffle(expanded_shuffle, seed=seed * 1_000_003 + 17, reshuffle_each_iteration=False)
  if expands:
    ds = ds.skip(first)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_stream(config: InputConfig, preprocess: ops.OpLike, split: str,
                builder: tfds.core.DatasetBuilder | None = None) -> tf.data.Dataset:
  """The whole split (this host's shard) once, in order, through `preprocess`, batched (the last
  batch may be short). Example i gets the seed (config.seed, i), for the ops that want one."""
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  ds = _preprocessed(read_split(builder, split, joins=config.joins).enumerate(), preprocess, config.seed, builder)
  return ds.batch(config.batch_size // jax.process_count()).prefetch(tf.data.AUTOTUNE)


def train_iterator(config: InputConfig, preprocess: ops.OpLike, split: str = "train", start_step: int = 0,
                   builder: tfds.core.DatasetBuilder | None = None,
                   balance_key: str | None = None, expanded_shuffle: int = 0,
                   extra: tf.data.Dataset | None = None) -> Iterator[dict[str, Any]]:
  """train_stream as numpy batches."""
  return train_stream(config, preprocess, split, start_step, builder, balance_key,
                      expanded_shuffle, extra).as_numpy_iterator()


def class_counts(builder: tfds.core.DatasetBuilder, split: str, label_key: str,
                 joins: tuple[ArtifactJoin, ...] = ()) -> np.ndarray:
  """Examples of each class of `label_key` in `split` (all hosts)."""
  return _label_counts(read_split(builder, split, per_process=False, joins=joins), label_key,
                       num_classes(builder, label_key))


def class_grouped_iterator(config: InputConfig, preprocess: ops.OpLike, split: str, label_key: str,
                           classes: tuple[int, ...], start_step: int = 0,
                           builder: tfds.core.DatasetBuilder | None = None) -> Iterator[dict[str, Any]]:
  """Endless numpy batches whose leaves are (B, C, ...): B examples of each of the C `classes`
  (class indices of `label_key`) per batch, each class cycling through its own shuffled epochs
  (the input of class-specific models trained side by side, e.g. per-class GANs). A pure function
  of (seed, step), like `train_stream`."""
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  base = read_split(builder, split, joins=config.joins)
  counts = _label_counts(base, label_key, num_classes(builder, label_key))  # this host's shard
  local_batch = config.batch_size // jax.process_count()
  first = start_step * local_batch
  streams = []
  for c in classes:
    subset = base.filter(_plain(lambda ex, c=c: ex[label_key] == c))
    n = int(counts[c])
    if n == 0:
      raise ValueError(f"split {split!r} of {builder.info.full_name} has no example of class {c} of {label_key!r}")
    seed = config.seed + 7919 * (c + 1)
    start_epoch, offset = divmod(first, n)
    ds = _epochs(subset, min(n, config.shuffle_buffer), seed, start_epoch).skip(offset)
    streams.append(_preprocessed(ds.enumerate(start=first), preprocess, seed, builder).batch(
        local_batch, drop_remainder=True))
  stacked = tf.data.Dataset.zip(tuple(streams)).map(
      _plain(lambda *batches: tf.nest.map_structure(lambda *xs: tf.stack(xs, axis=1), *batches)))
  return stacked.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def eval_iterator(config: InputConfig, preprocess: ops.OpLike, split: str,
                  builder: tfds.core.DatasetBuilder | None = None) -> Iterator[dict[str, Any]]:
  """Fixed-size numpy batches covering the split once, with 'weight' = 0 on padding rows. Every
  process yields the same number of batches (needed for multi-host evaluation)."""
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  local_batch = config.batch_size // jax.process_count()
  if ops.chain(preprocess).expands:
    if jax.process_count() > 1:  # hosts would need to agree on a count nobody knows in advance
      raise NotImplementedError("multi-host evaluation with a one-to-many op is not supported")
    num_batches = 0  # a single host needs no extra batches
  else:
    total = num_examples(builder, split)
    num_batches = math.ceil(math.ceil(total / jax.process_count()) / local_batch)
  return _padded(eval_stream(config, preprocess, split, builder).as_numpy_iterator(), local_batch, num_batches)


def _padded(batches: Iterator[dict[str, Any]], size: int, num_batches: int) -> Iterator[dict[str, Any]]:
  count = 0
  last = None
  for batch in batches:
    last = batch
    count += 1
    yield pad_batch(batch, size)
  while count < num_batches and last is not None:  # this host's shard was shorter
    count += 1
    yield {**pad_batch(batching.tree_map(lambda v: v[:1], last), size), "weight": np.zeros(size, np.float32)}


def channel_statistics(config: InputConfig, split: str, builder: tfds.core.DatasetBuilder | None = None
                       ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
  """Per-channel (mean, std) of the images of `split` in [0, 1], resized to config.image_size as
  the models see them (every host reads the whole split, so all agree)."""
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  size = config.image_size
  ds = read_split(builder, split, per_process=False).map(
      _plain(lambda ex: resize_image(tf.io.decode_image(ex["image"], 3, expand_animations=False), size)),
      num_parallel_calls=tf.data.AUTOTUNE)
  total, squares, count = np.zeros(3), np.zeros(3), 0
  for image in ds.batch(64).as_numpy_iterator():
    pixels = image.reshape(-1, 3).astype(np.float64)
    total += pixels.sum(0)
    squares += (pixels ** 2).sum(0)
    count += len(pixels)
  if not count:
    raise ValueError(f"split {split!r} of {builder.info.full_name} is empty")
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
  return tuple(float(v) for v in mean), tuple(float(v) for v in std)
