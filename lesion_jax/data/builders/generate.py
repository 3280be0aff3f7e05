"""Generating the examples of a split, in-process or on Apache Beam, strict or skipping.

`iter_examples` (in-process) and `beam_examples` (a `beam.PTransform`, run on the Beam workers)
make the (id, example) pairs of a split's `Record`s with a `load` function (default
`images.load_example`; any module-level function of (Record, LoadSpec) that raises
`BadExampleError`). A bad example is either skipped (`SkipLog` in-process, Beam counters and
string sets under Beam) or, strict, gathered (`BadLog`, `BeamChecks`) so that one run fails with
one `BadExamplesError` (`bad_examples_error`) listing every bad example of every split.
apache-beam is imported only when Beam generation is asked for.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
import functools
from typing import Any

from absl import logging

from lesion_jax.data.builders.errors import BadExampleError, BadExamplesError
from lesion_jax.data.builders.images import LoadSpec, load_example
from lesion_jax.data.builders.index import Problem, Record


class SkipLog:
  """The examples skipped so far (split → id → reason), each logged as it is skipped."""

  def __init__(self, dataset: str):
    self.dataset = dataset
    self.skipped: dict[str, dict[str, str]] = collections.defaultdict(dict)

  def add(self, split: str, example_id: str, reason: str) -> None:
    logging.warning("%s %s: skipping bad example %s: %s", self.dataset, split, example_id, reason)
    self.skipped[split][example_id] = reason

  def count(self, split: str | None = None) -> int:
    if split is not None:
      return len(self.skipped.get(split, {}))
    return sum(len(v) for v in self.skipped.values())

  def summary(self) -> str:
    if not self.count():
      return f"{self.dataset}: no bad examples skipped."
    parts = [f"{split}: {len(ids)} ({', '.join(sorted(ids))})"
             for split, ids in sorted(self.skipped.items()) if ids]
    return f"{self.dataset}: skipped {self.count()} bad examples; " + "; ".join(parts)


def _skip_hint(many: bool = False) -> str:
  what = "files" if many else "file"
  return (f"Fix or remove the {what}, or prepare with skip_bad_examples=True to skip bad examples "
          "(they are logged, counted and listed in info.metadata['skipped_examples']).")


_MAX_LISTED = 200  # bad examples listed in one error; every one is also logged as it is found


def bad_examples_error(context: str, problems: Mapping[str, Mapping[str, str]],
                       unchecked: Sequence[str] = ()) -> BadExamplesError:
  """The one error of a strict preparation: the first bad example and the hint on its first line
  (what a reader sees first), then one line per bad example, split by split. `unchecked`: splits
  whose images were not all read (a split without a good example stops TFDS; a run capped by
  max_examples_per_split stops early): their indexing problems are listed all the same."""
  problems = {split: dict(ids) for split, ids in problems.items() if ids}
  total = sum(len(ids) for ids in problems.values())
  split, ids = next(iter(problems.items()))
  first_id, first_reason = next(iter(ids.items()))
  note = (f" Not read to the end, so they may hold more (their file lists were checked): "
          f"{', '.join(unchecked)}." if unchecked else "")
  if total == 1:
    return BadExamplesError(first_id, f"{first_reason}. {_skip_hint()}{note}",
                            f"{context} {split}", problems)
  per_split = ", ".join(f"{s}: {len(i)}" for s, i in problems.items())
  lines = [f"  {s} {i}: {r}" for s, found in problems.items() for i, r in found.items()]
  if len(lines) > _MAX_LISTED:
    lines = lines[:_MAX_LISTED] + [f"  ... and {len(lines) - _MAX_LISTED} more (each was logged "
                                   "as it was found)"]
  reason = (f"{first_reason}; {total} bad examples ({per_split}), listed below. "
            f"{_skip_hint(many=True)}{note}\n" + "\n".join(lines))
  return BadExamplesError(first_id, reason, f"{context} {split}", problems)


class BadLog:
  """What a strict in-process preparation found bad so far (split → id → reason, splits in the
  order they are generated), so that one run reports all of it: nothing raises before every
  split has been checked (see `iter_examples`)."""

  def __init__(self, context: str, splits: Sequence[str] = ()):
    self.context = context
    self.bad: dict[str, dict[str, str]] = {split: {} for split in splits}
    self.pending = list(splits)  # splits whose images have not all been read yet

  def add(self, split: str, example_id: str, reason: str) -> None:
    logging.error("%s %s: bad example %s: %s", self.context, split, example_id, reason)
    self.bad.setdefault(split, {})[example_id] = reason

  def count(self) -> int:
    return sum(len(ids) for ids in self.bad.values())

  def done(self, split: str) -> None:
    if split in self.pending:
      self.pending.remove(split)

  def error(self) -> BadExamplesError:
    return bad_examples_error(self.context, self.bad, unchecked=self.pending)


def iter_examples(records: Iterable[Record], spec: LoadSpec, split: str, context: str,
                  skips: SkipLog | None, bad: BadLog | None = None,
                  load: Callable[[Record, LoadSpec], dict[str, Any]] | None = None
                  ) -> Iterator[tuple[str, dict[str, Any]]]:
  """In-process generation of one split with `load` (default `load_example`). With `skips`, bad
  examples are skipped; otherwise they go to `bad`, and the run fails once every split has been
  checked, with every bad example of every split in one error.

  Once anything is known bad the preparation will fail, so writing more examples is wasted work;
  but each split still yields its first good example: TFDS stops the whole run at a split that
  yields none ("No examples were yielded"), before the next split could be checked. A split with
  no good example at all therefore raises at its end, with what was found so far.
  """
  load = load or load_example
  if bad is None and skips is None:
    bad = BadLog(context, [split])
  yielded = 0
  for record in records:
    try:
      example = load(record, spec)
    except BadExampleError as e:
      if skips is not None:
        skips.add(split, e.example_id, e.reason)
      else:
        bad.add(split, e.example_id, e.reason)
      continue
    if bad is None or not bad.count() or not yielded:
      yielded += 1
      yield record.id, example
  if bad is not None:
    bad.done(split)
    if bad.count() and (not bad.pending or not yielded):
      raise bad.error()
  if skips is not None and skips.count(split):
    logging.warning("%s: %d bad examples skipped in total in this split: %s", context,
                    skips.count(split), ", ".join(sorted(skips.skipped[split])))


def _beam_load(record: Record, spec: LoadSpec, split: str, context: str, namespace: str,
               skip: bool, load: Callable[[Record, LoadSpec], dict[str, Any]] | None = None
               ) -> Iterator[Any]:
  """Beam worker: one record → its example; a bad one is skipped (counted in Beam counters) or,
  when strict, sent to the "bad" output as (split, id, reason) for `_raise_bad_examples`."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  try:
    yield record.id, (load or load_example)(record, spec)
  except BadExampleError as e:
    if not skip:
      logging.error("%s: bad example %s: %s", context, e.example_id, e.reason)
      yield beam.pvalue.TaggedOutput("bad", (split, e.example_id, e.reason))
      return
    logging.warning("%s: skipping bad example %s: %s", context, e.example_id, e.reason)
    beam.metrics.Metrics.counter(namespace, f"skipped_{split}").inc()
    if hasattr(beam.metrics.Metrics, "string_set"):  # Beam >= 2.58: the ids reach the driver
      beam.metrics.Metrics.string_set(namespace, f"skipped_ids_{split}").add(
          f"{e.example_id}\t{e.reason}")


