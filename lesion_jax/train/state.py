"""The train state, optimizer and learning-rate schedule shared by the tasks (the GAN's two-player
state is its own: lesion_jax/pipelines/gan/state.py)."""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from lesion_jax import config as config_lib


class TrainState(train_state.TrainState):
  """Flax TrainState plus BatchNorm statistics (an empty dict for models without BatchNorm)."""
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       *example_inputs: Any, compiled_init: bool = False) -> TrainState:
  """Initialises `model` on `example_inputs` (one per positional model input, each any pytree;
  only shapes and dtypes matter).

  `compiled_init` runs the initialisation as one XLA program compiled without LLVM optimisation
  (it runs once): for large models the op-by-op default spends a minute compiling random number
  generators on CPU (Mask R-CNN, ResNet-50 + FPN: 63 s -> a few s). Values then differ from the
  op-by-op ones by float rounding (~1e-7), so the older tasks keep the default, which their
  recorded results used."""
  zeros = jax.tree.map(jnp.zeros_like, example_inputs)
  rngs = {"params": rng, "dropout": rng}
  # Under a trace (jax.eval_shape of the state: a restore template) there is nothing to compile.
  if compiled_init and not isinstance(rng, jax.core.Tracer):
    init = jax.jit(lambda rngs, *xs: model.init(rngs, *xs, train=False))
    variables = init.lower(rngs, *zeros).compile(compiler_options={"xla_backend_optimization_level": 0})(rngs, *zeros)
  else:
    variables = model.init(rngs, *zeros, train=False)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """An optimiser and its learning-rate schedule (see make_optimizer, learning_rate_schedule)."""
  name: str = config_lib.field("adam", "Optimiser: adam (the segmentation papers), adamw, sgd (the AlexNet paper).")
  learning_rate: float = config_lib.field(1e-3, "Peak learning rate.")
  lr_schedule: str = config_lib.field("cosine", "Learning-rate schedule: cosine (linear warm-up, cosine "
                                      "decay to 1 %), constant (as in the papers) or step_decay (the rate "
                                      "times decay_factor every decay_every steps; the LFN paper's).")
  warmup_steps: int = config_lib.field(100, "Linear warm-up steps of the cosine schedule (at most half the run).")
  weight_decay: float = config_lib.field(0.0, "Weight decay (adamw, sgd).")
  momentum: float = config_lib.field(0.9, "SGD momentum.")
  beta1: float = config_lib.field(0.9, "Adam's first-moment decay b1 (DCGAN: 0.5).")
  # Read by step_decay only. None by default, so a record written before these fields existed
  # (which lacks them) compares equal to a new one even where it is compared as written (a
  # pipeline's record: runner.write_config).
  decay_every: int | None = config_lib.field(None, "step_decay: multiply the rate by decay_factor every "
                                             "this many steps.")
  decay_factor: float | None = config_lib.field(None, "step_decay: the factor, in (0, 1].")

  def __post_init__(self):
    if self.lr_schedule == "step_decay" and (not self.decay_every or self.decay_factor is None):
      raise config_lib.ConfigError(
          f"`optimizer.lr_schedule`=step_decay needs `optimizer.decay_every` >= 1 and `optimizer.decay_factor` "
          f"(got {self.decay_every}, {self.decay_factor})")

  def build(self, num_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(self.lr_schedule, self.learning_rate, num_steps, self.warmup_steps,
                                      self.decay_every, self.decay_factor)
    return make_optimizer(self.name, schedule, self.momentum, self.weight_decay, self.beta1)


def make_optimizer(name: str, learning_rate: float | optax.Schedule, momentum: float = 0.9,
                   weight_decay: float = 0.0, beta1: float = 0.9) -> optax.GradientTransformation:
  """'adam' (the segmentation papers), 'adamw', or 'sgd' with momentum (the AlexNet paper)."""
  if name == "adam":
    return optax.adam(learning_rate, b1=beta1)
  if name == "adamw":
    return optax.adamw(learning_rate, b1=beta1, weight_decay=weight_decay)
  if name == "sgd":
    tx = optax.sgd(learning_rate, momentum=momentum, nesterov=False)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx
  raise ValueError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")


def learning_rate_schedule(name: str, learning_rate: float, num_steps: int, warmup_steps: int = 0,
                           decay_every: int | None = None, decay_factor: float | None = None) -> optax.Schedule:
  """'constant'; 'cosine': linear warm-up (at most half the run) then cosine decay to 1 %;
  'step_decay': `step_decay_schedule(learning_rate, decay_every, decay_factor)`."""
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  if name == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(warmup_steps, num_steps // 2),
                                              max(num_steps, 1), end_value=0.01 * learning_rate)
  if name == "step_decay":
    if not decay_every or decay_factor is None:
      raise ValueError(f"lr_schedule 'step_decay' needs decay_every >= 1 and a decay_factor, got "
                       f"{decay_every}, {decay_factor}")
    return step_decay_schedule(learning_rate, decay_every, decay_factor)
  raise ValueError(f"unknown lr_schedule {name!r}; choose constant, cosine or step_decay")


def step_decay_schedule(learning_rate: float, decay_every: int, decay_factor: float) -> optax.Schedule:
  """learning_rate * decay_factor ** floor(step / decay_every)."""
  return optax.exponential_decay(learning_rate, transition_steps=decay_every, decay_rate=decay_factor,
                                 staircase=True)
