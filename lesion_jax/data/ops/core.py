"""The op protocol and its machinery: `Op` (a step `fn(example, seed) -> example` with the keys it
needs, whether it is random and whether it is one-to-many), the factory registry (`register`,
`get`, `names`; `named` for a pipeline package's unregistered factories), `expand` for
one-to-many ops, composition (`Chain`, `chain`), the seed rules (`slot_seed`, `fold_in_range`),
`apply` over a tf.data.Dataset and `MissingFeatureError`. It knows no particular op, so every op
module builds on it and it imports none of them; the conventions (seeds, one-to-many ops,
missing features) are described in the package docstring.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Union

import tensorflow as tf

from lesion_jax import data as data_lib

data_lib.hide_accelerators_from_tensorflow()  # TensorFlow is for input only

Example = dict[str, tf.Tensor]
_plain = tf.autograph.experimental.do_not_convert


class MissingFeatureError(KeyError):
  """An op's input feature is not in the example."""

  def __str__(self) -> str:  # KeyError would print the message quoted
    return str(self.args[0]) if self.args else ""


class Op:
  """A preprocessing step: `fn(example, seed) -> example` plus what the chain needs to know.

  needs: the keys `fn` reads (checked before it runs, for a clear error).
  random: whether it uses its seed (it then takes a seed slot of the chain).
  expands: one-to-many: returns every feature with a leading axis of N examples.
  """

  def __init__(self, fn: Callable[[Example, tf.Tensor], Example], name: str | None = None,
               needs: Sequence[str] = (), random: bool = False, expands: bool = False):
    self.fn = fn
    self.name = name or getattr(fn, "__name__", type(fn).__name__)
    self.needs = tuple(needs)
    self.random = random or expands  # the outputs' seeds derive from a one-to-many op's slot
    self.expands = expands

  def __call__(self, example: Mapping[str, tf.Tensor], seed: tf.Tensor) -> Example:
    missing = [k for k in self.needs if k not in example]
    if missing:
      raise MissingFeatureError(f"op {self.name}: example has no {missing[0]!r} feature "
                                f"(features: {sorted(example)})")
    return self.fn(dict(example), seed)

  def __repr__(self) -> str:
    return self.name


OpLike = Union[Op, Callable[[Example, tf.Tensor], Example], Sequence["OpLike"]]
_REGISTRY: dict[str, Callable[..., Op]] = {}


def named(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
  """An op factory whose ops are named after `name` and their arguments, unregistered: the
  factories of a pipeline package's own ops (lesion_jax/pipelines/<name>/ops.py), which are
  called directly, never looked up by name."""

  def decorator(factory: Callable[..., Op]) -> Callable[..., Op]:

    @functools.wraps(factory)
    def make(*args, **kwargs) -> Op:
      op = factory(*args, **kwargs)
      op = op if isinstance(op, Op) else Op(op, random=True)
      op.name = name + "(" + ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]) + ")"
      return op

    return make

  return decorator


