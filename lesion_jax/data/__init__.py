"""Datasets (TFDS builders) and tf.data input pipelines.

TensorFlow is used for input only: GPUs/TPUs are hidden from it so it never allocates accelerator
memory that JAX needs.
"""
import tensorflow as tf

try:
  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU")
except (RuntimeError, ValueError):  # devices already initialised, or no such device type
  pass
