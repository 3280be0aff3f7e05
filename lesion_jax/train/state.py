"""The train state shared by every trainer."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics (an empty dict for models without BatchNorm)."""
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       example_input: jax.Array) -> TrainState:
  """Initialises `model` on `example_input` (only its shape and dtype matter)."""
  variables = model.init({"params": rng, "dropout": rng}, jnp.zeros_like(example_input), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def make_optimizer(name: str, learning_rate: float | optax.Schedule, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
  """'adam' (the segmentation papers), 'adamw', or 'sgd' with momentum (the AlexNet paper)."""
  if name == "adam":
    return optax.adam(learning_rate)
  if name == "adamw":
    return optax.adamw(learning_rate, weight_decay=weight_decay)
  if name == "sgd":
    tx = optax.sgd(learning_rate, momentum=momentum, nesterov=False)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
  raise ValueError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")


def learning_rate_schedule(name: str, learning_rate: float, num_steps: int,
                           warmup_steps: int = 0) -> optax.Schedule:
  """'constant', or 'cosine': linear warm-up (at most half the run) then cosine decay to 1 %."""
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(warmup_steps, num_steps // 2),
                                              max(num_steps, 1), end_value=0.01 * learning_rate)
  raise ValueError(f"unknown lr_schedule {name!r}; choose constant or cosine")


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


ApplyFn = Callable[..., Any]
