"""The numeric precision of a run: one policy, named by `run.precision` (every task config's
RunConfig), set once per run and validated with the rest of the config.

    policy = precision.policy("bfloat16")
    model = UNet(dtype=policy.compute_dtype)          # activations in bfloat16
    batch = policy.host_inputs(host_batch, ("image",))  # images leave the host as bfloat16

A policy fixes four dtypes:

- parameters (and optimiser state, BatchNorm statistics): always float32, so small updates are not
  rounded away;
- compute: the activations and the convolution / matmul operands, float32 or bfloat16 (the
  models' `dtype`);
- host inputs: the model-input images of a batch are cast on the host, before the transfer, to the
  compute dtype (half the bytes per image under bfloat16; the model would cast them on entry anyway);
- outputs: logits and whatever else a model returns are float32 (each model's head casts back, and
  `float32_outputs` is applied where the train and predict steps receive a model's outputs), so
  losses, metrics and probabilities are computed in float32.

`float16` is refused by name: its 5-bit exponent underflows small gradients to zero unless the loss
is scaled dynamically (scaled up, and the scale lowered whenever a gradient overflows), which
lesion_jax does not implement. bfloat16 has float32's exponent range and needs no scaling.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from lesion_jax import config as config_lib

FLOAT32, BFLOAT16 = "float32", "bfloat16"
POLICIES = (FLOAT32, BFLOAT16)
# Names a user may reasonably try, with why they are refused.
REFUSED = {
    "float16": "float16 needs dynamic loss scaling (its 5-bit exponent underflows small gradients to 0), "
               "which lesion_jax does not implement; use bfloat16 (float32's exponent range, no scaling needed)",
}
_DTYPES = {FLOAT32: np.dtype(np.float32), BFLOAT16: np.dtype(ml_dtypes.bfloat16)}


def refusal(name: Any) -> str | None:
  """Why `name` is not a precision policy (None when it is one)."""
  if name in POLICIES:
    return None
  return REFUSED.get(name, f"unknown precision {name!r}; choose one of {list(POLICIES)}")


@dataclasses.dataclass(frozen=True)
class Policy:
  """The dtypes of a run (see the module docstring); build it with `policy(name)`."""
  name: str = FLOAT32
  param_dtype: ClassVar[np.dtype] = np.dtype(np.float32)
  output_dtype: ClassVar[np.dtype] = np.dtype(np.float32)

  def __post_init__(self):
    problem = refusal(self.name)
    if problem:
      raise config_lib.ConfigError(problem)

  @property
  def compute_dtype(self) -> np.dtype:
    """The models' `dtype`: activations and the operands of convolutions and matmuls."""
    return _DTYPES[self.name]

  @property
  def input_dtype(self) -> np.dtype:
    """The dtype model-input images are transferred in (the compute dtype)."""
    return self.compute_dtype

  def host_inputs(self, batch: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """`batch` (a host batch) with its floating arrays at `keys` in `input_dtype`, on the host: a
    new dict, the arrays it was given untouched. Other fields (masks, boxes, targets, labels,
    weights, ids) keep their dtypes; keys the batch lacks are skipped."""
    if self.input_dtype == np.float32:
      return batch
    out = dict(batch)
    for key in keys:
      value = out.get(key)
      if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        out[key] = value.astype(self.input_dtype)
    return out


def policy(name: str, flag: str = "run.precision") -> Policy:
  """The policy called `name`; ConfigError naming `flag` (the field that gave it) otherwise."""
  problem = refusal(name)
  if problem:
    raise config_lib.ConfigError(f"`{flag}`={name!r}: {problem}")
  return Policy(name)


def float32_outputs(tree: Any) -> Any:
  """`tree` (a model's outputs) with every floating leaf in float32: what losses, metrics and
  probabilities are computed from. A no-op on leaves already float32 (most heads cast back)."""
  def cast(x):
    return x.astype(jnp.float32) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
  return jax.tree.map(cast, tree)
