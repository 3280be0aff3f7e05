"""Building a task config (a frozen dataclass with an `input` field) from flat flag values."""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from lesion_jax.data import pipeline
from lesion_jax.data.augment import AugmentConfig

ConfigT = TypeVar("ConfigT")


def from_flat_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
  """`cls(input=InputConfig(...), ...)` from one flat dict (the flags, or a run's config.json).

  Keys naming `pipeline.InputConfig` fields go to `input`; `augment=False` switches augmentation
  off and `color_jitter` sets its colour strength; keys neither class knows are ignored, so the
  flags of one experiment can configure several tasks.
  """
  input_fields = {f.name for f in dataclasses.fields(pipeline.InputConfig)}
  own = {f.name for f in dataclasses.fields(cls)} - {"input"}
  inputs = {k: v for k, v in values.items() if k in input_fields and k != "augment"}
  if not values.get("augment", True):
    inputs["augment"] = AugmentConfig.off()
  elif values.get("color_jitter"):
    inputs["augment"] = AugmentConfig(color=float(values["color_jitter"]))
  return cls(input=pipeline.InputConfig(**inputs), **{k: v for k, v in values.items() if k in own})
