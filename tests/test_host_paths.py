"""The multi-host pieces that one process can check (the two-process run is tests/test_multihost.py):
per-process augmentation seeds (process 0's stream unchanged), the LFN refusing several hosts,
the mesh built by `jax.make_mesh`, the guarded coordination-service barrier, and the helpers
that move arrays between global and process-local meshes."""
import jax
import numpy as np
import pytest
from jax.sharding import AxisType

from lesion_jax import config as config_lib
from lesion_jax.data import pipeline
from lesion_jax.pipelines.lesion_index import feature_network
from lesion_jax.train import sharding


def seed_op(example, seed):
  del example
  return {"seed": seed}


def first_seeds(data_dir: str, seed: int) -> np.ndarray:
  config = pipeline.InputConfig(dataset="synthetic_lesions/tiny", data_dir=data_dir, batch_size=4, seed=seed)
  return next(pipeline.train_iterator(config, [seed_op], "train"))["seed"]


def test_process_0_keeps_its_stream_and_other_processes_fold_in_their_index(tiny_data_dir, monkeypatch):
  # Process 0 (every single-host run): example i is seeded (seed, i), as before hosts were told apart.
  np.testing.assert_array_equal(first_seeds(tiny_data_dir, 5), [[5, 0], [5, 1], [5, 2], [5, 3]])
  assert pipeline.process_stream_seed(5) == pipeline.process_stream_seed(5, 0) == 5
  # Process 1 (its index patched in): the same positions, its own stream seed.
  monkeypatch.setattr(jax, "process_index", lambda *a, **k: 1)
  other = first_seeds(tiny_data_dir, 5)
  np.testing.assert_array_equal(other[:, 1], [0, 1, 2, 3])
  assert set(other[:, 0]) == {pipeline.process_stream_seed(5, 1)}
  seeds = {pipeline.process_stream_seed(s, p) for s in range(3) for p in range(4)}
  assert len(seeds) == 12 and all(0 <= s < 2 ** 63 for s in seeds)


def test_feature_network_refuses_several_hosts_up_front(monkeypatch):
  task = feature_network.FeatureNetworkTask(feature_network.FeatureNetworkConfig())
  monkeypatch.setattr(jax, "process_count", lambda *a, **k: 2)
  with pytest.raises(config_lib.ConfigError, match="one host only.*one-to-many"):
    task.check(None)


def test_make_mesh_lays_devices_out_with_jax_make_mesh(monkeypatch):
  calls = []
  original = jax.make_mesh

  def spy(*args, **kwargs):
    calls.append((args, kwargs))
    return original(*args, **kwargs)

  monkeypatch.setattr(jax, "make_mesh", spy)
  mesh = sharding.make_mesh()
  assert calls and mesh.axis_names == (sharding.DATA_AXIS,) and mesh.devices.size == len(jax.devices())
  assert mesh.axis_types == (AxisType.Auto,)  # the steps rely on automatic sharding
  assert sharding.make_mesh(1).devices.size == 1
  with pytest.raises(ValueError, match="only"):
    sharding.make_mesh(len(jax.devices()) + 1)


def test_meet_hosts_waits_at_the_coordination_barrier_and_survives_a_moved_client(monkeypatch):
  from jax._src import distributed  # pylint: disable=g-import-not-at-top

  class Client:
    calls = []

    def wait_at_barrier(self, name, timeout_in_ms):
      self.calls.append((name, timeout_in_ms))

  monkeypatch.setattr(jax, "process_count", lambda *a, **k: 2)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(distributed.global_state, "client", Client())
  monkeypatch.setattr(sharding, "_hosts_met", False)
  sharding.meet_hosts(timeout_s=2)
  sharding.meet_hosts(timeout_s=2)  # once per process
  assert Client.calls == [("lesion_jax_hosts_meet", 2000)]
  # A JAX whose private module no longer has the client: the hosts go on, nothing raises.
  monkeypatch.setattr(sharding, "_hosts_met", False)
  monkeypatch.delattr(distributed, "global_state")
  sharding.meet_hosts(timeout_s=2)
  assert sharding._hosts_met  # pylint: disable=protected-access


def test_global_batches_round_trip_and_one_host_keeps_its_mesh():
  mesh = sharding.make_mesh()
  batch = {"z": np.arange(len(jax.devices()) * 6, dtype=np.float32).reshape(-1, 3)}
  placed = sharding.global_batch(batch, mesh)
  assert placed["z"].sharding == sharding.batch_sharded(mesh)
  np.testing.assert_array_equal(sharding.gather_global(placed)["z"], batch["z"])
  np.testing.assert_array_equal(sharding.to_host(placed)["z"], batch["z"])
  tree = sharding.replicate({"w": np.ones(3, np.float32)}, mesh)
  same_mesh, same_tree = sharding.process_local(tree, mesh)
  assert same_mesh is mesh and same_tree is tree
  assert sharding.local_mesh().devices.size == len(jax.local_devices())
