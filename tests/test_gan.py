"""Data generation (pipeline 3, part 2): the DCGAN players, coupled parameter layout, the joint
train step, the duplicate check, FD-derm, balancing with generated images, and a tiny end-to-end
GAN run with resume."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lesion_jax.artifacts import generated
from lesion_jax.eval import duplicates, metrics
from lesion_jax.models import dcgan
from lesion_jax.pipelines.gan import losses
from lesion_jax.pipelines.gan import metrics as gan_metrics

SIZE = 16  # 3 layers per player: enough for shared and private parts


def _leaves_with_paths(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def random_variables(model, *inputs, seed=0):
  """The model's variables with random values: shapes from `jax.eval_shape` (an RNG-based init
  compiles for seconds per model on CPU; only the layout matters here)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return jnp.ones(s.shape, s.dtype)
    return jnp.asarray(rng.normal(1.0 if "scale" in name else 0.0, 0.2, s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def coupled():
  """A coupled pair for 3 classes: the generator shares its first 2 of 3 layers, the
  discriminator its last 2 of 3."""
  g = dcgan.Generator(SIZE, 4, num_classes=3, shared_layers=2)
  d = dcgan.Discriminator(SIZE, 4, num_classes=3, shared_layers=2)
  z = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 10)), jnp.float32)
  gv = random_variables(g, z)
  images = jax.jit(g.apply)(gv, z)
  dv = random_variables(d, images, seed=1)
  return g, d, gv, dv, z, images


def test_shapes_and_layer_counts():
  assert [dcgan.num_layers(s) for s in (8, 16, 64, 128, 256)] == [2, 3, 5, 6, 7]
  with pytest.raises(ValueError, match="4 \\* 2\\*\\*n"):
    dcgan.num_layers(48)
  g = dcgan.Generator(SIZE, 4, num_classes=2)
  z = jnp.zeros((3, 2, 10))
  out = jax.jit(g.apply)(random_variables(g, z), z)
  assert out.shape == (3, 2, SIZE, SIZE, 3)
  assert float(jnp.abs(out).max()) <= 1.0  # tanh
  with pytest.raises(ValueError, match="2 classes"):
    jax.eval_shape(g.init, jax.random.key(0), jnp.zeros((3, 1, 10)))


def test_coupled_layout_has_shared_layers_and_one_private_head_per_class(coupled):
  _, _, gv, dv, _, _ = coupled
  g_params, d_params = gv["params"], dv["params"]
  heads = {"private_0", "private_1", "private_2"}
  assert set(g_params) == {"shared"} | heads and set(d_params) == {"shared"} | heads
  # The generator shares its 4x4 projection and first up-sampling, each class renders on its own;
  # the discriminator's first convolution is per class, the rest (and the logit) shared.
  assert set(g_params["shared"]) == {"Dense_0", "ConvTranspose4x4_0", "BatchNorm_0", "BatchNorm_1"}
  assert set(g_params["private_0"]) == {"ConvTranspose4x4_0"}
  assert g_params["private_0"]["ConvTranspose4x4_0"]["kernel"].shape == (4, 4, 4, 3)
  assert set(d_params["private_0"]) == {"Conv_0"} and "Dense_0" in d_params["shared"]
  # BatchNorm statistics are per class even in shared layers.
  assert dv["batch_stats"]["shared"]["BatchNorm_0"]["mean"].shape == (3, 8)


@pytest.mark.parametrize("player", ["generator", "discriminator"])
def test_class_gradient_touches_only_shared_layers_and_its_own_head(coupled, player):
  g, d, gv, dv, z, images = coupled
  cls = 1

  if player == "generator":
    def loss(params):
      out, _ = g.apply({**gv, "params": params}, z, train=True, mutable=["batch_stats"])
      return jnp.sum(out[:, cls] ** 2)
    grads = jax.jit(jax.grad(loss))(gv["params"])
  else:
    def loss(params):
      (logits, _), _ = d.apply({**dv, "params": params}, images, train=True, mutable=["batch_stats"])
      return jnp.sum(logits[:, cls])
    grads = jax.jit(jax.grad(loss))(dv["params"])
  for k in range(3):
    total = sum(float(np.abs(np.asarray(v)).sum()) for v in jax.tree.leaves(grads[f"private_{k}"]))
    if k == cls:
      assert total > 0
    else:
      assert total == 0, f"class {cls}'s loss reached class {k}'s private layers"
  assert all(np.abs(np.asarray(v)).sum() > 0 for v in jax.tree.leaves(grads["shared"]))


