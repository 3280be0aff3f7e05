"""lesion_jax: dermoscopy lesion segmentation, measurement and diagnosis in JAX."""
import importlib.metadata as _metadata
import os as _os

# TensorFlow is only the input pipeline here: keep its C++ start-up chatter out of the logs.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# XLA:CPU in jaxlib 0.10 hands convolutions to YNNPACK by default; for the convolution weight
# gradients that dominate a U-Net train step its kernels ran up to 3x slower than XLA's own
# (Eigen) convolutions, and the whole step ~1.3x slower (benchmarks/train_step.py prints both). The flag
# only affects the CPU backend and must be set before JAX creates its backends, hence here.
# The flag name is jaxlib-version specific (an unknown XLA flag aborts the process), so it is only
# added for the versions it was measured on. Set LESION_JAX_XLA_DEFAULTS=0 to keep XLA's choice.
XLA_CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="


def _apply_xla_cpu_defaults() -> None:
  if _os.environ.get("LESION_JAX_XLA_DEFAULTS", "1") == "0":
    return
  try:
    jaxlib_version = _metadata.version("jaxlib")
  except _metadata.PackageNotFoundError:
    return
  flags = _os.environ.get("XLA_FLAGS", "")
  if jaxlib_version.startswith("0.10.") and "xla_cpu_experimental_ynn_fusion_type" not in flags:
    _os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_FLAGS}".strip()


_apply_xla_cpu_defaults()
