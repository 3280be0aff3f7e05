"""Artifact stages: the one mechanism that computes a per-example product (K-means pseudo-masks,
lesion crops, superpixels, hair masks, purified or generated images, ...) for every example of a
dataset split, once, into an `ArtifactStore`.

An `ArtifactStage` maps a batch function `compute(examples, pool) -> [Artifact]` over the examples
and stores each result under its example id:

- atomic: every file goes through `lesion_jax.io`'s atomic writes, and the JSON record is written
  last, so its presence marks the artifact complete;
- resumable: ids already complete are not read again, and are counted as reused; an interrupted
  run (a PNG without its record) is recomputed;
- batched: `compute` receives a list of examples (numpy dicts with a str "id") and returns one
  `Artifact` per example, in order, so model calls and jitted code see whole batches;
- parallel: `compute` gets a thread pool owned by the stage (or passed in) for per-image
  Python/OpenCV work (OpenCV and numpy release the GIL); the stage also writes files on it;
- robust: when a batch raises, its examples are retried one at a time; an example that still
  raises is logged with its id, skipped (computed again next run) and counted as failed;
- multi-host: with several JAX processes, each computes only its share of the ids
  (`shard_ids`: every P-th sorted id from its process index) into the shared store; the counts
  are then gathered, which also waits until every process has written its share, so afterwards
  every process can read all artifacts. Explicit `process_index`/`process_count` run one share
  as an independent job (no waiting), e.g. array jobs without `jax.distributed`. Hosts call
  `compute` different numbers of times (their shares left to do differ), so a model-driven
  `compute` runs on a process-local mesh (`sharding.process_local`), never a collective step.

`run_on_beam` runs the same stage on an Apache Beam runner (optional dependency).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import time
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
from absl import logging

from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.data.selection import split_name

Example = dict[str, Any]


# A temporary file (io's atomic writes: `.tmp-*`) this old is no write in progress: a run was killed.
STALE_TEMPORARY_SECONDS = 600.0


def remove_stale_temporaries(directory: str, older_than: float = STALE_TEMPORARY_SECONDS) -> int:
  """Deletes `.tmp-*` files older than `older_than` seconds in `directory` (files an interrupted
  atomic write left behind; younger ones may be another process's write in progress)."""
  if not os.path.isdir(directory):
    return 0
  now, removed = time.time(), 0
  for entry in os.scandir(directory):
    if entry.name.startswith(".tmp-") and entry.is_file() and now - entry.stat().st_mtime > older_than:
      with contextlib.suppress(FileNotFoundError):  # another process got there first
        os.remove(entry.path)
        removed += 1
  return removed


@dataclasses.dataclass
class Artifact:
  """One example's result. `image`: a mask ((H, W), nonzero = lesion; stored as a {0,255} PNG)
  or a uint8 RGB image (stored as PNG), or None; `arrays`: named arrays of any dtype (e.g. an
  int32 superpixel label map and a per-superpixel feature table), stored as `<id>.npz`;
  `record`: JSON-able facts, stored last as `<id>.json` (with the id added)."""
  image: np.ndarray | None = None
  record: dict[str, Any] = dataclasses.field(default_factory=dict)
  arrays: Mapping[str, np.ndarray] | None = None


Compute = Callable[[list[Example], concurrent.futures.Executor], Sequence[Artifact]]


@dataclasses.dataclass
class StageSummary:
  name: str
  split: str
  total: int  # ids in the split
  computed: int  # this run (all processes)
  reused: int  # already complete in the store
  failed: int  # raised in `compute`: skipped, retried next run
  failures: dict[str, str]  # id -> error
  computed_ids: list[str]
  seconds: float  # wall time of the run
  images_per_second: float  # this process's: computed / time spent computing and writing
  process_index: int = 0
  process_count: int = 1


class StageError(RuntimeError):
  """An example failed and the stage was asked to stop (`on_error="raise"`)."""


class _ContractError(TypeError):
  """`compute` broke its contract (not one Artifact per example): a bug, never skipped."""


def shard_ids(ids: Iterable[str], process_index: int, process_count: int) -> list[str]:
  """The ids process `process_index` of `process_count` computes: every `process_count`-th of
  the sorted distinct ids, from `process_index`. The shares are disjoint, cover all ids, differ
  in size by at most one, and depend only on the ids (not on what is already stored, which
  hosts may see at different moments)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
  return sorted(set(ids))[process_index::process_count]


# ----------------------------------------------------------------------------------------------
# Reading a TFDS split


def _image_keys(builder) -> list[str]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return [k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Image)]


def _select(builder, features: Sequence[str] | None) -> list[str]:
  available = list(builder.info.features)
  keys = ["id"] + [k for k in (features if features is not None else available) if k != "id"]
  unknown = [k for k in keys if k not in available]
  if unknown:
    raise KeyError(f"{builder.info.full_name} has no feature(s) {unknown} (features: {available})")
  return keys


def split_tag(split: str, max_length: int = 48) -> str:
  """A file-name-safe tag of a TFDS split string ("train" stays "train"; a long slice list such
  as a hold-out split, `train[0:3]+train[5:9]+...`, is cut and suffixed with a hash of the whole)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_")
  if len(tag) <= max_length and tag == split:
    return tag
  return f"{tag[:max_length - 9]}_{hashlib.sha1(split.encode()).hexdigest()[:8]}"


def split_ids(builder, split: str) -> list[str]:
  """The example ids of `split` in dataset order (images are not decoded)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={k: tfds.decode.SkipDecoding() for k in _image_keys(builder)})
  return [i.decode() for i in tfds.as_numpy(ds.map(lambda e: e["id"]))]


def read_examples(builder, split: str, ids: Collection[str] | None = None,
                  features: Sequence[str] | None = None) -> Iterator[Example]:
  """numpy examples of `split` in dataset order ("id" as str), only `features` (default: all),
  only those in `ids` (default: all); images are decoded only for the examples kept."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  keys = _select(builder, features)
  image_keys = [k for k in _image_keys(builder) if k in keys]
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={k: tfds.decode.SkipDecoding() for k in _image_keys(builder)})
  ds = ds.map(lambda e: {k: e[k] for k in keys})
  if ids is not None:
    wanted = list(dict.fromkeys(ids))
    if not wanted:
      return
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(wanted), tf.ones(len(wanted), tf.int32)), 0)
    ds = ds.filter(lambda e: table.lookup(e["id"]) > 0)
  spec = builder.info.features
  ds = ds.map(lambda e: {k: spec[k].decode_example(v) if k in image_keys else v for k, v in e.items()},
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  for ex in tfds.as_numpy(ds):
    ex["id"] = ex["id"].decode()
    yield ex


# ----------------------------------------------------------------------------------------------
# The stage


def _error(e: BaseException) -> str:
  return f"{type(e).__name__}: {e}"


def _batches(examples: Iterable[Example], size: int) -> Iterator[list[Example]]:
  batch: list[Example] = []
  for ex in examples:
    batch.append(ex)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def _only(examples: Iterable[Example], ids: Collection[str]) -> Iterator[Example]:
  """The examples whose id is in `ids`, each once."""
  wanted, seen = set(ids), set()
  for ex in examples:
    if ex["id"] in wanted and ex["id"] not in seen:
      seen.add(ex["id"])
      yield ex


@dataclasses.dataclass
class ArtifactStage:
  """`compute` over a split's examples into `store` (see the module docstring)."""
  store: ArtifactStore
  compute: Compute
  name: str = ""  # for logs; default: the store's kind
  batch_size: int = 64
  workers: int | None = None  # threads of the pool the stage owns; default: every core
  on_error: str = "skip"  # "skip": log, count and go on; "raise": StageError naming the id
  log_every_seconds: float = 10.0

  def __post_init__(self):
    if self.on_error not in ("skip", "raise"):
      raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    self.name = self.name or self.store.kind

  @contextlib.contextmanager
  def _pool(self, pool: concurrent.futures.Executor | None):
    if pool is not None:
      yield pool
    else:
      with concurrent.futures.ThreadPoolExecutor(self.workers or os.cpu_count() or 1) as own:
        yield own

  def _compute(self, examples: list[Example], pool) -> list[Artifact]:
    results = list(self.compute(examples, pool))
    if len(results) != len(examples) or not all(isinstance(r, Artifact) for r in results):
      raise _ContractError(f"{self.name}: compute must return one Artifact per example "
                           f"({len(examples)}), got {[type(r).__name__ for r in results]}")
    return results

  def _write(self, image_id: str, artifact: Artifact) -> None:
    self.store.write(image_id, artifact.image, artifact.record, artifact.arrays)

  def process_batch(self, examples: list[Example], pool: concurrent.futures.Executor
                    ) -> tuple[list[str], dict[str, str]]:
    """Computes and stores one batch: (ids stored, {id: error} of the examples that failed).
    A batch that raises is retried one example at a time, so one bad image costs only itself."""
    failures: dict[str, str] = {}
    try:
      pairs = list(zip(examples, self._compute(examples, pool)))
    except _ContractError:
      raise
    except Exception as batch_error:  # pylint: disable=broad-except
      if len(examples) > 1:
        logging.warning("%s: a batch of %d failed (%s); computing its examples one at a time",
                        self.name, len(examples), _error(batch_error))
      pairs = []
      for ex in examples:
        try:
          pairs.append((ex, self._compute([ex], pool)[0]))
        except _ContractError:
          raise
        except Exception as e:  # pylint: disable=broad-except
          if self.on_error == "raise":
            raise StageError(f"{self.name}: example {ex['id']!r} failed: {_error(e)}") from e
          failures[ex["id"]] = _error(e)
          logging.error("%s: example %r failed and is skipped (computed again next run): %s",
                        self.name, ex["id"], _error(e))
    list(pool.map(lambda pair: self._write(pair[0]["id"], pair[1]), pairs))
    return [ex["id"] for ex, _ in pairs], failures

  def run(self, ids: Sequence[str], load: Callable[[list[str]], Iterable[Example]], split: str = "",
          pool: concurrent.futures.Executor | None = None, process_index: int | None = None,
          process_count: int | None = None) -> StageSummary:
    """Artifacts for `ids` (all of a split's ids, in the order to compute them) not yet stored.
    `load(todo)` yields the examples of the ids in `todo`, in order (others are ignored)."""
    import jax  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    gather = process_index is None and process_count is None and jax.process_count() > 1
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    ids = list(dict.fromkeys(ids))
    removed = remove_stale_temporaries(self.store.directory)
    if removed:
      logging.info("%s: removed %d temporary files left by an interrupted run", self.name, removed)
    share = set(shard_ids(ids, index, count))
    todo = [i for i in ids if i in share and not self.store.has(i)]
    reused = len(share) - len(todo)
    where = f" (process {index} of {count} computes {len(share)})" if count > 1 else ""
    logging.info("%s %s: %d examples%s, %d to compute, %d already stored", self.name, split_name(split),
                 len(ids), where, len(todo), reused)
    computed: list[str] = []
    failures: dict[str, str] = {}
    busy = 0.0
    last_log, logged = time.perf_counter(), -1

    def progress() -> None:
      nonlocal last_log, logged
      last_log, logged = time.perf_counter(), len(computed) + len(failures)
      logging.info("%s %s: %d/%d done (%d reused, %d failed), %.1f img/s", self.name, split_name(split),
                   reused + len(computed) + len(failures), len(share), reused, len(failures),
                   len(computed) / max(busy, 1e-9))

    with self._pool(pool) as executor:
      for batch in _batches(_only(load(todo), todo), self.batch_size):
        t = time.perf_counter()
        done, failed = self.process_batch(batch, executor)
        busy += time.perf_counter() - t
        computed += done
        failures.update(failed)
        if time.perf_counter() - last_log >= self.log_every_seconds:
          progress()
    settled = set(computed) | set(failures)
    failures.update({i: "not among the examples read" for i in todo if i not in settled})
    if todo and logged != len(computed) + len(failures):
      progress()
    if failures:
      logging.warning("%s %s: %d example(s) failed (retried next run): %s", self.name, split_name(split),
                      len(failures), ", ".join(list(failures)[:10]))
    counts = np.array([len(computed), reused, len(failures)], np.int32)
    rate = len(computed) / busy if busy else 0.0  # this process's
    if gather:  # a collective: it also waits until every process has written its share
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      from lesion_jax.train import sharding  # pylint: disable=g-import-not-at-top
      counts = np.asarray(multihost_utils.process_allgather(counts)).reshape(-1, 3).sum(0)
      computed = sharding.allgather_strings(computed)
      failures = dict(zip(sharding.allgather_strings(list(failures)),
                          sharding.allgather_strings(list(failures.values()))))
    return StageSummary(self.name, split, len(ids), int(counts[0]), int(counts[1]), int(counts[2]),
                        failures, computed, time.perf_counter() - start, rate, index, count)

  def run_split(self, builder, split: str, features: Sequence[str] | None = None,
                ids: Sequence[str] | None = None, **kwargs) -> StageSummary:
    """`run` over a TFDS split; `compute` gets examples with `features` (default: all) decoded.
    `kwargs`: those of `run` (pool, process_index, process_count)."""
    ids = split_ids(builder, split) if ids is None else ids
    return self.run(ids, lambda todo: read_examples(builder, split, todo, features), split, **kwargs)


# ----------------------------------------------------------------------------------------------
# The same stage on Apache Beam (optional: pip install apache-beam)


def run_on_beam(stage: ArtifactStage, builder, split: str, features: Sequence[str] | None = None,
                options=None) -> StageSummary:
  """`stage` over a TFDS split on an Apache Beam runner (`options`: Beam `PipelineOptions`;
  default the in-process DirectRunner): the split's shards are read in parallel
  (`tfds.beam.ReadFromTFDS`), examples already stored are dropped, the rest decoded, batched and
  computed by `stage.process_batch` on the workers (each with its own thread pool), writing to the
  same store (a filesystem every worker reaches). Rerun it or `stage.run_split` to resume."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  ids = split_ids(builder, split)
  done_before = {i for i in ids if stage.store.has(i)}
  keys = _select(builder, features)
  image_features = {k: builder.info.features[k] for k in _image_keys(builder) if k in keys}
  store = stage.store

  def decode(ex: Example) -> Example:
    out = {k: ex[k] for k in keys}
    for k, feature in image_features.items():
      out[k] = feature.decode_example(out[k]).numpy()
    out["id"] = out["id"].decode()
    return out

  class ComputeBatches(beam.DoFn):

    def setup(self):
      self.pool = concurrent.futures.ThreadPoolExecutor(stage.workers or os.cpu_count() or 1)

    def process(self, batch):
      stage.process_batch(batch, self.pool)
      return []

    def teardown(self):
      self.pool.shutdown()

  skip = {k: tfds.decode.SkipDecoding() for k in _image_keys(builder)}
  with beam.Pipeline(options=options) as pipeline:
    _ = (pipeline
         | "read" >> tfds.beam.ReadFromTFDS(builder, split, decoders=skip)
         | "numpy" >> beam.Map(tfds.as_numpy)
         | "todo" >> beam.Filter(lambda ex: not store.has(ex["id"].decode()))
         | "decode" >> beam.Map(decode)
         | "batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=stage.batch_size)
         | "compute" >> beam.ParDo(ComputeBatches()))
  computed = [i for i in ids if i not in done_before and stage.store.has(i)]
  failures = {i: "not stored (see the Beam workers' logs)" for i in ids
              if i not in done_before and not stage.store.has(i)}
  seconds = time.perf_counter() - start
  return StageSummary(stage.name, split, len(set(ids)), len(computed), len(done_before),
                      len(failures), failures, computed, seconds,
                      len(computed) / seconds if seconds else 0.0)
