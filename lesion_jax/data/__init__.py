"""Datasets (TFDS builders) and tf.data input pipelines.

TensorFlow is used for input only: the modules here that import it call
`hide_accelerators_from_tensorflow()` so it never allocates accelerator memory that JAX needs.
Importing the package itself does not import TensorFlow (`data.batching` is numpy only).
"""


def hide_accelerators_from_tensorflow() -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):  # devices already initialised, or no such device type
    pass


def builder(name: str, data_dir: str | None = None, manual_dir: str | None = None):
  """The prepared TFDS builder of a dataset by name (`synthetic_lesions`, `synthetic_lesions/s128`,
  `isic2017` with the archive in `manual_dir`, ...); `builder(...).as_dataset(split=...)` reads it.
  Imports TensorFlow."""
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return pipeline.get_builder(name, data_dir, manual_dir)
