"""Data parallelism with `jax.sharding`: a 1-D device mesh, batches split along "data",
parameters and optimiser state replicated. The same code runs on 1 CPU, 8 GPUs or a TPU slice.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(mode: str = "auto", coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None) -> None:
  """Joins a multi-host run before any JAX computation.

  mode 'off': single process. 'on': `jax.distributed.initialize` with the given coordinator,
  process count and id (each may be None where JAX detects it: Cloud TPU, SLURM, Kubernetes).
  'auto': 'on' when a coordinator address is given or a cluster environment is detected
  (SLURM with more than one task, Cloud TPU multi-host), else 'off'.
  """
  import os  # pylint: disable=g-import-not-at-top
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode must be auto, on or off, got {mode!r}")
  if mode == "auto":
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    tpu = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
    mode = "on" if coordinator_address or slurm or tpu else "off"
  if mode == "off":
    return
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def _data_mesh(devices) -> Mesh:
  # Auto axes: the steps are written for GSPMD's automatic sharding (jax.make_mesh would default
  # to explicit sharding types).
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A mesh over all (or the first `num_devices`) devices, across every host, with one 'data'
  axis, laid out by `jax.make_mesh` (which orders devices by the physical topology where it
  knows one, e.g. a ring on TPU, for faster all-reduces)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"asked for {num_devices} devices, only {len(devices)} are visible")
    devices = devices[:num_devices]
  return _data_mesh(devices)


def local_mesh() -> Mesh:
  """A 'data' mesh of this process's devices only: computations on it never wait for another host."""
  return _data_mesh(jax.local_devices())


def process_local(tree: Any, mesh: Mesh) -> tuple[Mesh, Any]:
  """(mesh, tree) for work each host does on its own, e.g. artifact inference, where hosts run
  different numbers of batches: on several hosts, a process-local mesh (`local_mesh`) and `tree`
  (arrays replicated on `mesh`) replicated on it, from each array's local copy; on one host,
  `mesh` and `tree` unchanged.

  Why: a step jitted over a mesh spanning hosts is one program on all of them; when XLA puts a
  collective into it, a host that runs it more often than the others waits forever for them.
  """
  if jax.process_count() == 1:
    return mesh, tree
  local = local_mesh()

  def move(x):
    if isinstance(x, jax.Array):
      if not x.is_fully_replicated:
        raise ValueError(f"process_local moves replicated arrays only, got one sharded as {x.sharding}")
      x = x.addressable_data(0)
    return jax.device_put(x, replicated(local), may_alias=False)

  return local, jax.tree.map(move, tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Returns the per-process batch size; raises if the global batch does not split evenly."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(f"global batch size {global_batch_size} must be divisible by the number of "
                     f"devices ({num_devices}); use e.g. a batch size of "
                     f"{max(num_devices, global_batch_size // num_devices * num_devices)}")
  return global_batch_size // jax.process_count()


def is_numeric_dtype(dtype: Any) -> bool:
  """Booleans, integers and floats, bfloat16 included (numpy files ml_dtypes' bfloat16 under kind
  "V", as it does raw bytes): the array dtypes that go to the device."""
  dtype = np.dtype(dtype)
  return dtype.kind in "biuf" or jnp.issubdtype(dtype, jnp.floating)


def is_device_array_value(x: Any) -> bool:
  """True for numeric host arrays that belong on the device (ids and other strings stay on host)."""
  return isinstance(x, (np.ndarray, jax.Array)) and is_numeric_dtype(x.dtype)


