"""The precision policy (lesion_jax/train/precision.py, `run.precision`): a bfloat16 run of the
U-Net and of LeNet-5 trains and stays within a stated tolerance of the same float32 run; the model
computes in bfloat16 on float32 parameters, its images leave the host as bfloat16, its logits and
losses are float32; float16 and unknown names are refused by name; old records' model.dtype loads."""
import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax import io, models
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.eval import inference
from lesion_jax.tasks import classification, runner, segmentation
from lesion_jax.train import precision, sharding
from lesion_jax.train.state import OptimizerConfig

BF16 = np.dtype(ml_dtypes.bfloat16)
STEPS = 8
# The tolerances a bfloat16 run is held to, against the same run in float32 (same seed, same
# batches). bfloat16 keeps 8 significant bits (relative rounding 2^-9, 0.2 %); measured here on
# XLA:CPU over these 8 Adam steps: per-step training losses within 0.0024 of float32's (U-Net BCE
# 0.70-0.80) and 0.0014 (LeNet-5 cross-entropy ~0.7); the U-Net's test-split lesion probabilities
# 0.003 apart on average (0.07 at most); test Jaccard 0.203 against 0.208. The bounds leave a few
# times that margin.
LOSS_ATOL = 0.01
PROBABILITY_MEAN_ATOL = 0.01
JACCARD_ATOL = 0.05


class PlacedDtypes:
  """Records the dtype of every "image" that `sharding.shard_batch` places on the device (the
  loop's and evaluation's one placement), while installed."""

  def __init__(self):
    self.dtypes: list[np.dtype] = []
    self.original = sharding.shard_batch

  def __enter__(self):
    def spy(batch, mesh):
      if "image" in batch:
        self.dtypes.append(np.asarray(batch["image"]).dtype)
      return self.original(batch, mesh)
    sharding.shard_batch = spy
    return self

  def __exit__(self, *exc):
    sharding.shard_batch = self.original


@pytest.fixture(scope="module")
def seg_config(tiny_data_dir, tiny_dataset):
  return segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      model=segmentation.SegmenterModelConfig(features=4, levels=2),
      run=RunConfig(num_steps=STEPS, eval_every=STEPS, log_every=1, val_split=""),
      optimizer=OptimizerConfig(learning_rate=3e-3, lr_schedule="constant"))


@pytest.fixture(scope="module")
def cls_config(tiny_data_dir, tiny_dataset):
  return classification.ClassifierConfig(
      input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=8),
      run=RunConfig(num_steps=STEPS, eval_every=STEPS, log_every=1, val_split=""),
      optimizer=OptimizerConfig(learning_rate=3e-3, lr_schedule="constant"))


def with_precision(config, name):
  return dataclasses.replace(config, run=dataclasses.replace(config.run, precision=name))


def _train(task, workdir):
  """(state, history, dtypes of the images placed in training) of `task` trained in `workdir`."""
  with PlacedDtypes() as placed:
    state = runner.train(task, workdir)
  return state, io.read_json(os.path.join(workdir, "history.json")), placed.dtypes


def _runs_per_policy(task_cls, config, name: str, tmp_path_factory) -> dict:
  """{precision: (task, state, history, placed image dtypes)} of the same tiny run."""
  out = {}
  for policy in precision.POLICIES:
    task = task_cls(with_precision(config, policy))
    out[policy] = (task, *_train(task, str(tmp_path_factory.mktemp(f"{name}_{policy}"))))
  return out


@pytest.fixture(scope="module")
def seg_runs(seg_config, tmp_path_factory):
  return _runs_per_policy(segmentation.SegmentationTask, seg_config, "unet", tmp_path_factory)


@pytest.fixture(scope="module")
def cls_runs(cls_config, tmp_path_factory):
  return _runs_per_policy(classification.ClassificationTask, cls_config, "lenet", tmp_path_factory)


