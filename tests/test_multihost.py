"""Multi-host training for real: two processes joined by `jax.distributed` on the loopback
address (one CPU device each, CPU collectives through gloo), as on two machines. Each reads its
own shard of the data; the parameters stay identical on both; the checkpoint is written once and
restores in a single process; validation scores cover the whole split on every host; a host
that reaches the first collective 35 s after the other does not kill the run."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from lesion_jax.data import pipeline
from lesion_jax.tasks import runner
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
  outputs = [p.communicate(timeout=600) for p in procs]
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
