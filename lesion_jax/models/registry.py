"""The one model lookup: every network of the project by name, as a Flax module.

    from lesion_jax import models
    net = models.get("unet", features=16, levels=4)          # keyword arguments: the module's own
    models.names("segmenter")                                # ('unet', 'dilated_unet', 'fcn')

Each model module registers its networks (a class, or a factory for named variants such as
`resnet50` or `fcrn88`) under a family, so tasks, configs and command-line help list the same
names. An unknown name or keyword is an error naming the network and what it takes.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

_FACTORIES: dict[str, tuple[str, Callable[..., Any]]] = {}


def register(name: str, family: str, factory: Callable[..., Any]) -> None:
  """Makes `factory(**kwargs)` (a Flax module class or a function returning one) `get(name)`."""
  if name in _FACTORIES and _FACTORIES[name] != (family, factory):
    raise ValueError(f"model name {name!r} is registered twice")
  _FACTORIES[name] = (family, factory)


def names(family: str | None = None) -> tuple[str, ...]:
  """Registered names (of one family: classifier, segmenter, fcrn, lfn, detector, inpainter), in
  registration order."""
  return tuple(n for n, (f, _) in _FACTORIES.items() if family in (None, f))


def family_of(name: str) -> str | None:
  return _FACTORIES[name][0] if name in _FACTORIES else None


def get(name: str, **kwargs: Any) -> Any:
  """The network `name`, built with `kwargs`."""
  if name not in _FACTORIES:
    raise ValueError(f"unknown model {name!r}; registered: {list(_FACTORIES)}")
  factory = _FACTORIES[name][1]
  try:
    inspect.signature(factory).bind(**kwargs)
  except TypeError as e:
    raise ValueError(f"model {name!r}: {e} (it takes {_parameters(factory)})") from None
  return factory(**kwargs)


def _parameters(factory: Callable[..., Any]) -> list[str]:
  return [p for p in inspect.signature(factory).parameters if p not in ("parent", "name")]
