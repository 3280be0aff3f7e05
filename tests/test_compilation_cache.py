"""`import lesion_jax` changes nothing global; `lesion_jax.setup_runtime()` (what the verbs, tests
and benchmarks call) turns on JAX's persistent compilation cache: a second process reuses the
first one's compiles, LESION_JAX_COMPILATION_CACHE relocates or disables the cache, and a cache
directory configured through JAX itself is left alone. Each case runs in a fresh subprocess,
since JAX reads its cache settings once per process."""
import json
import os
import subprocess
import sys

import pytest

# Compiles a few convolutions and their gradient, then reports what the cache did. The events are
# JAX's own (jax._src.monitoring, which JAX's cache tests listen to too): a hit is only recorded
# once an executable has been read back from the cache and deserialized.
_COMPILE = r"""
import json, sys
if sys.argv[1] == "jax_first":
  import jax
  import lesion_jax
  lesion_jax.setup_runtime()
else:
  import lesion_jax
  lesion_jax.setup_runtime()
  import jax
import jax.numpy as jnp
from jax._src import monitoring

events = []
monitoring.register_event_listener(lambda name, **kwargs: events.append(name))


def convs(x, w):
  for _ in range(3):
    x = jax.nn.relu(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")))
  return jnp.mean(x)


x = jnp.ones((2, 32, 32, 8))
w = jnp.full((3, 3, 8, 8), 0.01)
loss, grad = jax.jit(jax.value_and_grad(convs, 1))(x, w)
print(json.dumps({"dir": lesion_jax.compilation_cache_dir(), "loss": float(loss),
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses"),
                  "requests": events.count("/jax/compilation_cache/compile_requests_use_cache")}))
"""

# Where the cache would be, without importing jax (lesion_jax then only sets JAX's environment).
_WHERE = r"""
import json, os, sys
import lesion_jax
lesion_jax.setup_runtime()
assert "jax" not in sys.modules
print(json.dumps({"dir": lesion_jax.compilation_cache_dir(),
                  "jax_env": os.environ.get("JAX_COMPILATION_CACHE_DIR")}))
"""

_CACHE_ENV_VARS = ("LESION_JAX_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR",
                   "_LESION_JAX_OWNED_JAX_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE",
                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")


def _run(code, tmp_path, *args, **env_vars):
  env = {k: v for k, v in os.environ.items() if k not in _CACHE_ENV_VARS}
  env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), JAX_PLATFORMS="cpu")
  env.update(env_vars)
  result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _files(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, names in os.walk(root) for f in names) if os.path.isdir(root) else []


def test_second_process_reuses_the_first_ones_compiles(tmp_path):
  cache = tmp_path / "cache"
  cold = _run(_COMPILE, tmp_path, "lesion_jax_first", LESION_JAX_COMPILATION_CACHE=str(cache))
  assert cold["dir"] == str(cache)
  assert cold["hits"] == 0 and cold["misses"] >= 1
  written = _files(cache)
  assert any(f.startswith("jit_convs-") for f in written), written
  # Also the order most scripts and tests use: jax imported first, then lesion_jax.
  warm = _run(_COMPILE, tmp_path, "jax_first", LESION_JAX_COMPILATION_CACHE=str(cache))
  assert warm["dir"] == str(cache)
  assert warm["misses"] == 0 and warm["hits"] == warm["requests"] >= 1
  assert _files(cache) == written
  assert warm["loss"] == cold["loss"]
  assert not _files(tmp_path / "xdg") and not _files(tmp_path / "home")


@pytest.mark.parametrize("order", ["lesion_jax_first", "jax_first"])
def test_disabled_cache_writes_nothing(tmp_path, order):
  result = _run(_COMPILE, tmp_path, order, LESION_JAX_COMPILATION_CACHE="0")
  assert result["dir"] is None
  assert result["hits"] == 0  # (JAX still computes cache keys, as it does without lesion_jax)
  assert not _files(tmp_path)


def test_cache_location_from_the_environment(tmp_path):
  where = lambda **env: _run(_WHERE, tmp_path, **env)["dir"]
  assert where() == str(tmp_path / "xdg" / "lesion_jax" / "jax_cache")
  assert where(XDG_CACHE_HOME="") == str(tmp_path / "home" / ".cache" / "lesion_jax" / "jax_cache")
  assert where(LESION_JAX_COMPILATION_CACHE=str(tmp_path / "c")) == str(tmp_path / "c")
  for off in ("0", "off", "OFF", "none", ""):
    assert where(LESION_JAX_COMPILATION_CACHE=off) is None, off
  assert where(JAX_ENABLE_COMPILATION_CACHE="false") is None
  # A directory chosen through JAX's own variable wins...
  assert where(JAX_COMPILATION_CACHE_DIR="/user/choice", LESION_JAX_COMPILATION_CACHE="0") == "/user/choice"
  assert where(JAX_COMPILATION_CACHE_DIR="/user/choice",
               LESION_JAX_COMPILATION_CACHE=str(tmp_path / "c")) == "/user/choice"
  # ...but not one that lesion_jax set in a parent process (subprocesses inherit the variable).
  inherited = {"JAX_COMPILATION_CACHE_DIR": "/parent/dir", "_LESION_JAX_OWNED_JAX_CACHE_DIR": "/parent/dir"}
  assert where(**inherited, LESION_JAX_COMPILATION_CACHE=str(tmp_path / "c")) == str(tmp_path / "c")
  off = _run(_WHERE, tmp_path, **inherited, LESION_JAX_COMPILATION_CACHE="0")
  assert off["dir"] is None and off["jax_env"] is None


def test_cache_dir_set_in_jax_config_wins(tmp_path):
  code = r"""
import json, jax
jax.config.update("jax_compilation_cache_dir", "/user/choice")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 3.0)
import lesion_jax
lesion_jax.setup_runtime()
print(json.dumps({"dir": lesion_jax.compilation_cache_dir(),
                  "min_time": jax.config.jax_persistent_cache_min_compile_time_secs}))
"""
  result = _run(code, tmp_path, LESION_JAX_COMPILATION_CACHE=str(tmp_path / "c"))
  assert result == {"dir": "/user/choice", "min_time": 3.0}


def test_importing_the_package_changes_nothing_global(tmp_path):
  code = r"""
import json, os, sys
import jax  # (jax itself sets TF_CPP_MIN_LOG_LEVEL when imported: not ours to count)
before = dict(os.environ)
import lesion_jax
import lesion_jax.models, lesion_jax.eval.metrics
print(json.dumps({"changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
                  "xla_flags": os.environ.get("XLA_FLAGS")}))
"""
  env = {k: v for k, v in os.environ.items() if k not in (*_CACHE_ENV_VARS, "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          check=True)
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {"changed": [], "xla_flags": None}