def test_decoupled_models_are_independent():
  d = dcgan.Discriminator(SIZE, 4, num_classes=2, shared_layers=0, minibatch_kernels=3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, SIZE, SIZE, 3)), jnp.float32)
  v = random_variables(d, x)
  assert set(v["params"]) == {"private_0", "private_1"}
  logits_of = jax.jit(lambda images: d.apply(v, images)[0])

  # Changing class 0's images (even through minibatch features) leaves class 1's logits alone.
  changed = x.at[:, 0].set(0.0)
  np.testing.assert_array_equal(logits_of(x)[:, 1], logits_of(changed)[:, 1])
  assert not np.allclose(logits_of(x)[:, 0], logits_of(changed)[:, 0])


def test_minibatch_discrimination_sees_the_other_examples_of_its_group_only():
  layer = dcgan.MinibatchDiscrimination(kernels=4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2, 8)), jnp.float32)
  v = random_variables(layer, x)
  out = layer.apply(v, x)
  assert out.shape == (5, 2, 12)
  np.testing.assert_array_equal(out[..., :8], x)
  # A batch of identical examples: every other example is at distance 0, so o = B - 1 per kernel.
  same = jnp.broadcast_to(x[:1], x.shape)
  np.testing.assert_allclose(layer.apply(v, same)[..., 8:], 4.0, rtol=1e-6)
  # Group 1's minibatch features do not depend on group 0's examples.
  np.testing.assert_array_equal(layer.apply(v, x.at[:, 0].set(0.0))[:, 1], out[:, 1])


def test_gan_losses_on_hand_cases():
  real, fake = jnp.array([[3.0, 0.0]]), jnp.array([[-3.0, 0.0]])
  d = losses.discriminator_loss(real, fake, real_label=1.0)
  expected = np.log1p(np.exp(-3.0)) * 2
  np.testing.assert_allclose(d, [expected, 2 * np.log(2.0)], rtol=1e-5)
  # One-sided smoothing: a perfectly confident discriminator is no longer optimal on real images.
  assert losses.discriminator_loss(jnp.array([[20.0]]), jnp.array([[-20.0]]), 0.9)[0] > 1.0
  np.testing.assert_allclose(losses.generator_loss(jnp.zeros((3, 2))), [np.log(2.0)] * 2, rtol=1e-6)
  f_real = jnp.ones((4, 2, 3))
  f_fake = jnp.zeros((4, 2, 3)).at[:, 1].set(1.0)
  np.testing.assert_allclose(losses.feature_matching_loss(f_real, f_fake), [3.0, 0.0])


def test_frechet_and_kernel_distances():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
  assert gan_metrics.frechet_distance(a, b) < 0.05
  shifted = b + np.array([1.0, 0.0, 0.0, 0.0])
  assert gan_metrics.frechet_distance(a, shifted) == pytest.approx(1.0, abs=0.1)
  scaled = b * 2.0  # same mean, covariance 4I: Tr(I + 4I - 2 * 2I) = 4 * 1
  assert gan_metrics.frechet_distance(a, scaled) == pytest.approx(4.0, abs=0.3)
  same, apart = gan_metrics.kernel_distance(a[:300], b[:300]), gan_metrics.kernel_distance(a[:300], shifted[:300])
  assert abs(same) < 0.1 * apart
  with pytest.raises(ValueError, match="feature sets"):
    gan_metrics.frechet_distance(a[:, :2], b)


