"""lesion_jax: dermoscopy lesion segmentation, measurement and diagnosis in JAX."""
import os as _os

# TensorFlow is only the input pipeline here: keep its C++ start-up chatter out of the logs.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
