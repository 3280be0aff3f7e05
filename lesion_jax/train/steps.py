"""Pure step functions: `train_step(state, batch, rng) -> (state, metrics)` and prediction steps
`predict(state, batch) -> outputs`.

They are plain functions of arrays; `lesion_jax.train.loop` jits them once (with donated state and
mesh shardings). Batches are pytrees (nested dicts) of arrays; the segmentation and
classification steps here read 'image' (N, H, W, 3) float32 and 'mask' (N, H, W, 1) or 'label'
(N,), plus an optional 'weight' (N,) that is 0 for padding.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lesion_jax.train import losses
from lesion_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def apply_model(state: TrainState, params: Any, *inputs: Any, train: bool,
                rng: jax.Array | None = None) -> tuple[Any, Any]:
  """Runs the model on its positional `inputs` (any number, each any pytree); returns (outputs,
  new batch_stats) — batch_stats unchanged unless training."""
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  rngs = {"dropout": rng} if rng is not None else None
  if train and state.batch_stats:
    out, updates = state.apply_fn(variables, *inputs, train=True, rngs=rngs, mutable=["batch_stats"])
    return out, updates["batch_stats"]
  return state.apply_fn(variables, *inputs, train=train, rngs=rngs), state.batch_stats


def make_supervised_train_step(target_key: str | Callable[[Batch], jax.Array], loss_per_example: Callable,
                               batch_metrics: Callable) -> TrainStep:
  """A train step for a single-input model: the mean of `loss_per_example(logits, target)`
  (weighted by batch['weight'] where present) is minimised; `batch_metrics(logits, target,
  weights)` adds metrics beside "loss". The target is batch[target_key], or target_key(batch)
  when it is a function (a target built from several features)."""

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    weights = batch.get("weight")
    target = target_key(batch) if callable(target_key) else batch[target_key]

    def loss_fn(params):
      logits, batch_stats = apply_model(state, params, batch["image"], train=True, rng=rng)
      return losses.weighted_mean(loss_per_example(logits, target), weights), (logits, batch_stats)

    (value, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": value, **batch_metrics(logits, target, weights)}
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

  return train_step


def make_segmentation_train_step(loss: str = "bce") -> TrainStep:
  """A train step for per-pixel binary segmentation with the given loss ('bce', 'dice', 'bce_dice')."""

  def jaccard(logits, mask, weights):
    pred, target = logits > 0, mask > 0.5
    inter = jnp.sum(pred & target, axis=(1, 2, 3))
    union = jnp.sum(pred | target, axis=(1, 2, 3))
    return {"jaccard": losses.weighted_mean(jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0), weights)}

  return make_supervised_train_step(
      "mask", lambda logits, mask: losses.segmentation_loss_per_example(logits, mask, loss), jaccard)


def make_classification_train_step(label_smoothing: float = 0.0,
                                   class_weights: tuple[float, ...] | None = None) -> TrainStep:
  """A train step for image classification with softmax cross-entropy (integer labels), each
  example's loss scaled by its class's weight where `class_weights` are given."""

  def accuracy(logits, labels, weights):
    return {"accuracy": losses.weighted_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), weights)}

  def loss(logits, labels):
    per_example = losses.classification_loss_per_example(logits, labels, label_smoothing)
    return per_example if class_weights is None else per_example * jnp.asarray(class_weights)[labels]

  return make_supervised_train_step("label", loss, accuracy)


def _lesion_probability(state: TrainState, images: jax.Array) -> jax.Array:
  logits, _ = apply_model(state, state.params, images, train=False)
  return jax.nn.sigmoid(logits[..., 0])


def segmentation_predict_step(state: TrainState, batch: Batch) -> jax.Array:
  """Lesion probability per pixel of batch['image'], (N, H, W) float32."""
  return _lesion_probability(state, batch["image"])


def _flip_averaged_probability(state: TrainState, images: jax.Array) -> jax.Array:
  flips = ((), (1,), (2,), (1, 2))  # () flips nothing: the image itself
  return sum(jnp.flip(_lesion_probability(state, jnp.flip(images, axes)), axes)
             for axes in flips) / len(flips)


def segmentation_predict_step_flip_tta(state: TrainState, batch: Batch) -> jax.Array:
  """`segmentation_predict_step` averaged over the 4 horizontal/vertical flips of each image
  (test-time augmentation; each flip is undone before averaging, so maps stay aligned)."""
  return _flip_averaged_probability(state, batch["image"])


def make_segmentation_tta_predict_step(scales: tuple[int, ...] = (), flips: bool = True) -> Callable:
  """A predict step averaging the lesion probability over test-time augmentations: the four
  flips (with `flips`) at each side in `scales` (the batch's image resized in-graph, bilinear,
  its map resized back; () = the input size only). A fully convolutional net sees the lesion at
  other scales; flips and resizes commute, so the average stays flip-equivariant."""
  scales = tuple(int(s) for s in scales)

  def predict(state: TrainState, batch: Batch) -> jax.Array:
    images = batch["image"]
    n, h, w, c = images.shape
    one = _flip_averaged_probability if flips else _lesion_probability
    total = 0.0
    for side in scales or (h,):
      if side == h == w:
        total += one(state, images)
      else:
        scaled = jax.image.resize(images, (n, side, side, c), "linear")
        total += jax.image.resize(one(state, scaled), (n, h, w), "linear")
    return total / len(scales or (h,))

  return predict


def classification_predict_step(state: TrainState, batch: Batch) -> jax.Array:
  """Class probabilities of batch['image'], (N, C) float32."""
  logits, _ = apply_model(state, state.params, batch["image"], train=False)
  return jax.nn.softmax(logits, axis=-1)


def _hole_metrics(output: jax.Array, target: jax.Array, mask: jax.Array,
                  weights: jax.Array | None) -> Metrics:
  """Mean absolute error and PSNR (data range 2, i.e. [-1, 1] images) over the hole pixels, averaged
  over the examples that have a hole."""
  hole = 1 - jnp.broadcast_to(mask, output.shape)
  count = hole.sum(axis=(1, 2, 3))
  l1 = jnp.sum(hole * jnp.abs(output - target), axis=(1, 2, 3)) / jnp.maximum(count, 1)
  mse = jnp.sum(hole * jnp.square(output - target), axis=(1, 2, 3)) / jnp.maximum(count, 1)
  psnr = 10 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))
  has_hole = (count > 0).astype(jnp.float32)
  weights = has_hole if weights is None else weights * has_hole
  return {"hole_l1": losses.weighted_mean(l1, weights), "hole_psnr": losses.weighted_mean(psnr, weights)}


def make_inpainting_train_step(weights: losses.InpaintingLossWeights = losses.InpaintingLossWeights(),
                               feature_fn: Callable[[jax.Array], Any] | None = None) -> TrainStep:
  """A train step for an inpainting model `apply_fn(variables, image, mask, train=...)` (PConvUNet)
  with `losses.inpainting_loss_per_example(..., feature_fn, weights)`.

  Reads batch['target'] (N, H, W, 3), the clean image in [-1, 1], batch['mask'] (N, H, W, 1) or
  (N, H, W, 3), 1 = valid, 0 = hole, and an optional batch['weight'] (N,). The model's input is
  target * mask, formed here, so it never sees the hole contents (a partial conv would ignore them
  anyway; zeroing them also keeps them out of any non-partial layer). Metrics: "loss" (= "total"),
  every loss term, and the hole pixels' "hole_l1" and "hole_psnr".
  """

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    target, mask, example_weights = batch["target"], batch["mask"], batch.get("weight")
    inputs = target * mask

    def loss_fn(params):
      output, batch_stats = apply_model(state, params, inputs, mask, train=True, rng=rng)
      terms = losses.inpainting_loss_per_example(output, target, mask, feature_fn, weights)
      return losses.weighted_mean(terms["total"], example_weights), (output, terms, batch_stats)

    (value, (output, terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": value, **{k: losses.weighted_mean(v, example_weights) for k, v in terms.items()},
               **_hole_metrics(output, target, mask, example_weights)}
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

  return train_step


def inpainting_predict_step(state: TrainState, batch: Batch) -> jax.Array:
  """batch['image'] with its holes (batch['mask'] 0; 1 = valid) filled by the model, (N, H, W, 3)
  float32: the input itself where the mask is 1 (exactly), the model's output clipped to [-1, 1]
  where it is 0. The values in batch['image']'s holes do not affect the result."""
  image, mask = batch["image"].astype(jnp.float32), batch["mask"]
  output, _ = apply_model(state, state.params, image * mask, mask, train=False)
  return jnp.where(mask > 0.5, image, jnp.clip(output, -1.0, 1.0))


