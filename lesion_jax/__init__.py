"""lesion_jax: dermoscopy lesion segmentation, measurement and diagnosis in JAX.

Importing the package changes nothing global: `setup_runtime()` applies the runtime defaults
(XLA:CPU flags, JAX's compilation cache; lesion_jax/runtime.py), and the verbs in experiments/
call it first.
"""
from lesion_jax.runtime import compilation_cache_dir
from lesion_jax.runtime import setup as setup_runtime

__version__ = "0.1.0"
