"""A task whose batches are nested dicts and whose model takes two inputs (image, hole mask: an
inpainter's shape), predicting pytrees: the task contract's test double, shared by
tests/test_runner.py and tests/test_run_safety.py (one module, so it registers once)."""
import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import tensorflow as tf

from lesion_jax.config import RunConfig
from lesion_jax.data import ops, pipeline
from lesion_jax.tasks import base
from lesion_jax.train import loop, losses, steps
from lesion_jax.train.state import OptimizerConfig, create_train_state


class HoleAwareNet(nn.Module):
  """Two positional inputs: an image with a hole cut out, and the hole mask."""

  @nn.compact
  def __call__(self, image, hole, train: bool = False):
    x = jnp.concatenate([image * (1 - hole), hole], axis=-1)
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Conv(1, (3, 3))(x)


@dataclasses.dataclass(frozen=True)
class HoleConfig:
  input: pipeline.InputConfig = pipeline.InputConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-2, lr_schedule="constant")
  hole_size: int = 8
  run: RunConfig = RunConfig(num_steps=4, eval_every=2, log_every=2)


def cut_hole(size: int):
  """An op: a random square hole per example (seeded by its stream position), and the example
  regrouped as {"inputs": {...}, "targets": {...}}."""

  def op(example, seed):
    h = tf.shape(example["image"])[0]
    corner = tf.random.stateless_uniform([2], seed, 0, h - size, dtype=tf.int32)
    rows = tf.range(h)[:, None]
    cols = tf.range(h)[None, :]
    hole = ((rows >= corner[0]) & (rows < corner[0] + size) & (cols >= corner[1]) & (cols < corner[1] + size))
    return {"id": example["id"],
            "inputs": {"image": example["image"], "hole": tf.cast(hole, tf.float32)[..., None]},
            "targets": {"mask": example["mask"]}}

  return op


@base.register
class HoleTask(base.Task):
  name = "test_hole_segmentation"
  config_cls = HoleConfig

  def init_state(self, rng):
    size = self.config.input.image_size
    tx = self.config.optimizer.build(self.config.run.num_steps)
    return create_train_state(HoleAwareNet(), tx, rng, jnp.zeros((1, size, size, 3)), jnp.zeros((1, size, size, 1)))

  def train_step(self):
    def train_step(state, batch, rng):
      def loss_fn(params):
        logits, _ = steps.apply_model(state, params, batch["inputs"]["image"], batch["inputs"]["hole"], train=True)
        per_example = losses.segmentation_loss_per_example(logits, batch["targets"]["mask"], "bce")
        return losses.weighted_mean(per_example, batch.get("weight"))
      loss, grads = jax.value_and_grad(loss_fn)(state.params)
      return state.apply_gradients(grads=grads), {"loss": loss, "hole_loss": 2 * loss}
    return train_step

  def _ops(self, train):
    c = self.config
    return ops.segmentation_ops(c.input.image_size, c.input.augment if train else None) + [
        cut_hole(c.hole_size)]

  def train_batches(self, start_step):
    c = self.config
    return pipeline.train_iterator(c.input, self._ops(True), c.run.train_split, start_step, self.builder)

  def eval_batches(self, split):
    return pipeline.eval_iterator(self.config.input, self._ops(False), split, self.builder)

  def predict_fns(self):
    def predict(state, batch):
      logits, _ = steps.apply_model(state, state.params, batch["inputs"]["image"], batch["inputs"]["hole"],
                                    train=False)
      return {"prob": jax.nn.sigmoid(logits[..., 0]), "hole_area": batch["inputs"]["hole"].mean(axis=(1, 2, 3))}
    return {"predict": predict}

  def best_metric(self):
    return "val/accuracy", "max"

  def per_example(self, batch, outputs, real, kept):
    correct = (outputs["prob"] > 0.5) == (batch["targets"]["mask"][..., 0] > 0.5)
    return {"accuracy": correct.mean(axis=(1, 2))[real]}

  def summarize(self, rows, ids, examples):
    return base.Evaluation({"accuracy": float(rows["accuracy"].mean()), "num_images": len(rows["accuracy"])},
                           rows, ids)

  def hooks(self, workdir, mesh):
    def record(step, state, writer):
      path = os.path.join(workdir, "hook_steps.txt")
      with open(path, "a") as f:
        f.write(f"{step} {int(jax.device_get(state.step))}\n")
    return (loop.PeriodicHook(3, record, "record"),)