def _gan_generate(generator: TrainState, params: Any, z: jax.Array) -> tuple[jax.Array, Any]:
  return apply_model(generator, params, z, train=True)


def make_gan_train_step(latent_dim: int, real_label: float = 0.9, extra_generator_steps: int = 2,
                        feature_matching: bool = False) -> Callable:
  """One joint round of DCGAN training on a `GANState` (train/state.py): a discriminator update on
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
    fake, gen_stats = _gan_generate(gen, gen.params, jax.random.normal(rng_d, (b, c, latent_dim)))
    gen = gen.replace(batch_stats=gen_stats)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(params):
      (real_logits, real_features), stats = apply_model(disc, params, real, train=True)
      (fake_logits, _), stats = apply_model(disc.replace(batch_stats=stats), params, fake, train=True)
      per_class = losses.gan_discriminator_loss(real_logits, fake_logits, real_label)
      return per_class.sum(), (per_class, real_logits, fake_logits, real_features, stats)

    grads, (d_per_class, real_logits, fake_logits, real_features, disc_stats) = jax.grad(
        d_loss_fn, has_aux=True)(disc.params)
    disc = disc.apply_gradients(grads=grads, batch_stats=disc_stats)
    real_features = jax.lax.stop_gradient(real_features)

    def g_update(gen, key):
      def g_loss_fn(params):
        images, stats = _gan_generate(gen, params, jax.random.normal(key, (b, c, latent_dim)))
        # The discriminator judges in training mode (batch statistics), its statistics untouched.
        (logits, features), _ = apply_model(disc, disc.params, images, train=True)
        per_class = (losses.feature_matching_loss(real_features, features) if feature_matching
                     else losses.gan_generator_loss(logits))
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


def gan_sample_step(state, batch: Batch) -> jax.Array:
  """Images (B, C, S, S, 3) in [-1, 1] from latents batch['z'] (B, C, latent_dim). BatchNorm uses
  the batch's own statistics, as in training (and the reference DCGAN code, which never switches
  the generator to inference mode): sample in batches of the training size."""
  images, _ = _gan_generate(state.generator, state.generator.params, batch["z"])
  return images
