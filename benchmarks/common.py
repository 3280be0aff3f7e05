"""Timing helpers shared by the benchmarks: best-of-N wall time, matmul peak, XLA FLOP counts."""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_seconds(fn: Callable[[], Any], repeats: int = 5, inner: int = 5) -> float:
  """Best mean time per call over `repeats` rounds of `inner` calls (after one warm-up call).
  The best, not the mean: the machine is shared and only ever slows us down."""
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(inner):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / inner)
  return best


def matmul_peak_gflops(n: int = 2048) -> float:
  """This machine's float32 matmul throughput (GFLOP/s), measured now."""
  a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / best_seconds(lambda: f(a), repeats=5, inner=3) / 1e9


def xla_flops(jitted, *args) -> float:
  """FLOPs of one call, from XLA's cost analysis of the compiled function."""
  cost = jitted.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))