def register(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
  """Registers an op factory under `name` (`named`: the ops it makes are named after their
  arguments)."""

  def decorator(factory: Callable[..., Op]) -> Callable[..., Op]:
    if name in _REGISTRY:
      raise ValueError(f"op {name!r} is already registered")
    _REGISTRY[name] = make = named(name)(factory)
    return make

  return decorator


def get(name: str) -> Callable[..., Op]:
  """The factory registered as `name`."""
  if name not in _REGISTRY:
    raise KeyError(f"no op {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def expand(fn: Callable[[Example, tf.Tensor], Example], name: str | None = None,
           needs: Sequence[str] = ()) -> Op:
  """A one-to-many op from `fn(example, seed) -> features with a leading axis of N`."""
  return Op(fn, name, needs, expands=True)


# ---------------------------------------------------------------------------------------------
# Chains and seeds.

def _flatten(preprocess: OpLike) -> list[Op]:
  if isinstance(preprocess, Chain):
    return list(preprocess.ops)
  if isinstance(preprocess, Op):
    return [preprocess]
  if isinstance(preprocess, (list, tuple)):
    return [op for p in preprocess for op in _flatten(p)]
  if callable(preprocess):  # a plain function: assume it is random, so it gets its own seed
    return [Op(preprocess, random=True)]
  raise TypeError(f"not an op, a chain or a list of them: {preprocess!r}")


def slot_seed(seed: tf.Tensor, k: int) -> tf.Tensor:
  """The seed of a chain's k-th random op."""
  seed = tf.cast(seed, tf.int64)
  return seed if k == 0 else tf.random.experimental.stateless_fold_in(seed, tf.constant(k, tf.int64))


def fold_in_range(seed: tf.Tensor, n) -> tf.Tensor:
  """(n, 2): row j is stateless_fold_in(seed, j) (int64), for all j at once."""
  seed = tf.cast(seed, tf.int64)
  first = tf.random.stateless_uniform([], seed=seed, dtype=tf.int64, minval=None, maxval=None)
  return tf.stack([tf.fill([n], first), tf.range(n, dtype=tf.int64)], axis=1)


def _run(ops: Sequence[Op], example: Example, seed: tf.Tensor) -> tuple[Example, int]:
  """Runs one-to-one ops; returns the example and the number of seed slots used."""
  k = 0
  for op in ops:
    if op.random:
      example = op(example, slot_seed(seed, k))
      k += 1
    else:
      example = op(example, seed)
  return example, k


class Chain(Op):
  """Ops applied in order (nested chains and lists are flattened)."""

  def __init__(self, preprocess: OpLike):
    self.ops = tuple(_flatten(preprocess))
    super().__init__(self._call, "chain[" + ", ".join(op.name for op in self.ops) + "]",
                     random=any(op.random for op in self.ops), expands=any(op.expands for op in self.ops))

  def _call(self, example: Example, seed: tf.Tensor) -> Example:
    if self.expands:
      raise ValueError(f"{self.name} has a one-to-many op: run it with ops.apply over a tf.data.Dataset")
    return _run(self.ops, example, seed)[0]

  def segments(self) -> list[tuple[tuple[Op, ...], Op | None]]:
    """(one-to-one ops, the one-to-many op after them or None); the last has None."""
    out, current = [], []
    for op in self.ops:
      if op.expands:
        out.append((tuple(current), op))
        current = []
      else:
        current.append(op)
    out.append((tuple(current), None))
    return out


def chain(preprocess: OpLike) -> Chain:
  return preprocess if isinstance(preprocess, Chain) else Chain(preprocess)


def apply(ds: tf.data.Dataset, preprocess: OpLike, stream_seed: int | None = None,
          num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
  """Runs `preprocess` over `ds`, keeping its order; yields the examples.

  `ds` yields (seed, example), or with `stream_seed` (position, example) and the seed is
  stack([stream_seed, position]), made in the same map as the first ops.
  """
  segments = chain(preprocess).segments()
  for i, (ops, expander) in enumerate(segments):
    last = i == len(segments) - 1
    make_seed = i == 0 and stream_seed is not None

    def fn(seed, example, ops=ops, expander=expander, last=last, make_seed=make_seed):
      if make_seed:
        seed = tf.stack([tf.constant(stream_seed, tf.int64), tf.cast(seed, tf.int64)])
      example, k = _run(ops, example, seed)
      if expander is None:
        return example if last else (seed, example)
      s = slot_seed(seed, k)
      many = expander(example, s)
      leaves = tf.nest.flatten(many)
      if not leaves or any(t.shape.rank == 0 for t in leaves):
        raise ValueError(f"one-to-many op {expander.name} must give every feature a leading axis")
      return fold_in_range(s, tf.shape(leaves[0])[0]), many

    ds = ds.map(_plain(fn), num_parallel_calls=num_parallel_calls, deterministic=True)
    if expander is not None:
      ds = ds.unbatch()
  return ds