def test_nearest_neighbours_finds_planted_copies():
  rng = np.random.default_rng(0)
  training = rng.random((37, 8, 8, 3)).astype(np.float32)
  fresh = rng.random((20, 8, 8, 3)).astype(np.float32)
  planted = {3: 5, 11: 30, 19: 0}  # generated index -> training index it copies
  for g, t in planted.items():
    fresh[g] = np.clip(training[t] + rng.normal(0, 0.01, training[t].shape), 0, 1)
  nn = duplicates.nearest_neighbours(fresh, training, chunk=8)  # chunks smaller than both sets
  exact = ((fresh[:, None] - training[None]) ** 2).mean(axis=(2, 3, 4))
  np.testing.assert_allclose(nn.mse, exact.min(1), rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(nn.index, exact.argmin(1))
  reference = generated.real_to_real_nearest(training).min()
  assert set(np.flatnonzero(duplicates.near_copies(nn.mse, reference))) == set(planted)


def test_write_generated_flags_planted_copies_and_balancing_leaves_them_out(tmp_path):
  rng = np.random.default_rng(1)
  real = {"melanoma": rng.uniform(-1, 1, (12, 8, 8, 3)).astype(np.float32),
          "keratosis": rng.uniform(-1, 1, (6, 8, 8, 3)).astype(np.float32)}
  samples = {k: rng.uniform(-1, 1, (10, 8, 8, 3)).astype(np.float32) for k in real}
  samples["melanoma"][[2, 7]] = real["melanoma"][[4, 9]]  # two memorised images
  store = generated.generated_store(str(tmp_path), 100)
  ids = {k: [f"{k}_{i}" for i in range(len(v))] for k, v in real.items()}
  summary = generated.write_generated(store, samples, real, ids,
                                      {"melanoma": {"label": 1, "malignant": 1}, "keratosis": {"label": 2, "malignant": 0}},
                                      threshold=0.01)
  assert summary["classes"]["melanoma"]["near_copies"] == 2
  assert summary["classes"]["keratosis"]["near_copies"] == 0
  records = generated.generated_records(store)
  flagged = {r["id"] for r in records if r["near_copy"]}
  assert flagged == {"gen_melanoma_00002", "gen_melanoma_00007"}
  assert {r["nearest_id"] for r in records if r["near_copy"]} == {"melanoma_4", "melanoma_9"}
  # Real counts nevus 20, melanoma 12, keratosis 6: melanoma needs 8 (8 usable of 10), keratosis
  # 14 (only 10 made: all used, 4 short).
  chosen, plan = generated.balance_with_generated([20, 12, 6], records, "label")
  assert plan["classes"]["1"] == {"real": 12, "wanted": 8, "available": 8, "used": 8, "short": 0}
  assert plan["classes"]["2"] == {"real": 6, "wanted": 14, "available": 10, "used": 10, "short": 4}
  assert plan["classes"]["0"]["used"] == 0 and plan["near_copies_left_out"] == 2
  assert not flagged & {r["id"] for r in chosen} and len(chosen) == 18
  assert (tmp_path / "generated" / "images" / "step100" / "duplicate_check_histogram.png").exists()


def test_isic2017_scores_and_balanced_accuracy():
  names = ["nevus", "melanoma", "seborrheic_keratosis"]
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
  probs = np.array([[.8, .1, .1], [.7, .2, .1], [.6, .3, .1], [.3, .6, .1],
                    [.2, .7, .1], [.5, .4, .1], [.2, .1, .7], [.1, .2, .7]])
  s = metrics.classification_scores(labels, probs, names)
  # recalls: nevus 3/4, melanoma 1/2, keratosis 2/2
  assert s["balanced_accuracy"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
  assert s["melanoma_roc_auc"] == pytest.approx(s["per_class"]["melanoma"]["roc_auc"])
  assert s["keratosis_roc_auc"] == pytest.approx(1.0)
  assert s["mean_roc_auc"] == pytest.approx((s["melanoma_roc_auc"] + 1.0) / 2)
  assert set(s["melanoma_specificity_at_sensitivity"]) == {"0.82", "0.89", "0.95"}
  assert not set(metrics.ISIC2017_KEYS) & set(metrics.classification_scores(labels, probs, ["a", "b", "c"]))


def test_inverse_frequency_class_weights_equalise_class_contributions():
  from lesion_jax.tasks import classification  # pylint: disable=g-import-not-at-top
  task = classification.ClassificationTask(classification.ClassifierConfig(class_weighting="inverse_frequency"))
  task.__dict__["class_counts"] = np.array([60, 30, 10, 0])  # a cached_property, set by hand
  w = np.asarray(task.class_weights())
  np.testing.assert_allclose(w[:3] * [60, 30, 10], [100 / 3] * 3)
  assert w[3] == 0.0


# --- a tiny end-to-end run --------------------------------------------------------------------

@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, tiny_dataset, tiny_data_dir):
  from lesion_jax.config import RunConfig  # pylint: disable=g-import-not-at-top
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.gan import task as gan  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import runner  # pylint: disable=g-import-not-at-top
  config = gan.GANConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=16, batch_size=4,
                                 augment=gan.GAN_AUGMENT),
      model=gan.DCGANModelConfig(generator_features=4, discriminator_features=4, minibatch_kernels=2),
      run=RunConfig(num_steps=4, eval_every=2, log_every=2, val_split="train"), sample_every=2)
  task = gan.GANTask(config)
  workdir = str(tmp_path_factory.mktemp("gan"))
  # Stop after 2 of 4 steps, then resume: the result must equal an uninterrupted run.
  runner.run(gan.GANTask(dataclasses.replace(config, run=dataclasses.replace(config.run, num_steps=2))), workdir)
  runner.run(task, workdir)
  straight = str(tmp_path_factory.mktemp("gan_straight"))
  runner.run(task, straight)
  return task, workdir, straight


