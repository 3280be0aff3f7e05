"""The GAN's train state: both players, each a TrainState of its own (lesion_jax/train/state.py),
stepped together by the joint rounds of steps.make_train_step."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from lesion_jax.train.state import TrainState, create_train_state


class GANState(struct.PyTreeNode):
  """The two players of a GAN, each a TrainState (its own optimiser, step count and BatchNorm
  statistics); `step` counts joint rounds (the loop's step). The generator's own step runs ahead
  when it gets extra updates per round."""
  step: jax.Array
  generator: TrainState
  discriminator: TrainState


def create_state(generator: nn.Module, discriminator: nn.Module, generator_tx: optax.GradientTransformation,
                 discriminator_tx: optax.GradientTransformation, rng: jax.Array, z: jax.Array,
                 images: jax.Array) -> GANState:
  """Initialises both players on example inputs (only shapes matter)."""
  rng_g, rng_d = jax.random.split(rng)
  return GANState(step=jnp.zeros((), jnp.int32),
                  generator=create_train_state(generator, generator_tx, rng_g, z),
                  discriminator=create_train_state(discriminator, discriminator_tx, rng_d, images))