def _losses(history):
  return np.array([v for _, v in history["train/loss"]])


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
def test_a_bfloat16_run_trains_and_matches_float32_within_tolerance(kind, request):
  runs = request.getfixturevalue("seg_runs" if kind == "segmentation" else "cls_runs")
  f32, bf16 = _losses(runs["float32"][2]), _losses(runs["bfloat16"][2])
  assert len(bf16) == len(f32) == STEPS and np.isfinite(bf16).all()
  assert bf16[-2:].mean() < bf16[:2].mean()  # it learns
  np.testing.assert_allclose(bf16, f32, rtol=0, atol=LOSS_ATOL)
  # Parameters, BatchNorm statistics and the optimiser's moments stay float32.
  state = runs["bfloat16"][1]
  assert {x.dtype for x in jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
          if jnp.issubdtype(x.dtype, jnp.floating)} == {np.dtype(np.float32)}


def test_bfloat16_predictions_match_float32_within_tolerance(seg_runs):
  mesh = sharding.make_mesh()
  maps, scores = {}, {}
  for name, (task, state, _, _) in seg_runs.items():
    with PlacedDtypes() as placed:
      outputs = list(inference.predict_over(task.jit_predict(state, mesh), state, task.eval_batches("test"), mesh,
                                            task.host_inputs))
    assert placed.dtypes and set(placed.dtypes) == {task.policy.input_dtype}  # evaluation places bf16 too
    maps[name] = np.concatenate([p[b["weight"] > 0] for b, p in outputs])
    scores[name] = runner.evaluate(task, state, "test", figures_too=False)[1].scores
  assert maps["bfloat16"].dtype == maps["float32"].dtype == np.float32 and maps["float32"].shape == (16, 32, 32)
  assert np.abs(maps["bfloat16"] - maps["float32"]).mean() < PROBABILITY_MEAN_ATOL
  assert abs(scores["bfloat16"]["jaccard"] - scores["float32"]["jaccard"]) < JACCARD_ATOL


def test_images_leave_the_host_in_the_policy_dtype(seg_runs, cls_runs):
  for runs in (seg_runs, cls_runs):
    assert set(runs["bfloat16"][3]) == {BF16} and len(runs["bfloat16"][3]) == STEPS
    assert set(runs["float32"][3]) == {np.dtype(np.float32)}
  task = seg_runs["bfloat16"][0]
  host = next(iter(task.train_batches(0)))
  placed = task.host_inputs(host)
  assert placed["image"].dtype == BF16 and host["image"].dtype == np.float32  # a copy; the read batch is kept
  np.testing.assert_allclose(placed["image"].astype(np.float32), host["image"], rtol=2 ** -8, atol=0)
  assert placed["mask"].dtype == host["mask"].dtype == np.float32  # the targets stay float32
  assert {k for k in placed if placed[k] is not host[k]} == {"image"}
  assert seg_runs["float32"][0].host_inputs(host) is host


def test_bfloat16_computes_in_bfloat16_and_returns_float32_logits_and_losses(seg_runs):
  task, state, _, _ = seg_runs["bfloat16"]
  assert task.model().dtype == BF16 and seg_runs["float32"][0].model().dtype == np.float32
  images = np.zeros((2, 32, 32, 3), BF16)
  convs = []

  def keep_conv_outputs(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
      convs.append(out.dtype)
    return out

  with nn.intercept_methods(keep_conv_outputs):
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
  assert convs and set(convs) == {BF16} and logits.dtype == np.float32
  batch = {"image": images, "mask": np.zeros((2, 32, 32, 1), np.float32), "weight": np.ones(2, np.float32)}
  _, metrics = jax.eval_shape(task.train_step(), state, batch, jax.random.key(0))
  assert {k: m.dtype for k, m in metrics.items()} == {"loss": np.float32, "jaccard": np.float32}


@pytest.mark.parametrize("name,kwargs,inputs", [
    ("unet", dict(features=4, levels=2), [(1, 16, 16, 3)]),
    ("fcn", dict(features=4, levels=2, head_features=8), [(1, 16, 16, 3)]),
    ("lenet5", dict(num_classes=3), [(1, 32, 32, 3)]),
    ("resnet18", dict(num_classes=3, width=0.125), [(1, 32, 32, 3)]),
    ("fcrn_small", dict(num_classes=4), [(1, 32, 32, 3)]),
    ("lfn", dict(num_classes=5), [(1, 32, 32, 3)]),
    ("pconv_unet", dict(features=4, levels=2), [(1, 16, 16, 3), (1, 16, 16, 1)]),
    ("dcgan_generator", dict(image_size=16, features=8, num_classes=2), [(1, 2, 10)]),
    ("dcgan_discriminator", dict(image_size=16, features=8, num_classes=2), [(1, 2, 16, 16, 3)]),
])
def test_every_head_returns_float32_under_bfloat16_compute(name, kwargs, inputs):
  """Shapes and dtypes only (jax.eval_shape: nothing is compiled)."""
  model = models.get(name, dtype=precision.policy("bfloat16").compute_dtype, **kwargs)
  args = [jnp.zeros(s, jnp.float32) for s in inputs]
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, train=False))
  out = jax.eval_shape(lambda v: model.apply(v, *args, train=False), variables)
  assert {x.dtype for x in jax.tree.leaves(out)} == {np.dtype(np.float32)}
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype(np.float32)}  # float32 parameters