def test_gan_run_resumes_exactly_and_counts_generator_updates(gan_run):
  from lesion_jax.tasks import runner  # pylint: disable=g-import-not-at-top
  task, workdir, straight = gan_run
  assert task.class_names == ["melanoma", "seborrheic_keratosis"]  # de-coupled: every class but nevus
  resumed, fresh = runner.restore(task, workdir, "latest"), runner.restore(task, straight, "latest")
  assert int(resumed.step) == 4 and int(resumed.discriminator.step) == 4
  assert int(resumed.generator.step) == 4 * (1 + task.config.extra_generator_steps)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(fresh)):
    np.testing.assert_array_equal(a, b)
  # The class models' private layers start from different random values (split rngs).
  init = task.init_state(jax.random.key(0))
  d = init.discriminator.params
  assert not np.allclose(d["private_0"]["Conv_0"]["kernel"], d["private_1"]["Conv_0"]["kernel"])
  # Both optimisers' states were saved and restored (Adam's step counts).
  counts = [int(x) for x in jax.tree.leaves(resumed.generator.opt_state) if np.ndim(x) == 0]
  assert counts and all(c == 12 for c in counts)
  assert (pytest.importorskip("pathlib").Path(workdir) / "figures" / "samples_step000004.png").exists()


def test_generated_images_balance_a_classifier_train_split(gan_run, tiny_dataset, tiny_data_dir):
  from lesion_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import classification, runner  # pylint: disable=g-import-not-at-top
  task, workdir, _ = gan_run
  state = runner.restore(task, workdir, "best")
  directory, summary = task.write_generated_images(state, workdir)
  counts = task.class_counts
  wanted = {n: int(counts.max() - counts[i]) for n, i in zip(task.class_names, task.class_indices)}
  assert {n: v["generated"] for n, v in summary["classes"].items()} == task.images_to_balance()
  records = generated.generated_records(generated.generated_store(workdir, int(state.step)))
  assert {r["malignant"] for r in records if r["class"] == "melanoma"} == {1}
  clf = classification.ClassificationTask(classification.ClassifierConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=16, batch_size=16),
      label_key="label", generated=workdir))
  chosen, plan = clf.generated_examples
  for name, want in wanted.items():
    entry = plan["classes"][name]
    assert entry["wanted"] == want and entry["used"] + entry["short"] == want
  batches = clf.train_batches(0)
  ids = [i.decode() for _ in range(8) for i in next(batches)["id"]]
  assert any(i.startswith("gen_") for i in ids) and any(i.startswith("synth_") for i in ids)
  assert directory.endswith("step4")


def test_conv_transpose_4x4_equals_flax_conv_transpose():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from lesion_jax.models import layers  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)  # odd and even sides
  variables = {"params": {"kernel": jnp.asarray(rng.normal(size=(4, 4, 3, 4)), jnp.float32),
                          "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
  ref = nn.ConvTranspose(4, (4, 4), (2, 2), padding="SAME").apply(variables, x)
  ours = layers.ConvTranspose4x4(4).apply(variables, x)
  assert ours.shape == ref.shape == (2, 10, 12, 4)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_balancing_table_row_reads_the_isic_scores_of_a_run():
  from experiments import balancing_table  # pylint: disable=g-import-not-at-top
  names = ["nevus", "melanoma", "seborrheic_keratosis"]
  labels = np.array([0, 0, 1, 1, 2, 2])
  probs = np.eye(3)[[0, 1, 1, 0, 2, 2]] * 0.8 + 0.2 / 3
  scores = metrics.classification_scores(labels, probs, names)
  row = balancing_table.row_of({f"test/{k}": v for k, v in scores.items()}, "test")
  assert row["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
  assert row["keratosis_roc_auc"] == 1.0 and row["melanoma_roc_auc"] == scores["melanoma_roc_auc"]
  assert set(row["per_class_roc_auc"]) == set(names) and "melanoma_spec_at_sens_0.82" in row
  # A run written before the ISIC 2017 scores were top-level keys kept them under "isic2017".
  older = {f"test/{k}": v for k, v in scores.items() if k not in metrics.ISIC2017_KEYS}
  older["test/isic2017"] = {k: scores[k] for k in metrics.ISIC2017_KEYS}
  assert balancing_table.row_of(older, "test") == row
