"""The errors of the dermoscopy builders (see `lesion_jax.data.builders.common`).

`ManualDataError`: the hand-downloaded archive lacks a folder or file (or is unusable as a whole);
`PreparedWithSkipsError`: a strict builder found its data prepared with examples skipped;
`BadExampleError`: one example cannot be built; `BadExamplesError`: every bad example a strict
preparation found. The bad-example errors pickle with their attributes: Beam's multi-process
runners send a worker's exception back to the driver that way.
"""
from __future__ import annotations

from collections.abc import Mapping


class ManualDataError(FileNotFoundError):
  """A folder or file of the hand-downloaded archive is missing (or unusable as a whole)."""


class PreparedWithSkipsError(ManualDataError):
  """A strict builder (skip_bad_examples=False) found its data folder already prepared with
  skip_bad_examples=True and examples skipped: it neither reuses nor reads that data silently.
  A ManualDataError, so the experiments report it as a one-line usage error."""


def _restore_error(cls, args, state):
  error = Exception.__new__(cls)
  error.args = args
  error.__dict__.update(state)
  return error


class BadExampleError(ValueError):
  """One example cannot be built; `example_id` and `reason` say which and why."""

  def __init__(self, example_id: str, reason: str, context: str = ""):
    self.example_id = example_id
    self.reason = reason
    prefix = f"{context}: " if context else ""
    super().__init__(f"{prefix}example {example_id}: {reason}")

  def __reduce__(self):
    # Beam's multi-process runners pickle a worker's exception back to the driver; the default
    # (cls(*args), args being the message) would fail on this __init__ and hide the message.
    return _restore_error, (type(self), self.args, dict(self.__dict__))


class BadExamplesError(BadExampleError):
  """A strict preparation found bad examples: `problems` (split → id → reason, in the order
  found) holds all of them; `example_id` and `reason` are the first one's, the message lists
  them all."""

  def __init__(self, example_id: str, reason: str, context: str,
               problems: Mapping[str, Mapping[str, str]]):
    super().__init__(example_id, reason, context)
    self.problems = {split: dict(ids) for split, ids in problems.items() if ids}