def test_float32_outputs_casts_floating_leaves_only():
  out = precision.float32_outputs({"logits": jnp.ones(2, jnp.bfloat16), "classes": jnp.ones(2, jnp.int32),
                                   "valid": jnp.ones(2, bool), "f32": jnp.ones(2, jnp.float32)})
  assert {k: v.dtype for k, v in out.items()} == {"logits": np.float32, "classes": np.int32, "valid": np.bool_,
                                                  "f32": np.float32}


def test_float16_and_unknown_names_are_refused_by_name(seg_config):
  with pytest.raises(config_lib.ConfigError, match=r"`run\.precision`='float16': .*dynamic loss scaling"):
    config_lib.override(seg_config, {"run.precision": "float16"})
  with pytest.raises(config_lib.ConfigError, match=r"`run\.precision`='fp8': unknown precision 'fp8'.*float32.*bfloat16"):
    config_lib.from_dict(segmentation.SegmenterConfig, {"run": {"precision": "fp8"}})
  # A config made in code is checked before anything is written.
  task = segmentation.SegmentationTask(with_precision(seg_config, "float16"))
  with pytest.raises(config_lib.ConfigError, match=r"`run\.precision`='float16': .*dynamic loss scaling"):
    task.check(sharding.make_mesh())
  with pytest.raises(config_lib.ConfigError, match="dynamic loss scaling"):
    precision.policy("float16")
  with pytest.raises(config_lib.ConfigError, match=r"`precision`='bf16': unknown precision"):
    precision.policy("bf16", flag="precision")
  # The per-model field is gone: its old flag says where it went.
  with pytest.raises(config_lib.ConfigError, match=r"'model\.dtype' has moved: it is now 'run\.precision'"):
    config_lib.override(seg_config, {"model.dtype": "bfloat16"})


def test_records_with_a_model_dtype_load_as_the_run_precision():
  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.gan import task as gan
  from lesion_jax.pipelines.lesion_index import feature_network
  from lesion_jax.pipelines.lesion_index import task as lesion_index
  from lesion_jax.pipelines.maskrcnn import task as maskrcnn
  from lesion_jax.pipelines.purification import task as inpainting
  from lesion_jax.pipelines.self_learning import two_stage
  # pylint: enable=g-import-not-at-top
  for cls in (segmentation.SegmenterConfig, classification.ClassifierConfig, maskrcnn.MaskRCNNConfig,
              lesion_index.LesionIndexConfig, feature_network.FeatureNetworkConfig, inpainting.InpainterConfig,
              gan.GANConfig):
    record = config_lib.to_dict(cls())
    del record["run"]["precision"]
    record["model"]["dtype"] = "bfloat16"
    assert config_lib.from_dict(cls, record) == with_precision(cls(), "bfloat16"), cls.__name__
    record["model"]["dtype"] = "float16"  # trained without loss scaling: refused by name
    with pytest.raises(config_lib.ConfigError, match="float16 needs dynamic loss scaling"):
      config_lib.from_dict(cls, record)
  # Nested in a pipeline's record: its segmenter run's.
  record = config_lib.to_dict(two_stage.TwoStageConfig())
  del record["segmenter"]["run"]["precision"]
  record["segmenter"]["model"]["dtype"] = "bfloat16"
  assert config_lib.from_dict(two_stage.TwoStageConfig, record).segmenter.run.precision == "bfloat16"
  with pytest.raises(config_lib.ConfigError, match="`model.dtype` and `run.precision` are the same field"):
    config_lib.from_dict(segmentation.SegmenterConfig, {"model": {"dtype": "float32"}, "run": {"precision": "float32"}})
