"""One process per workdir: a lock file that a second run on the same workdir is refused by.

    with run_lock.hold(workdir):
      ...train, write checkpoints and metrics...

`<workdir>/.lock` is locked with `fcntl.flock`, which the kernel releases when the process dies,
so a crashed or killed run never leaves the workdir locked: the next run takes the lock over and
warns, naming the dead process recorded in the file. A live holder is named in the refusal (pid,
host, command line). Re-entrant within a process (a pipeline holds its workdir while its stages
train in it). In a multi-host run only process 0 takes it (the hosts share the workdir).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from typing import Iterator

from absl import logging

LOCK_FILE = ".lock"
_held: dict[str, tuple[int, int]] = {}  # realpath of the workdir -> (fd, depth)


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir."""


def _describe(holder: dict) -> str:
  return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (started "
          f"{holder.get('started', '?')}: {holder.get('command', '?')})")


def _read_holder(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    return json.loads(os.read(fd, 65536).decode() or "{}")
  except ValueError:
    return {}


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock for the block; raises WorkdirBusyError if a live process holds it."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  key = os.path.realpath(workdir)
  if key in _held:
    fd, depth = _held[key]
    _held[key] = (fd, depth + 1)
    try:
      yield
    finally:
      fd, depth = _held[key]
      _held[key] = (fd, depth - 1)
    return
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = _read_holder(fd)
    os.close(fd)
    raise WorkdirBusyError(f"{workdir} is in use by {_describe(holder)}; wait for it to finish, stop it, "
                           "or use another workdir") from None
  previous = _read_holder(fd)
  if previous.get("pid"):  # the lock file outlived its process: it died without releasing it
    logging.warning("Taking over the lock of %s in %s: that process is gone (it did not finish cleanly).",
                    _describe(previous), workdir)
  me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:500]}
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, json.dumps(me).encode())
  _held[key] = (fd, 1)
  try:
    yield
  finally:
    del _held[key]
    os.ftruncate(fd, 0)  # a clean release leaves an empty file: no "taken over" warning next time
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
