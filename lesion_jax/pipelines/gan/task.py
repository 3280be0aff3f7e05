"""Data generation (pipeline 3, part 2): DCGANs that synthesise images of scarce classes, de-coupled
(one independent DCGAN per class) or coupled (CoGAN: generators share their first layers,
discriminators their last ones), trained side by side on class-grouped batches by the one loop.

Validation is FD-derm (`metrics.frechet_distance` and `kernel_distance` on the penultimate
features of this project's own classifier, `feature_workdir`, trained on the same data): per
class, between generated images and the real images of `val_split`, next to the same distance
between two halves of those real images (what "as close as real data gets" looks like at that
sample size). It picks the best checkpoint (lowest mean FD) — the early stopping. Values are not
comparable with published FIDs (Inception features on other data).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from lesion_jax import config as config_lib
from lesion_jax.config import field
from lesion_jax.data import ops, pipeline
from lesion_jax.data.augment import AugmentConfig
from lesion_jax.eval import figures
from lesion_jax.models import dcgan
from lesion_jax.pipelines.gan import metrics, steps
from lesion_jax.pipelines.gan.state import create_state
from lesion_jax.tasks import base
from lesion_jax.train import loop, sharding
from lesion_jax.train.state import OptimizerConfig

GAN_AUGMENT = AugmentConfig(flip=True, rotate=False, crop=False, color=0.0)  # mirror images only


@dataclasses.dataclass(frozen=True)
class DCGANModelConfig:
  latent_dim: int = field(10, "Latent length (the paper's de-coupled models: 10, from N(0, 1)).")
  generator_features: int = field(64, "Generator features at its last hidden layer (doubling towards z, at most 8x).")
  discriminator_features: int = field(64, "Discriminator features at its first layer (doubling, at most 8x).")
  coupled: bool = field(False, "One coupled model for all classes (CoGAN) instead of one DCGAN per class.")
  shared_generator_layers: int | None = field(None, "Generator layers shared by the classes (coupled; "
                                              "default: all but the last). De-coupled: 0.")
  shared_discriminator_layers: int | None = field(None, "Discriminator layers shared (coupled; default: "
                                                  "all but the first). De-coupled: 0.")
  minibatch_kernels: int = field(0, "Minibatch discrimination kernels (Salimans et al. 2016; 0 = off).")


@dataclasses.dataclass(frozen=True)
class GANConfig:
  input: pipeline.InputConfig = pipeline.InputConfig(batch_size=32, image_size=64, augment=GAN_AUGMENT)
  model: DCGANModelConfig = DCGANModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=2e-4, beta1=0.5, lr_schedule="constant", warmup_steps=0)
  classes: tuple[str, ...] = field((), "Classes to generate (names of label_key); default: de-coupled, every "
                                   "class but the most frequent in train_split; coupled, all.")
  label_key: str = field("label", "Class feature the images are grouped by.")
  real_label: float = field(0.9, "Discriminator target for real images (0.9: one-sided label smoothing).")
  extra_generator_steps: int = field(2, "Extra generator updates after each joint round (the paper: 2).")
  feature_matching: bool = field(False, "Generator matches mean discriminator features (Salimans et al.).")
  # Steps are joint rounds; FD-derm every eval_every, between generated images and the real ones of
  # val_split (train: scarce classes have few validation images); train_split gives the real images.
  run: config_lib.RunConfig = config_lib.RunConfig(num_steps=2000, eval_every=500, val_split="train")
  sample_every: int = field(500, "Sample grid per class (figures/ and TensorBoard) every this many steps.")
  feature_workdir: str | None = field(None, "train_classifier run whose features give FD-derm (none: no FD, keep "
                                      "the last).", location=True)
  fd_samples: int = field(256, "Generated images per class for FD-derm (at least as many as the real ones).")
  image_artifacts: str | None = field(None, "Artifact store of images used instead of the dataset's (e.g. purified).")
  num_generated: int = field(0, "Images generated per class once trained (0: what balancing the train split "
                             "needs, x1.25).")
  duplicate_threshold: float | None = field(None, "Near-copy MSE threshold of the generated images (images in "
                                            "[0, 1]); default: per class, the smallest MSE between two of its "
                                            "training images.")


@functools.lru_cache(maxsize=4)
def classifier_embedding(workdir: str) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
  """(`fn(images in [-1, 1], (N, S, S, 3)) -> (N, F)` features feeding the last dense layer of the
  best checkpoint of a classification run, its input size S)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import classification  # pylint: disable=g-import-not-at-top
  task, variables, apply_fn = classification.restored_classifier(workdir, "feature_workdir")

  @jax.jit
  def embed(images):
    captured = []

    def keep_dense_input(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
        captured.append(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(keep_dense_input):
      apply_fn(variables, images, train=False)
    return captured[-1].reshape(images.shape[0], -1).astype(jnp.float32)

  def fn(images: np.ndarray) -> np.ndarray:
    out = [np.asarray(embed(jnp.asarray(images[i:i + 64]))) for i in range(0, len(images), 64)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

  return fn, task.config.input.image_size


def fd_derm_scores(real: np.ndarray, generated: np.ndarray, seed: int = 0) -> dict[str, float]:
  """FD and KID of generated vs real features, and the same of two halves of the real features
  (the reference: what two real samples of that size give), with equal sample sizes: each
  distance uses half the real features against as many generated (or the other half)."""
  order = np.random.default_rng(seed).permutation(len(real))
  half = len(real) // 2
  a, b = real[order[:half]], real[order[half:2 * half]]
  g = generated[:half]
  return {"fd": metrics.frechet_distance(g, a), "fd_real_halves": metrics.frechet_distance(b, a),
          "kid": metrics.kernel_distance(g, a), "kid_real_halves": metrics.kernel_distance(b, a),
          "num_real": int(len(real))}


@base.register
class GANTask(base.Task):
  name = "gan"
  config_cls = GANConfig

  @functools.cached_property
  def label_names(self) -> list[str]:
    return list(self.builder.info.features[self.config.label_key].names)

  @functools.cached_property
  def class_counts(self) -> np.ndarray:
    return pipeline.class_counts(self.builder, self.config.run.train_split, self.config.label_key, self._joins())

  @functools.cached_property
  def class_names(self) -> list[str]:
    """The classes modelled, in model order (axis 1 of batches and samples)."""
    c = self.config
    if c.classes:
      return list(c.classes)
    if c.model.coupled:
      return list(self.label_names)
    most = int(np.argmax(self.class_counts))
    return [n for i, n in enumerate(self.label_names) if i != most and self.class_counts[i]]

  @property
  def class_indices(self) -> tuple[int, ...]:
    return tuple(self.label_names.index(n) for n in self.class_names)

  @property
  def val_split(self) -> str:
    return self.config.run.val_split if self.config.feature_workdir else ""

  def best_metric(self):
    return "val/fd_mean", "min"

  def shared_layers(self) -> tuple[int, int]:
    """(generator, discriminator) layers shared by the class models."""
    m, n = self.config.model, dcgan.num_layers(self.config.input.image_size)
    if not m.coupled:
      return 0, 0
    return (n - 1 if m.shared_generator_layers is None else m.shared_generator_layers,
            n - 1 if m.shared_discriminator_layers is None else m.shared_discriminator_layers)

  def models(self) -> tuple[dcgan.Generator, dcgan.Discriminator]:
    m, size = self.config.model, self.config.input.image_size
    shared_g, shared_d = self.shared_layers()
    dtype = self.policy.compute_dtype
    c = len(self.class_names)
    return (dcgan.Generator(size, m.generator_features, c, shared_g, dtype),
            dcgan.Discriminator(size, m.discriminator_features, c, shared_d, m.minibatch_kernels, dtype))

  def check(self, mesh, extra_splits=()) -> None:
    c = self.config
    try:
      n = dcgan.num_layers(c.input.image_size)
    except ValueError as e:
      raise config_lib.ConfigError(f"`input.image_size`={c.input.image_size}: {e}") from None
    features = self.builder.info.features
    if c.label_key not in features or not hasattr(features[c.label_key], "names"):
      raise config_lib.ConfigError(f"`label_key`={c.label_key!r}: {self.builder.info.full_name} has no such "
                                   f"class feature (features: {sorted(features)})")
    unknown = [k for k in c.classes if k not in self.label_names]
    if unknown:
      raise config_lib.ConfigError(f"`classes`: {unknown} not among {self.label_names}")
    if c.model.coupled and len(self.class_names) < 2:
      raise config_lib.ConfigError("`model.coupled` needs at least two `classes`")
    for name, value in zip(("shared_generator_layers", "shared_discriminator_layers"), self.shared_layers()):
      if not 0 <= value <= n:
        raise config_lib.ConfigError(f"`model.{name}`={value}: the players have {n} layers at {c.input.image_size} px")
    empty = [k for k, i in zip(self.class_names, self.class_indices) if self.class_counts[i] == 0]
    if empty:
      raise config_lib.ConfigError(f"`classes`: {empty} have no image in {c.run.train_split!r}")
    super().check(mesh, extra_splits)

  def init_state(self, rng):
    c = self.config
    generator, discriminator = self.models()
    k, size = len(self.class_names), c.input.image_size
    tx = c.optimizer.build(c.run.num_steps)
    return create_state(generator, discriminator, tx, tx, rng, jnp.zeros((1, k, c.model.latent_dim)),
                        jnp.zeros((1, k, size, size, 3)))

  def train_step(self):
    c = self.config
    return steps.make_train_step(c.model.latent_dim, c.real_label, c.extra_generator_steps, c.feature_matching)

  def _joins(self) -> tuple[pipeline.ArtifactJoin, ...]:
    c = self.config
    return (pipeline.ArtifactJoin("image", c.image_artifacts),) if c.image_artifacts else ()

  def _ops(self, train: bool) -> list:
    c = self.config
    return ops.classification_ops(c.input.image_size, c.input.augment if train else None, c.label_key)

  def _input(self) -> pipeline.InputConfig:
    return dataclasses.replace(self.config.input, joins=self._joins())

  def train_batches(self, start_step: int) -> Iterator[base.Batch]:
    c = self.config
    return pipeline.class_grouped_iterator(self._input(), self._ops(train=True), c.run.train_split, c.label_key,
                                           self.class_indices, start_step, self.builder)

  def eval_batches(self, split: str) -> Iterator[base.Batch]:
    return pipeline.eval_iterator(self._input(), self._ops(train=False), split, self.builder)

  def predict_fns(self):
    return {"predict": steps.sample_step}

  # --- sampling --------------------------------------------------------------------------------
  def latents(self, seed: int, num: int) -> np.ndarray:
    """(num, C, latent_dim) N(0, 1) latents, a pure function of (seed, num)."""
    rng = np.random.default_rng([self.config.input.seed, seed])
    return rng.standard_normal((num, len(self.class_names), self.config.model.latent_dim)).astype(np.float32)

  def sample(self, state, z: np.ndarray, mesh=None, predict=None) -> np.ndarray:
    """Images (N, C, S, S, 3) in [-1, 1] from latents (N, C, latent), in batches of the training size
    (BatchNorm uses each batch's statistics, as in training). On several hosts every host passes
    the same `z` and gets every image: each batch is the whole global batch (as on one host),
    split over the mesh's devices, and gathered back to every host."""
    mesh = mesh or sharding.make_mesh()
    predict = predict or self.jit_predict(state, mesh)
    b = self.batch_size
    out = []
    for start in range(0, len(z), b):
      chunk = z[start:start + b]
      n = len(chunk)
      if n < b:  # a full batch keeps BatchNorm's statistics those of a training-sized batch
        chunk = np.concatenate([chunk, self.latents(10_000 + start, b - n)])
      out.append(sharding.gather_global(predict(state, sharding.global_batch({"z": chunk}, mesh)))[:n])
    return np.concatenate(out) if out else np.zeros((0, len(self.class_names)))

  def real_examples(self, split: str) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The split's (images in [-1, 1] at the GAN's size, ids) per modelled class: the whole split
    on every host, in the split's order (each host reads its shard, a contiguous part, and the
    shards are gathered in process order), so FD-derm compares with the same real images as on
    one host."""
    images, labels, ids = [], [], []
    for batch in self.eval_batches(split):
      real = batch["weight"] > 0
      images.append(batch["image"][real])
      labels.append(batch["label"][real])
      ids.extend(base.decode_ids(batch["id"][real]))
    rows = sharding.allgather_rows({"image": np.concatenate(images), "label": np.concatenate(labels)})
    images, labels, ids = rows["image"], rows["label"], np.asarray(sharding.allgather_strings(ids))
    return {n: (images[labels == i], list(ids[labels == i])) for n, i in zip(self.class_names, self.class_indices)}

  def real_images(self, split: str) -> dict[str, np.ndarray]:
    return {n: x for n, (x, _) in self.real_examples(split).items()}

  def images_to_balance(self, margin: float = 1.25) -> dict[str, int]:
    """Per modelled class, how many images to generate: what balancing the train split against
    its largest class needs, times `margin` (near-copies are left out), at least 16."""
    deficit = int(self.class_counts.max()) - self.class_counts
    return {n: max(16, int(np.ceil(deficit[i] * margin))) for n, i in zip(self.class_names, self.class_indices)}

  def class_records(self) -> dict[str, dict[str, int]]:
    """The class features a generated image of each modelled class carries: its label_key index,
    and every other class feature that is constant within the class in the train split (e.g.
    'malignant' of a diagnosis)."""
    features = self.builder.info.features
    other = [k for k, f in features.items() if hasattr(f, "names") and k != self.config.label_key]
    ds = pipeline.read_split(self.builder, self.config.run.train_split, per_process=False)
    rows = [tuple(int(ex[k]) for k in (self.config.label_key, *other)) for ex in ds.as_numpy_iterator()]
    out = {}
    for name, i in zip(self.class_names, self.class_indices):
      record = {self.config.label_key: i}
      for j, k in enumerate(other):
        values = {r[j + 1] for r in rows if r[0] == i}
        if len(values) == 1:
          record[k] = values.pop()
      out[name] = record
    return out

  def after_training(self, state, workdir, mesh) -> dict[str, Any]:
    """Generated images of every class into <workdir>/generated (ready for a classifier's
    `generated`), with the duplicate check against the train split."""
    c = self.config
    num = {n: c.num_generated for n in self.class_names} if c.num_generated else None
    directory, summary = self.write_generated_images(state, workdir, num, c.duplicate_threshold, mesh)
    return {"generated/directory": directory, "generated/summary": summary}

  def predict_images(self, state, images, predict="predict"):
    raise base.PredictionUnsupported(
        "a GAN run generates images of its classes from noise and takes no photos: its images are in "
        "<workdir>/generated (a classifier's `generated`=<workdir> reads them)")

  def write_generated_images(self, state, workdir: str, num_per_class: dict[str, int] | None = None,
                             threshold: float | None = None, mesh=None) -> tuple[str, dict[str, Any]]:
    """Samples of `state` per class into the run's generated store, with the duplicate check
    against the train split (artifacts/generated.py). Returns (store directory, summary)."""
    from lesion_jax.artifacts import generated  # pylint: disable=g-import-not-at-top
    num = num_per_class or self.images_to_balance()
    z = self.latents(2, max(num.values()))
    images = self.sample(state, z, mesh)
    samples = {n: images[:num[n], k] for k, n in enumerate(self.class_names)}
    real = self.real_examples(self.config.run.train_split)
    store = generated.generated_store(workdir, int(jax.device_get(state.step)))
    summary = generated.write_generated(store, samples, {n: x for n, (x, _) in real.items()},
                                        {n: ids for n, (_, ids) in real.items()}, self.class_records(), threshold)
    return store.directory, summary

  @functools.lru_cache(maxsize=4)
  def _real_features(self, split: str) -> dict[str, np.ndarray]:
    embed, size = classifier_embedding(self.config.feature_workdir)
    return {n: embed(_resized(x, size)) for n, x in self.real_images(split).items()}

  def evaluate(self, state, split, mesh, predict=None, keep_examples=0) -> base.Evaluation:
    """FD-derm per class against `split`'s real images (with a feature classifier), and a few
    samples per class for figures."""
    c = self.config
    examples = {}
    scores: dict[str, Any] = {"classes": list(self.class_names)}
    if c.feature_workdir:
      real = self._real_features(split)
      embed, size = classifier_embedding(c.feature_workdir)
      need = max(c.fd_samples, max(len(v) for v in real.values()))
      images = self.sample(state, self.latents(1, need), mesh, predict)
      per_class = {}
      for k, name in enumerate(self.class_names):
        if len(real[name]) < 4:
          per_class[name] = {"num_real": int(len(real[name])), "note": "fewer than 4 real images: no FD"}
          continue
        per_class[name] = fd_derm_scores(real[name], embed(_resized(images[:, k], size)), c.input.seed)
      scores["per_class"] = per_class
      for key in ("fd", "fd_real_halves", "kid", "kid_real_halves"):
        values = [v[key] for v in per_class.values() if key in v]
        scores[f"{key}_mean"] = float(np.mean(values)) if values else None
      scores["fd_samples"] = need
      examples["samples"] = images[:8]
    elif keep_examples:
      examples["samples"] = self.sample(state, self.latents(1, 8), mesh, predict)
    return base.Evaluation(scores, {}, [], examples=examples)

  def validation_metrics(self, evaluation) -> dict[str, float]:
    s = evaluation.scores
    out = {f"val/{k}": float(s[k]) for k in ("fd_mean", "kid_mean") if s.get(k) is not None}
    for name, v in s.get("per_class", {}).items():
      if "fd" in v:
        out[f"val/fd/{name}"] = float(v["fd"])
    return out

  def final_splits(self, test_split: str) -> list[tuple[str, str]]:
    return [("train", self.config.run.train_split)]

  def hooks(self, workdir: str, mesh):
    """A grid of samples per class (fixed latents, so grids over training compare) every
    sample_every steps, into figures/ and TensorBoard."""
    c = self.config
    z = self.latents(0, max(8, min(self.batch_size, 16)))
    jitted = []

    def write_samples(step, state, writer):
      if not jitted:
        jitted.append(self.jit_predict(state, mesh))
      images = self.sample(state, z, mesh, jitted[0])[:8]
      if writer.enabled:
        save_sample_grid(os.path.join(workdir, "figures", f"samples_step{step:06d}.png"), images,
                         self.class_names, f"step {step}")
        writer.images(step, "samples", _grid_image(images))

    return (loop.PeriodicHook(c.sample_every, write_samples, "samples"),)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    samples = evaluation.examples.get("samples")
    if samples is not None and len(samples):
      save_sample_grid(os.path.join(fig_dir, f"{prefix}_samples.png"), samples, self.class_names,
                       f"{prefix}: FD-derm mean {evaluation.scores.get('fd_mean')}")


def _resized(images: np.ndarray, size: int) -> np.ndarray:
  """Images (N, S, S, 3) in [-1, 1] resized to size (the feature classifier's input)."""
  if images.shape[1] == size:
    return images
  return np.asarray(jax.image.resize(jnp.asarray(images), (len(images), size, size, 3), "linear", antialias=True))


def _grid_image(images: np.ndarray) -> np.ndarray:
  """(N, C, S, S, 3) in [-1, 1] -> one uint8 image (1, C*S, N*S, 3): a row per class."""
  n, c, s = images.shape[:3]
  grid = images.transpose(1, 2, 0, 3, 4).reshape(c * s, n * s, 3)
  return np.clip((grid + 1) * 127.5, 0, 255).round().astype(np.uint8)[None]


def save_sample_grid(path: str, images: np.ndarray, class_names: list[str], title: str) -> None:
  """(N, C, S, S, 3) samples as a figure, a column per class."""
  columns = {name: [(images[i, k] + 1) / 2 for i in range(len(images))] for k, name in enumerate(class_names)}
  figures.save_column_grid(path, columns, suptitle=title, cell=1.3)
