"""Process set-up for running lesion_jax (the verbs in experiments/, the tests, the benchmarks):
XLA:CPU flags, JAX's persistent compilation cache and TensorFlow's log level. `import lesion_jax`
does none of it; `lesion_jax.setup_runtime()` (this module's `setup`) does, once per process,
before the first computation. A notebook may call it too, or leave JAX as it is."""
import importlib.metadata as metadata
import os
import sys

# XLA:CPU in jaxlib 0.10 hands convolutions to YNNPACK by default; for the convolution weight
# gradients that dominate a U-Net train step its kernels ran up to 3x slower than XLA's own
# (Eigen) convolutions, and the whole step ~1.3x slower (benchmarks/train_step.py prints both). The flag
# only affects the CPU backend and must be set before JAX creates its backends, hence in `setup`, before the first computation.
# The flag name is jaxlib-version specific (an unknown XLA flag aborts the process), so it is only
# added for the versions it was measured on. Set LESION_JAX_XLA_DEFAULTS=0 to keep XLA's choice.
XLA_CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="


def _apply_xla_cpu_defaults() -> None:
  if os.environ.get("LESION_JAX_XLA_DEFAULTS", "1") == "0":
    return
  try:
    jaxlib_version = metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if jaxlib_version.startswith("0.10.") and "xla_cpu_experimental_ynn_fusion_type" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAGS}".strip()


# JAX's persistent compilation cache, on by default: compiles are a large share of short runs on
# CPU (a U-Net train step takes ~25 s to compile), and XLA:CPU executables are cached since jax 0.4.
# Where: $LESION_JAX_COMPILATION_CACHE if set (a path; "0", "off", "none" or "" turn the cache
# off), else $XDG_CACHE_HOME/lesion_jax/jax_cache (default ~/.cache/lesion_jax/jax_cache).
# A cache directory chosen through JAX itself (JAX_COMPILATION_CACHE_DIR or
# jax.config.update("jax_compilation_cache_dir", ...)) is left alone. Compiles of at least
# CACHE_MIN_COMPILE_TIME_SECS are written; JAX's default, 1 s, skips the many small evaluation and
# metric compiles, yet on this 2-core CPU caching them too pays: writing a ~0.13 s compile costs
# ~7 ms, reading it back saves ~0.1 s, and tests/test_models.py took 106 s without the cache,
# 112 s with an empty one and 18 s on the second run (86 s when only compiles >= 1 s are kept).
# JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS (or jax.config) overrides it. Entries are a few KB
# each; JAX does not prune the directory unless jax_compilation_cache_max_size is set.
# jax is not imported here: if it is not imported yet, the
# settings go into JAX's environment variables, which jax reads when it is imported (and which
# subprocesses inherit); if it is, into jax.config. The cache is trusted code: never point it at
# a directory that others can write to.
COMPILATION_CACHE_ENV = "LESION_JAX_COMPILATION_CACHE"
CACHE_MIN_COMPILE_TIME_SECS = 0.0
_CACHE_OFF = ("0", "off", "none", "")
# The JAX_COMPILATION_CACHE_DIR this package set (here or in a parent process), so that a
# subprocess given another LESION_JAX_COMPILATION_CACHE can tell ours from the user's own.
_OWNED_DIR_ENV = "_LESION_JAX_OWNED_JAX_CACHE_DIR"


def _requested_cache_dir() -> str | None:
  value = os.environ.get(COMPILATION_CACHE_ENV)
  if value is None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lesion_jax", "jax_cache")
  if value.strip().lower() in _CACHE_OFF:
    return None
  return os.path.abspath(os.path.expanduser(value))


def _apply_compilation_cache_defaults() -> None:
  wanted = _requested_cache_dir()
  min_time_env = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
  jax = sys.modules.get("jax")
  if jax is None or not hasattr(jax, "config"):  # jax reads these when it is imported
    current = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    ours = current is not None and current == os.environ.get(_OWNED_DIR_ENV)
    if current is not None and not ours:
      return
    if wanted is None:
      if ours:
        del os.environ["JAX_COMPILATION_CACHE_DIR"], os.environ[_OWNED_DIR_ENV]
      return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[_OWNED_DIR_ENV] = wanted
    os.environ.setdefault(min_time_env, str(CACHE_MIN_COMPILE_TIME_SECS))
    return
  # jax was imported first: it has already read its environment, so go through jax.config.
  current = jax.config.jax_compilation_cache_dir
  if current is not None and current != os.environ.get(_OWNED_DIR_ENV):
    return
  jax.config.update("jax_compilation_cache_dir", wanted)
  if wanted is None:
    os.environ.pop(_OWNED_DIR_ENV, None)
    return
  os.environ[_OWNED_DIR_ENV] = wanted
  # Unless chosen already, by environment or jax.config (1 s is JAX's default).
  if min_time_env not in os.environ and jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_TIME_SECS)


def compilation_cache_dir() -> str | None:
  """The directory of JAX's persistent compilation cache in this process (whoever chose it), or
  None when the cache is off. For experiments to report; see the comment above for the rules."""
  jax = sys.modules.get("jax")
  if jax is not None and hasattr(jax, "config"):
    if not jax.config.jax_enable_compilation_cache:
      return None
    return jax.config.jax_compilation_cache_dir or None
  if os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "1").strip().lower() in ("0", "false", "f", "n", "no", "off"):
    return None
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or None



def setup() -> None:
  """Applies this package's runtime defaults to the current process (and its subprocesses, through
  the environment): TensorFlow's C++ start-up chatter kept out of the logs, the XLA:CPU flag, and
  the compilation cache, each as described above and each left alone where the user chose."""
  # TensorFlow is only the input pipeline here.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _apply_xla_cpu_defaults()
  _apply_compilation_cache_defaults()
