"""The DCGAN's losses, per class model: (B, C) logits or (B, C, F) features of B examples for each
of the C class models -> (C,), so each class model's gradient is its own."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, real_label: float = 1.0) -> jax.Array:
  """(B, C) logits -> (C,): each class model's mean BCE, real images against `real_label` (0.9 is
  one-sided label smoothing, Salimans et al. 2016) and generated ones against 0."""
  real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.full_like(real_logits, real_label))
  fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))
  return real.mean(axis=0) + fake.mean(axis=0)


def generator_loss(fake_logits: jax.Array) -> jax.Array:
  """(B, C) -> (C,): the non-saturating generator loss -log D(G(z)) per class model."""
  return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)).mean(axis=0)


def feature_matching_loss(real_features: jax.Array, fake_features: jax.Array) -> jax.Array:
  """(B, C, F) -> (C,): squared distance between the batch-mean discriminator features of real and
  generated images, per class model (Salimans et al. 2016)."""
  return jnp.sum(jnp.square(real_features.mean(axis=0) - fake_features.mean(axis=0)), axis=-1)
