"""tf.data input pipelines: TFDS split → decode → resize → augment → shuffle → batch → numpy.

Training streams are a pure function of (seed, step): epoch e is the split shuffled with a seed
derived from (seed, e), and each example is augmented with a stateless seed derived from its
position in the stream. `train_batches(config, start_step)` therefore resumes exactly where an
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

from lesion_jax import data as _data  # noqa: F401  (hides accelerators from TensorFlow)
from lesion_jax.data.augment import AugmentConfig, augment

TASKS = ("segmentation", "classification")
# The dataset functions here have no Python control flow on tensors: AutoGraph has nothing to
# convert, and its attempts only print warnings about lambdas.
tf.autograph.set_verbosity(0)
_plain = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class ArtifactJoin:
  """Replace feature `feature` of every example by the PNG artifact stored for its id in
  `directory` (an `ArtifactStore.directory`): pseudo-masks instead of ground truth, lesion crops
  instead of images."""
  feature: str
  directory: str
  drop_flagged: bool = False  # leave out examples whose artifact record says "uncertain"


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """What to read and how to shape it. `dataset` is a TFDS name, optionally with a config
  (`synthetic_lesions`, `synthetic_lesions/s128`, `isic2017`)."""
  dataset: str = "synthetic_lesions"
  data_dir: str | None = None
  manual_dir: str | None = None
  image_size: int = 64
  batch_size: int = 16  # global batch size
  seed: int = 0
  task: str = "segmentation"
  mask_key: str = "mask"
  label_key: str = "label"
  augment: AugmentConfig = AugmentConfig()
  shuffle_buffer: int = 4096
  joins: tuple[ArtifactJoin, ...] = ()


def get_builder(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                prepare: bool = True) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `name`, prepared on first use (the synthetic set renders itself; the
  real archives read `manual_dir`)."""
  import lesion_jax.data.builders  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  builder = tfds.builder(name, data_dir=data_dir)
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
  Every id must have its artifact: a missing one is reported up front with the command to run."""
  from lesion_jax.artifacts import store  # pylint: disable=g-import-not-at-top
  ids = [i.decode() for i in ds.map(_plain(lambda ex: ex["id"])).as_numpy_iterator()]
  missing = [i for i in ids if not os.path.exists(os.path.join(join.directory, store.safe_name(i) + ".png"))]
  if missing:
    raise FileNotFoundError(
        f"{len(missing)} of {len(ids)} examples of split {split!r} have no artifact in "
        f"{join.directory} (first: {missing[:3]}); run experiments.annotate for this split first")
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

  def swap(example):
    name = tf.strings.regex_replace(example["id"], store.UNSAFE_PATTERN, "_")
    return dict(example, **{join.feature: tf.io.read_file(prefix + name + ".png")})

  return ds.map(_plain(swap), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def normalize_image(image01):
  """[0, 1] → [-1, 1]; the single definition shared by training, evaluation and predict."""
  return image01 * 2.0 - 1.0


def resize_image(image_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, 3) → float32 [0, 1] (size, size, 3), area-preserving (antialiased) bilinear."""
  image = tf.image.convert_image_dtype(image_uint8, tf.float32)
  return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def resize_mask(mask_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, 1) with values {0, 255} (or {0, 1}) → float32 {0, 1} (size, size, 1)."""
  mask = tf.cast(mask_uint8 > 0, tf.float32)
  mask = tf.image.resize(mask, [size, size], method="bilinear", antialias=True)
  return tf.cast(mask >= 0.5, tf.float32)


def preprocess_image(image_uint8, size: int) -> np.ndarray:
  """Model input for one uint8 RGB image (numpy): exactly what the pipelines feed the model."""
  return normalize_image(resize_image(tf.convert_to_tensor(image_uint8), size)).numpy()


def check_features(builder: tfds.core.DatasetBuilder, config: InputConfig) -> None:
  """Fails early, naming the dataset, when it lacks what the task needs."""
  features = builder.info.features
  joined = {j.feature for j in config.joins}
  name = builder.info.full_name
  if config.task == "segmentation" and config.mask_key not in features and config.mask_key not in joined:
    raise ValueError(f"{name} has no {config.mask_key!r} feature (features: {sorted(features)}); "
                     "pick a config with masks, or train on pseudo-masks (--labels=kmeans)")
  if config.task == "classification" and config.label_key not in features:
    raise ValueError(f"{name} has no {config.label_key!r} feature (features: {sorted(features)})")


def _decode(example: dict[str, tf.Tensor], config: InputConfig, image_keys: list[str]) -> dict[str, tf.Tensor]:
  out = {"id": example["id"]}
  image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
  out["image"] = resize_image(image, config.image_size)
  if config.task == "segmentation":
    mask = example[config.mask_key]
    if config.mask_key in image_keys or any(j.feature == config.mask_key for j in config.joins):
      mask = tf.io.decode_image(mask, channels=1, expand_animations=False)
    out["mask"] = resize_mask(mask, config.image_size)
  else:
    out["label"] = tf.cast(example[config.label_key], tf.int32)
  return out


def _augment_and_normalize(example, seed, config: InputConfig):
  image, mask = augment(example["image"], example.get("mask"), seed, config.augment)
  example = dict(example, image=normalize_image(image))
  if mask is not None:
    example["mask"] = mask
  return example


def _finish(example):
  return dict(example, image=normalize_image(example["image"]))


def _epochs(base: tf.data.Dataset, buffer: int, seed: int, start_epoch: int = 0) -> tf.data.Dataset:
  """Endless stream of `base`, reshuffled each epoch with a seed of (seed, epoch)."""

  def epoch(e):
    return base.shuffle(max(1, buffer), seed=seed * 1_000_003 + e, reshuffle_each_iteration=False)

  return tf.data.Dataset.range(start_epoch, 2 ** 62).flat_map(epoch)


def num_classes(builder: tfds.core.DatasetBuilder, label_key: str) -> int:
  return builder.info.features[label_key].num_classes


def train_dataset(config: InputConfig, split: str = "train", start_step: int = 0,
                  builder: tfds.core.DatasetBuilder | None = None,
                  balanced: bool = False) -> tf.data.Dataset:
  """An endless, batched stream of augmented training examples, starting at `start_step`.

  `balanced` samples every class equally often (each class's examples cycle in their own
  shuffled epochs), for the skewed benign/malignant ratios of dermoscopy archives.
  """
  if config.task not in TASKS:
    raise ValueError(f"unknown task {config.task!r}; choose one of {TASKS}")
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  check_features(builder, config)
  base = read_split(builder, split, joins=config.joins)
  n = int(base.cardinality().numpy())
  if n <= 0:
    raise ValueError(f"split {split!r} of {config.dataset} is empty")
  buffer = min(n, config.shuffle_buffer)  # buffers hold encoded examples; bound their memory
  local_batch = config.batch_size // jax.process_count()
  first = start_step * local_batch  # position in the example stream where this run starts
  seed = config.seed
  if balanced:
    classes = num_classes(builder, config.label_key)
    labels = np.fromiter(base.map(_plain(lambda ex: ex[config.label_key])).as_numpy_iterator(), np.int64)
    counts = np.bincount(labels, minlength=classes)
    present = [c for c in range(classes) if counts[c]]
    streams = [_epochs(base.filter(_plain(lambda ex, c=c: ex[config.label_key] == c)), min(int(counts[c]), buffer),
                       seed + 7919 * (c + 1)) for c in present]
    ds = tf.data.Dataset.sample_from_datasets(streams, [1.0 / len(present)] * len(present),
                                              seed=seed, stop_on_empty_dataset=False).skip(first)
  else:
    start_epoch, offset = divmod(first, n)
    ds = _epochs(base, buffer, seed, start_epoch).skip(offset)
  image_keys = _image_keys(builder)

  def prepare(index, example):
    example = _decode(example, config, image_keys)
    return _augment_and_normalize(example, tf.stack([tf.constant(seed, tf.int64), index]), config)

  ds = ds.enumerate(start=first).map(_plain(prepare), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(config: InputConfig, split: str,
                 builder: tfds.core.DatasetBuilder | None = None) -> tf.data.Dataset:
  """The whole split once, in order, not augmented, batched (last batch may be short). Segmentation
  batches also carry 'mask_encoded', the stored mask's PNG bytes at the image's own resolution."""
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  check_features(builder, config)
  image_keys = _image_keys(builder)
  encoded_mask = config.task == "segmentation" and (
      config.mask_key in image_keys or any(j.feature == config.mask_key for j in config.joins))

  def prepare(example):
    out = _finish(_decode(example, config, image_keys))
    if encoded_mask:  # the stored mask at its own resolution, for scoring as the challenges do
      out["mask_encoded"] = example[config.mask_key]
    return out

  ds = read_split(builder, split, joins=config.joins).map(_plain(prepare), num_parallel_calls=tf.data.AUTOTUNE,
                                                          deterministic=True)
  return ds.batch(config.batch_size // jax.process_count()).prefetch(tf.data.AUTOTUNE)


def pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads a short batch to `size` rows by repeating its last row; adds 'weight' (0 on padding)."""
  n = len(next(iter(batch.values())))
  out = {k: np.concatenate([v, np.repeat(v[-1:], size - n, axis=0)]) if n < size else v
         for k, v in batch.items()}
  out["weight"] = (np.arange(size) < n).astype(np.float32)
  return out


