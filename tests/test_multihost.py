"""Multi-host training for real: two processes joined by `jax.distributed` on the loopback
address (one CPU device each, CPU collectives through gloo), as on two machines. Each reads its
own shard of the data; the parameters stay identical on both; the checkpoint is written once and
restores in a single process; validation scores cover the whole split on every host; a host
that reaches the first collective 35 s after the other does not kill the run. Lesion crops
finish when the hosts have different numbers of images left to segment; GAN samples and FD-derm
equal a single process's; the hosts augment with different stream seeds."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from lesion_jax import io
from lesion_jax.artifacts import stage
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.data import pipeline
from lesion_jax.tasks import runner, segmentation
from lesion_jax.train import sharding
from tests import multihost_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESSES = 2


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tiny_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("multihost"))
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("XLA_FLAGS", None)  # one device per process
  port = str(free_port())
  procs = [subprocess.Popen([sys.executable, "-m", "tests.multihost_check", tiny_data_dir, workdir,
                             str(i), str(PROCESSES), port], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(PROCESSES)]
  try:
    outputs = [p.communicate(timeout=600) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:  # a host stuck in a collective ignores SIGTERM
      p.kill()
    outputs = [p.communicate() for p in procs]
    pytest.fail("the two processes did not finish in 600 s (a host waiting in a collective?):\n"
                + "\n".join(err[-3000:] for _, err in outputs))
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  results = [json.load(open(os.path.join(workdir, f"result_{i}.json"))) for i in range(PROCESSES)]
  params = [dict(np.load(os.path.join(workdir, f"params_{i}.npz"))) for i in range(PROCESSES)]
  return workdir, results, params


def test_one_global_mesh_over_both_processes(run):
  _, results, _ = run
  for r in results:
    assert (r["process_count"], r["devices"], r["local_devices"], r["mesh_devices"]) == (2, 2, 1, 2)


def test_each_host_reads_its_own_shard(run, tiny_data_dir):
  _, results, _ = run
  shards = [set(r["train_ids"]) for r in results]
  assert shards[0] and shards[1] and not shards[0] & shards[1]
  builder = pipeline.get_builder("synthetic_lesions/tiny", tiny_data_dir)
  everything = {r["id"].decode() for r in pipeline.read_split(builder, "train").as_numpy_iterator()}
  assert shards[0] | shards[1] == everything


def test_gathers_handle_uneven_shards_64_bit_values_and_any_string(run):
  _, results, _ = run
  for r in results:
    assert r["uneven"] == {"i": [2 ** 40, 2 ** 40 + 1, 2 ** 40 + 2], "i_dtype": "int64", "f_shape": [3, 2]}
    assert r["strings"] == ["é0", "a\0", "xxxxx", "é1", "a\0", "xxxxxx"]


def test_parameters_identical_on_both_hosts(run):
  _, _, params = run
  assert params[0].keys() == params[1].keys() and params[0]
  for k in params[0]:
    np.testing.assert_array_equal(params[0][k], params[1][k])


def test_validation_scores_cover_the_whole_split_on_every_host(run, tiny_data_dir):
  _, results, _ = run
  builder = pipeline.get_builder("synthetic_lesions/tiny", tiny_data_dir)
  total = pipeline.num_examples(builder, "validation")
  for r in results:
    assert r["validation"]["num_images"] == total == len(set(r["validation_ids"]))
  assert results[0]["validation"] == results[1]["validation"]
  # The classifier's predictions too: every validation example, the same on both hosts.
  predictions = [r["classifier_validation"] for r in results]
  assert len(predictions[0]["labels"]) == total == len(set(predictions[0]["ids"]))
  assert predictions[0] == predictions[1]


def test_checkpoint_written_once_restores_in_one_process(run, tiny_data_dir):
  workdir, results, params = run
  task = multihost_check.make_task(tiny_data_dir)
  restored = runner.restore(task, os.path.join(workdir, "run"), "best", mesh=sharding.make_mesh(1))
  flat = multihost_check.flat_params(restored.params)
  assert flat.keys() == params[0].keys()
  for k, v in params[0].items():
    np.testing.assert_array_equal(flat[k], v)
  # The validation score process 0 logged during training is the whole split's, as a single
  # process computes it from the restored checkpoint.
  history = json.load(open(os.path.join(workdir, "run", "history.json")))
  assert history["val/jaccard"][-1][1] == pytest.approx(results[0]["validation"]["jaccard"], abs=1e-6)


def test_lesion_crops_finish_with_uneven_work_left_as_on_one_host(run, tiny_data_dir, tmp_path):
  # Process 0 had 16 of its 32 ids stored already: 2 predict batches against process 1's 4, each
  # with a batch-wide reduction (a cross-host all-reduce on a mesh over both hosts).
  workdir, results, _ = run
  assert results[0]["crop_dir"] == results[1]["crop_dir"]
  builder = pipeline.get_builder("synthetic_lesions/tiny", tiny_data_dir)
  ids = stage.split_ids(builder, multihost_check.CROP_SPLIT)
  seg_dir = os.path.join(workdir, "run")
  task = multihost_check.make_task(tiny_data_dir)
  step = int(runner.restore(task, seg_dir, "best", mesh=sharding.make_mesh(1)).step)
  store = multihost_check.crop_store(tiny_data_dir, os.path.join(workdir, "artifacts"), seg_dir, step)
  assert store.directory == results[0]["crop_dir"] and all(store.has(i) for i in ids)
  prestored = set(multihost_check.prestored_ids(tiny_data_dir))
  assert all(store.read_record(i).get("prestored") for i in prestored)  # reused, not recomputed
  # The crops of both hosts are those a single process makes.
  one = segmentation.lesion_crops(seg_dir, builder, [multihost_check.CROP_SPLIT], multihost_check.CROP_SIZE,
                                  str(tmp_path), mesh=sharding.make_mesh(1))
  single = ArtifactStore(str(tmp_path), store.dataset, store.kind, store.version)
  assert single.directory == one
  for i in sorted(set(ids) - prestored):
    got, want = store.read_record(i), single.read_record(i)
    assert got["lesion_fraction"] == pytest.approx(want["lesion_fraction"], abs=0.01), i
    a, b = (io.read_rgb_image(s.png_path(i)).astype(np.float32) for s in (store, single))
    assert a.shape == b.shape and np.abs(a - b).mean() < 1.0, i


def test_gan_samples_and_fd_derm_equal_a_single_process(run, tiny_data_dir):
  workdir, results, _ = run
  samples = [np.load(os.path.join(workdir, f"gan_{i}.npz"))["samples"] for i in range(PROCESSES)]
  task = multihost_check.make_gan_task(tiny_data_dir, os.path.join(workdir, "classifier"))
  mesh = sharding.make_mesh(1)
  state = sharding.replicate(task.init_state(jax.random.key(0)), mesh)
  z = multihost_check.gan_latents(task)
  single = task.sample(state, z, mesh)
  assert samples[0].shape == samples[1].shape == single.shape == (len(z), 2, 16, 16, 3)
  np.testing.assert_array_equal(samples[0], samples[1])
  np.testing.assert_allclose(samples[0], single, atol=1e-4)
  # FD-derm from the whole split's real features on both hosts, as one process computes it.
  assert results[0]["fd"] == results[1]["fd"]
  want = task.evaluate(state, multihost_check.GAN_SPLIT, mesh).scores
  got = results[0]["fd"]
  assert got["fd_samples"] == want["fd_samples"] and got["classes"] == want["classes"]
  for name, scores in want["per_class"].items():
    assert got["per_class"][name]["num_real"] == scores["num_real"]
    for key in ("fd", "fd_real_halves", "kid", "kid_real_halves"):
      if key in scores:
        assert got["per_class"][name][key] == pytest.approx(scores[key], rel=1e-3, abs=1e-4), (name, key)


def test_hosts_augment_with_different_stream_seeds(run):
  _, results, _ = run
  seeds = [np.asarray(r["stream_seeds"]) for r in results]
  # (stream seed, position) of the first 4 examples of each host's stream: process 0 keeps the
  # config's seed (as a single process), process 1 has its own.
  np.testing.assert_array_equal(seeds[0], [[0, 0], [0, 1], [0, 2], [0, 3]])
  np.testing.assert_array_equal(seeds[1][:, 1], [0, 1, 2, 3])
  assert len(set(seeds[1][:, 0])) == 1 and seeds[1][0, 0] != 0
  assert seeds[1][0, 0] == pipeline.process_stream_seed(0, 1)