def device_fields(batch: Any) -> Any:
  """The numeric leaves of a (nested) host batch: what goes to the device. String leaves (example
  ids, encoded PNG bytes) stay on the host; they are the only ones left out."""
  def keep(tree):
    if isinstance(tree, dict):
      kept = {k: keep(v) for k, v in tree.items()}
      return {k: v for k, v in kept.items() if v is not None}
    if isinstance(tree, (list, tuple)):
      return type(tree)(keep(v) for v in tree)
    arr = np.asarray(tree)
    return arr if is_numeric_dtype(arr.dtype) else None
  return keep(batch)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places this process's slice of a global batch (any pytree of numeric arrays, split along
  axis 0) on the mesh. A non-numeric leaf is an error, never silently dropped: pass the batch
  through `device_fields` first to leave ids and other strings on the host."""
  sharding = batch_sharded(mesh)

  def place(path, x):
    x = np.asarray(x)
    if not is_numeric_dtype(x.dtype):
      raise TypeError(f"batch leaf {jax.tree_util.keystr(path)} has dtype {x.dtype}: only numeric "
                      "arrays go to the device (use sharding.device_fields to leave strings out)")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map_with_path(place, batch)


# Seconds every host may take to reach the first cross-host transfer after the first one did.
HOSTS_MEET_TIMEOUT_S = 900
_hosts_met = False


def meet_hosts(timeout_s: float = HOSTS_MEET_TIMEOUT_S) -> None:
  """Waits, once per process, until every host of a multi-host run gets here; nothing on one host.

  Why: on CPU the first collective sets up gloo, whose key exchange waits only 30 s for the
  other hosts, so a host slower by more than that to reach it (a cold compilation cache, a busy
  machine, a longer input-pipeline start) killed the run ("Gloo context initialization failed:
  DEADLINE_EXCEEDED"). The coordination service's barrier is not a collective and takes its own
  timeout.

  Why a private API: JAX (0.10) exposes no public barrier of the coordination service.
  `multihost_utils.sync_global_devices` is a collective (it would set gloo up, the very thing
  that must wait), and `jax.distributed` offers only initialize / is_initialized / shutdown. So
  the client is read from `jax._src.distributed`, guarded: where a JAX version moves it, the
  hosts go on without meeting (logged), as they did before this barrier existed.
  """
  global _hosts_met
  if _hosts_met or jax.process_count() == 1:
    return
  client = None
  if jax.distributed.is_initialized():
    try:
      from jax._src import distributed  # pylint: disable=g-import-not-at-top
      client = distributed.global_state.client
    except (ImportError, AttributeError):
      client = None
  if client is None or not hasattr(client, "wait_at_barrier"):
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.warning("meet_hosts: no coordination-service client to wait at (this JAX version keeps it "
                    "elsewhere); the hosts go on without meeting before the first collective")
  else:
    client.wait_at_barrier("lesion_jax_hosts_meet", timeout_in_ms=int(timeout_s * 1000))
  _hosts_met = True


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree` replicated on every device of `mesh`, in new buffers: the caller's arrays stay valid
  even when a jitted step later donates the replicated ones. On several hosts this is the first
  cross-host transfer of a run, so the hosts meet first (`meet_hosts`)."""
  meet_hosts()
  return jax.device_put(tree, replicated(mesh), may_alias=False)


def replicated_abstract(tree: Any, mesh: Mesh) -> Any:
  """The shape of `tree` (arrays or ShapeDtypeStructs) with the mesh's replicated sharding: a
  restore template that allocates nothing."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated(mesh)), tree)


def state_shardings(state: Any, mesh: Mesh) -> Any:
  return jax.tree.map(lambda _: replicated(mesh), state)


def jit_train_step(train_step: Callable, state: Any, mesh: Mesh) -> Callable:
  """jit(train_step) with replicated state (donated), data-sharded batch, replicated rng/metrics."""
  state_sh = state_shardings(state, mesh)
  return jax.jit(train_step, in_shardings=(state_sh, batch_sharded(mesh), replicated(mesh)),
                 out_shardings=(state_sh, replicated(mesh)), donate_argnums=(0,))


def jit_predict_step(predict_step: Callable, state: Any, mesh: Mesh) -> Callable:
  """jit(predict_step(state, batch)) with the batch (any pytree) and outputs (any pytree) kept
  sharded along the batch axis."""
  return jax.jit(predict_step, in_shardings=(state_shardings(state, mesh), batch_sharded(mesh)),
                 out_shardings=batch_sharded(mesh))


def allgather_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every process's rows of `arrays` (same leading length within a process, any length across
  processes), concatenated in process order, on every process: per-example evaluation results
  from each host's shard of a split become results over the whole split."""
  if jax.process_count() == 1:
    return arrays
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local = len(next(iter(arrays.values())))
  counts = np.asarray(multihost_utils.process_allgather(np.int32(local))).reshape(-1)
  longest = int(counts.max())
  # Sent as raw bytes: device transfers would turn 64-bit values into 32-bit ones (without x64).
  as_bytes = {k: np.ascontiguousarray(v).reshape(local, int(np.prod(v.shape[1:]))).view(np.uint8)
              for k, v in arrays.items()}
  padded = {k: np.concatenate([b, np.zeros((longest - local, b.shape[1]), np.uint8)])
            for k, b in as_bytes.items()}
  gathered = multihost_utils.process_allgather(padded)  # each (processes, longest, bytes per row)
  out = {}
  for k, g in gathered.items():
    rows = np.concatenate([np.asarray(g[p, :n]) for p, n in enumerate(counts)])
    out[k] = np.ascontiguousarray(rows).view(arrays[k].dtype).reshape(-1, *arrays[k].shape[1:])
  return out


def allgather_strings(strings: list[str]) -> list[str]:
  """`allgather_rows` for a list of strings (example ids)."""
  if jax.process_count() == 1:
    return strings
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  encoded = [s.encode() for s in strings]
  width = int(np.max(multihost_utils.process_allgather(np.int32(max(map(len, encoded), default=1)))))
  table = np.zeros((len(encoded), width), np.uint8)
  for i, e in enumerate(encoded):
    table[i, :len(e)] = np.frombuffer(e, np.uint8)
  rows = allgather_rows({"bytes": table, "length": np.array([len(e) for e in encoded], np.int32)})
  return [bytes(r[:n]).decode() for r, n in zip(rows["bytes"], rows["length"])]


def to_host(tree: Any) -> Any:
  """This process's rows of every batch-sharded array in `tree`, as numpy (in batch order): all
  rows of an array this process holds whole (one host, or a process-local mesh)."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))

  def local(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards], axis=0)

  return jax.tree.map(local, tree)


def global_batch(tree: Any, mesh: Mesh) -> Any:
  """A pytree of whole global batches that every process holds in full (e.g. latents from a
  shared seed) placed on `mesh`, split along the batch axis: each device gets its own rows, so
  the global array equals the host one whatever the mesh's device order."""
  sharding = batch_sharded(mesh)

  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(place, tree)


def gather_global(tree: Any) -> Any:
  """Every array of `tree` whole, as numpy, on every process (a collective where an array spans
  hosts): the inverse of `global_batch`."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def whole(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(whole, tree)
