"""The duplicate check of generated images (the data-generation paper's Fig. 5): for every generated
image, the mean squared error to every training image of its class, its nearest neighbour, and a
flag for near-copies (a generator that memorised its few training images would balance the
classes with copies, which teaches the classifier nothing new).

Distances are computed on device in chunks of generated x training images, so memory stays
bounded by the chunk sizes whatever the set sizes: |g - t|^2 = |g|^2 + |t|^2 - 2 g.t with the
dot products as one matmul per chunk pair.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class NearestNeighbours:
  """Per generated image: `mse` to its nearest training image and that image's `index`."""
  mse: np.ndarray  # (N,) float32
  index: np.ndarray  # (N,) int64


@jax.jit
def _chunk_min(gen: jax.Array, train: jax.Array, train_valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  g2 = jnp.sum(gen * gen, axis=1)
  t2 = jnp.sum(train * train, axis=1)
  d = (g2[:, None] + t2[None, :] - 2.0 * gen @ train.T) / gen.shape[1]
  d = jnp.where(train_valid[None, :], jnp.maximum(d, 0.0), jnp.inf)
  return jnp.min(d, axis=1), jnp.argmin(d, axis=1)


def _padded_chunks(x: np.ndarray, size: int):
  for start in range(0, len(x), size):
    chunk = x[start:start + size]
    valid = np.ones(size, bool)
    if len(chunk) < size:  # pad to a fixed shape: one compilation for every chunk
      valid[len(chunk):] = False
      chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
    yield start, chunk, valid


def nearest_neighbours(generated: np.ndarray, training: np.ndarray, chunk: int = 256) -> NearestNeighbours:
  """Nearest training image (by per-pixel MSE) of every generated image. Both are (N, ...) arrays of
  the same image shape and value range (e.g. float in [0, 1] or [-1, 1]); MSE is per value."""
  generated, training = np.asarray(generated, np.float32), np.asarray(training, np.float32)
  if generated.shape[1:] != training.shape[1:]:
    raise ValueError(f"generated images {generated.shape[1:]} and training images {training.shape[1:]} differ in shape")
  if len(training) == 0:
    raise ValueError("no training images to compare with")
  gen = generated.reshape(len(generated), -1)
  train = training.reshape(len(training), -1)
  best = np.full(len(gen), np.inf, np.float32)
  index = np.zeros(len(gen), np.int64)
  for g_start, g_chunk, _ in _padded_chunks(gen, chunk):
    n = min(chunk, len(gen) - g_start)
    for t_start, t_chunk, t_valid in _padded_chunks(train, chunk):
      mse, arg = jax.device_get(_chunk_min(jnp.asarray(g_chunk), jnp.asarray(t_chunk), jnp.asarray(t_valid)))
      mse, arg = mse[:n], arg[:n]
      better = mse < best[g_start:g_start + n]
      best[g_start:g_start + n] = np.where(better, mse, best[g_start:g_start + n])
      index[g_start:g_start + n] = np.where(better, arg + t_start, index[g_start:g_start + n])
  return NearestNeighbours(best, index)


def near_copies(mse: np.ndarray, threshold: float) -> np.ndarray:
  """Boolean flags of generated images whose nearest-neighbour MSE is under `threshold`."""
  return np.asarray(mse) < threshold
