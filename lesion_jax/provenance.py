"""Where a run's numbers come from: `<workdir>/provenance.json`, written by the train verb and read
by the report verb for every row of docs/results.

A run may take several invocations (preempted, then resumed with the same command; resumed with
more steps), so the record keeps every one, first first, in `invocations` (config file, overrides,
command, date it began, commit, machine, wall time, whether it finished), each appended when its invocation
ends, stopped or finished (a process killed outright, SIGKILL, leaves none). Its top level sums them
up (`summary`): the first invocation's config file, overrides, command, date and machine (the run
as it was started; a resume runs the same config, only how long or how often may differ, and
those commands are in the list), every commit the run was trained from, in order, and the wall
time of all invocations together (what the numbers cost). A record written before invocations were
kept is its own single invocation."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from typing import Any

from lesion_jax import io

FILE = "provenance.json"
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"  # an invocation's date: when it began


def commit() -> str:
  """The checkout's commit (with "+changes" when the tree differs from it), or "unknown"."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "-C", repo, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return head + ("+changes" if dirty else "")


def machine() -> str:
  """The machine in a few words: CPU cores, accelerators, platform."""
  import jax  # pylint: disable=g-import-not-at-top
  kinds = sorted({d.device_kind for d in jax.devices()})
  return f"{os.cpu_count()} CPU cores, {jax.device_count()} x {'/'.join(kinds)} ({platform.platform(terse=True)})"


def _command_line() -> list[str]:
  """This process's command as typed: `python -m experiments.train ...` for a module run."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", sys.argv[0]]
  return [*head, *sys.argv[1:]]


def record(workdir: str, config_file: str | None, overrides: dict[str, str], wall_time_s: float,
           command: list[str] | None = None, code: str | None = None, finished: bool = True,
           started: datetime.datetime | None = None) -> dict[str, Any]:
  """Appends this invocation to the run's provenance, writes it (atomically) and returns it;
  `code`: the commit the invocation started from (default: the checkout's now); `finished`: False
  for one that stopped before the run's end (a resume follows); `started`: when it began (default:
  `wall_time_s` before now)."""
  now = datetime.datetime.now(datetime.timezone.utc)
  started = started or now - datetime.timedelta(seconds=float(wall_time_s))
  invocation = {"config_file": config_file, "overrides": dict(overrides),
                "command": shlex.join(command if command is not None else _command_line()),
                "date": started.strftime(DATE_FORMAT), "commit": code or commit(), "machine": machine(),
                "wall_time_s": round(float(wall_time_s), 1), "finished": finished}
  entry = summary([*invocations(read(workdir)), invocation])
  io.write_json(os.path.join(workdir, FILE), entry)
  return entry


def invocations(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
  """The invocations a provenance record holds, first first: its `invocations`, or, for a record
  written before they were kept, the record itself (one finished invocation); [] for none."""
  if not entry:
    return []
  if "invocations" in entry:
    return list(entry["invocations"])
  return [{**entry, "finished": entry.get("finished", True)}]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """A provenance record of `runs` (invocations, first first): the first one's config file,
  overrides, command, date and machine; the commits trained from, in order (", "-joined where
  several); the wall time of all of them (None where one lacks it: what they cost is unknown); and
  `invocations` itself."""
  first = runs[0]
  times = [r.get("wall_time_s") for r in runs]
  commits = (c for r in runs for c in str(r.get("commit") or "").split(", ") if c)
  return {"config_file": first.get("config_file"), "overrides": first.get("overrides"),
          "command": first.get("command"), "date": first.get("date"), "commit": ", ".join(dict.fromkeys(commits)),
          "machine": first.get("machine"),
          "wall_time_s": None if None in times else round(sum(float(t) for t in times), 1),
          "invocations": runs}


def read(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, FILE)
  return io.read_json(path) if os.path.exists(path) else None