def train_batches(config: InputConfig, start_step: int = 0, split: str = "train",
                  builder: tfds.core.DatasetBuilder | None = None,
                  balanced: bool = False) -> Iterator[dict[str, np.ndarray]]:
  return train_dataset(config, split, start_step, builder, balanced).as_numpy_iterator()


def eval_batches(config: InputConfig, split: str,
                 builder: tfds.core.DatasetBuilder | None = None) -> Iterator[dict[str, Any]]:
  """Fixed-size numpy batches covering the split once, with 'weight' = 0 on padding rows. Every
  process yields the same number of batches (needed for multi-host evaluation)."""
  builder = builder or get_builder(config.dataset, config.data_dir, config.manual_dir)
  local_batch = config.batch_size // jax.process_count()
  total = num_examples(builder, split)
  num_batches = math.ceil(math.ceil(total / jax.process_count()) / local_batch)
  count = 0
  last = None
  for batch in eval_dataset(config, split, builder).as_numpy_iterator():
    last = batch
    count += 1
    yield pad_batch(batch, local_batch)
  while count < num_batches and last is not None:  # this host's shard was shorter
    count += 1
    yield {**pad_batch({k: v[:1] for k, v in last.items()}, local_batch),
           "weight": np.zeros(local_batch, np.float32)}
