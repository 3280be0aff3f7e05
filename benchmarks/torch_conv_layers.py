"""PyTorch side of benchmarks/conv_layers.py: times one 3x3 convolution's forward, input gradient
and weight gradient per layer. Needs only torch (run with the interpreter that has it).

  python torch_conv_layers.py BATCH '[[size, c_in, c_out], ...]'

Prints one JSON list of [forward_ms, input_grad_ms, weight_grad_ms] per layer.
"""
import json
import sys
import time

import torch


def best_ms(fn, repeats=3, inner=5):
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(inner):
      fn()
    best = min(best, (time.perf_counter() - start) / inner)
  return best * 1e3


def main():
  batch, layers = int(sys.argv[1]), json.loads(sys.argv[2])
  torch.manual_seed(0)
  times = []
  for size, c_in, c_out in layers:
    x, w = torch.rand(batch, c_in, size, size), torch.rand(c_out, c_in, 3, 3)
    dy = torch.rand(batch, c_out, size, size)
    times.append([
        best_ms(lambda: torch.nn.functional.conv2d(x, w, padding=1)),
        best_ms(lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1)),
        best_ms(lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=1)),
    ])
  print(json.dumps(times))


if __name__ == "__main__":
  main()