def _raise_bad_examples(found: Sequence[tuple[str, str, str]], context: str,
                        index_problems: Mapping[str, Mapping[str, str]]) -> None:
  """The last step of a strict Beam preparation: fails it with every bad example of every split
  (those found while indexing, then the workers', sorted by id), or does nothing."""
  problems = {split: dict(ids) for split, ids in index_problems.items()}
  for split, example_id, reason in sorted(found):
    problems.setdefault(split, {})[example_id] = reason
  if any(problems.values()):
    raise bad_examples_error(context, problems)


class BeamChecks:
  """The strict Beam run's bad examples, gathered over all splits of the one pipeline: each
  split's transform hands over its "bad" output, and the last split's adds the step that fails
  the pipeline with all of them, the driver's indexing problems included (checked on the
  workers, not before: one run reports everything)."""

  def __init__(self, context: str, index_problems: Mapping[str, Sequence[Problem]]):
    self.context = context
    self.index_problems = {split: {p.id: p.reason for p in problems}
                           for split, problems in index_problems.items()}
    self.outputs: list[Any] = []

  def add(self, bad) -> None:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top

    self.outputs.append(bad)
    if len(self.outputs) == len(self.index_problems):
      _ = (tuple(self.outputs) | "FlattenBadExamples" >> beam.Flatten()
           | "ListBadExamples" >> beam.combiners.ToList()
           | "FailOnBadExamples" >> beam.Map(_raise_bad_examples, context=self.context,
                                             index_problems=self.index_problems))


def beam_examples(records: Sequence[Record], spec: LoadSpec, split: str, context: str,
                  namespace: str, skip: bool,
                  load: Callable[[Record, LoadSpec], dict[str, Any]] | None = None,
                  checks: BeamChecks | None = None):
  """A `beam.PTransform` producing the (key, example) pairs of `records` on the Beam workers
  (`load`, default `load_example`, must be a module-level function, so that it pickles). Strict
  (not `skip`), bad examples go to `checks` (one of its own for this split if None)."""
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{context}: Beam generation was requested (a Beam runner or Beam "
                      "options were given) but apache-beam is not installed: "
                      "pip install apache-beam") from e
  fn = functools.partial(_beam_load, spec=spec, split=split, context=context,
                         namespace=namespace, skip=skip, load=load)
  if skip:
    return beam.Create(list(records)) | beam.FlatMap(fn)
  checks = checks or BeamChecks(context, {split: ()})

  @beam.ptransform_fn
  def strict(root):
    results = (root | "Create" >> beam.Create(list(records))
               | "Load" >> beam.FlatMap(fn).with_outputs("bad", main="examples"))
    checks.add(results.bad)
    return results.examples

  return strict()  # pylint: disable=no-value-for-parameter

