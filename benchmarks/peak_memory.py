r"""Runs a Python script or module in this process, then prints the peak device memory it used.

  python benchmarks/peak_memory.py benchmarks/fcrn_step.py --variants=fcrn_small:128:8
  python benchmarks/peak_memory.py -m experiments.train --config=... --workdir=...

The program runs as `python SCRIPT ARGS` / `python -m MODULE ARGS` would run it (as __main__, with
sys.argv set); its exit status is this process's. At the end, whether it succeeded or not, one line
per local device reports JAX's allocator statistics (`Device.memory_stats()["peak_bytes_in_use"]`:
the most bytes its buffers held at once, not what the allocator reserved):

  peak device memory: cuda:0 (NVIDIA H100 80GB HBM3): 1234.5 MiB of 81559.0 MiB

A backend without allocator statistics (XLA:CPU) says so instead. Used by benchmarks/accelerator.sh,
so that each benchmark and each verb is measured in a process of its own.
"""
from __future__ import annotations

import os
import runpy
import sys


def peak_lines() -> list[str]:
  """One line per local device; `jax` is imported only if the program did (a program that failed
  before touching JAX has used no device memory)."""
  if "jax" not in sys.modules:
    return ["peak device memory: unavailable (the program never imported jax)"]
  import jax  # pylint: disable=g-import-not-at-top
  lines = []
  for device in jax.local_devices():
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    name = f"{device.platform}:{device.id} ({device.device_kind})"
    if not stats or "peak_bytes_in_use" not in stats:
      lines.append(f"peak device memory: {name}: unavailable (no allocator statistics on {device.platform})")
      continue
    limit = stats.get("bytes_limit")
    of = f" of {limit / 2 ** 20:.1f} MiB" if limit else ""
    lines.append(f"peak device memory: {name}: {stats['peak_bytes_in_use'] / 2 ** 20:.1f} MiB{of}")
  return lines


def main(argv: list[str]) -> None:
  if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
    raise SystemExit(__doc__)
  # sys.path[0] is this file's folder; python puts the current folder there for -m, the script's
  # folder for a script.
  try:
    if argv[0] == "-m":
      sys.argv, sys.path[0] = [argv[1], *argv[2:]], os.getcwd()
      runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
      sys.argv, sys.path[0] = list(argv), os.path.dirname(os.path.abspath(argv[0]))
      runpy.run_path(argv[0], run_name="__main__")
  finally:
    for line in peak_lines():
      print(line, flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
