"""The DCGAN's step functions: one joint round of training (a discriminator update, then the
generator's updates) on a `GANState` and the sample step, pure functions the loop jits once."""
from __future__ import annotations

from typing import Any, Callable

import jax

from lesion_jax.pipelines.gan import losses
from lesion_jax.train.state import TrainState
from lesion_jax.train.steps import Batch, apply_model


def _generate(generator: TrainState, params: Any, z: jax.Array) -> tuple[jax.Array, Any]:
  return apply_model(generator, params, z, train=True)


def make_train_step(latent_dim: int, real_label: float = 0.9, extra_generator_steps: int = 2,
                    feature_matching: bool = False) -> Callable:
  """One joint round of DCGAN training on a `GANState` (state.py): a discriminator update on
  real images and a batch generated from fresh latents, then 1 + `extra_generator_steps`
  generator updates, each on new latents (the paper's two extra generator updates per round keep
  the discriminator from winning early).

  batch['image'] (B, C, S, S, 3) in [-1, 1]: B real images of each of the C class models. Each
  class model's loss is its own mean over B, and the losses are summed over classes, so a class's
  gradient is exactly what its model would get trained alone (de-coupled) and shared layers get
  the sum (coupled). The generator minimises -log D(G(z)) or, with `feature_matching`, the distance
  between mean discriminator features of real and generated images. Metrics (mean over classes):
  d_loss, g_loss, d_real / d_fake (mean D(x) on real / generated images), loss (= d_loss + g_loss,
  checked for divergence by the loop).
  """

  def train_step(state, batch: Batch, rng: jax.Array):
    real = batch["image"]
    b, c = real.shape[:2]
    rng_d, rng_g = jax.random.split(rng)
    gen, disc = state.generator, state.discriminator

    # Discriminator: real, then generated (BatchNorm statistics updated by each pass in turn).
    fake, gen_stats = _generate(gen, gen.params, jax.random.normal(rng_d, (b, c, latent_dim)))
    gen = gen.replace(batch_stats=gen_stats)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(params):
      (real_logits, real_features), stats = apply_model(disc, params, real, train=True)
      (fake_logits, _), stats = apply_model(disc.replace(batch_stats=stats), params, fake, train=True)
      per_class = losses.discriminator_loss(real_logits, fake_logits, real_label)
      return per_class.sum(), (per_class, real_logits, fake_logits, real_features, stats)

    grads, (d_per_class, real_logits, fake_logits, real_features, disc_stats) = jax.grad(
        d_loss_fn, has_aux=True)(disc.params)
    disc = disc.apply_gradients(grads=grads, batch_stats=disc_stats)
    real_features = jax.lax.stop_gradient(real_features)

    def g_update(gen, key):
      def g_loss_fn(params):
        images, stats = _generate(gen, params, jax.random.normal(key, (b, c, latent_dim)))
        # The discriminator judges in training mode (batch statistics), its statistics untouched.
        (logits, features), _ = apply_model(disc, disc.params, images, train=True)
        per_class = (losses.feature_matching_loss(real_features, features) if feature_matching
                     else losses.generator_loss(logits))
        return per_class.sum(), (per_class, stats)

      grads, (per_class, stats) = jax.grad(g_loss_fn, has_aux=True)(gen.params)
      return gen.apply_gradients(grads=grads, batch_stats=stats), per_class

    # Unrolled: XLA:CPU ran the same updates 2.7x slower inside a scan loop.
    gen, g_per_class = jax.lax.scan(g_update, gen, jax.random.split(rng_g, 1 + extra_generator_steps),
                                    unroll=True)
    metrics = {"d_loss": d_per_class.mean(), "g_loss": g_per_class[-1].mean(),
               "d_real": jax.nn.sigmoid(real_logits).mean(), "d_fake": jax.nn.sigmoid(fake_logits).mean()}
    metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
    return state.replace(step=state.step + 1, generator=gen, discriminator=disc), metrics

  return train_step


def sample_step(state, batch: Batch) -> jax.Array:
  """Images (B, C, S, S, 3) in [-1, 1] from latents batch['z'] (B, C, latent_dim). BatchNorm uses
  the batch's own statistics, as in training (and the reference DCGAN code, which never switches
  the generator to inference mode): sample in batches of the training size."""
  images, _ = _generate(state.generator, state.generator.params, batch["z"])
  return images
