"""Where a run's numbers come from: `<workdir>/provenance.json`, written by the train verb once a
run has finished (config file, overrides, command, date, commit, machine, wall time) and read by
the report verb for every row of docs/results."""
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
           command: list[str] | None = None, code: str | None = None) -> dict[str, Any]:
  """Writes (atomically) and returns the run's provenance; `code`: the commit the run started from
  (default: the checkout's now)."""
  entry = {"config_file": config_file, "overrides": dict(overrides),
           "command": shlex.join(command if command is not None else _command_line()),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "commit": code or commit(), "machine": machine(), "wall_time_s": round(float(wall_time_s), 1)}
  io.write_json(os.path.join(workdir, FILE), entry)
  return entry


def read(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, FILE)
  return io.read_json(path) if os.path.exists(path) else None
