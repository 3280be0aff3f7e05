"""Shared by the PyTorch reference scripts (torch_fcrn_step.py, torch_inpainter_step.py): their flags
for the batch and timing, --params_only, and the train-and-time loop with its output lines. Imports only
torch and the standard library: those scripts run under an interpreter that has torch but maybe not
jax, which benchmarks/common.py needs. They import it as a sibling module (`python benchmarks/X.py`
puts benchmarks/ first on sys.path)."""
import argparse
import time

import torch


def add_step_args(parser: argparse.ArgumentParser) -> None:
  """--batch, --size, --repeats, --inner, --threads."""
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--inner", type=int, default=5)
  parser.add_argument("--threads", default="0", help="Comma-separated intra-op thread counts to time "
                      "in turn (0: torch's default).")


def add_params_only_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--params_only", action="store_true", help="Print the parameter count and exit.")


def train_and_time(model: torch.nn.Module, describe: str, make_loss, args: argparse.Namespace) -> None:
  """The tag is `DESCRIBE params=P` (P: model's parameter count); with args.params_only, prints it and
  returns. Otherwise: model.train(), Adam(1e-3), loss = make_loss() (it builds the batch and returns
  the zero-argument loss function), and time_threads a step of zero_grad, loss().backward(), Adam step."""
  tag = f"{describe} params={sum(p.numel() for p in model.parameters())}"
  if args.params_only:
    print(tag)
    return
  model.train()
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  loss_fn = make_loss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    opt.step()
    return loss

  time_threads(step, tag, args)


def time_threads(step, tag: str, args: argparse.Namespace) -> None:
  """Times step() at each thread count of args.threads (0: torch's default), printing
  `TAG threads=T ms=... img_per_s=...` for each: the best mean over args.repeats rounds of args.inner
  steps, after two warm-up steps for the first thread count and one for each further one."""
  default_threads = torch.get_num_threads()
  step()
  for threads in (int(t) for t in args.threads.split(",")):
    torch.set_num_threads(threads or default_threads)
    step()
    best = float("inf")
    for _ in range(args.repeats):
      start = time.perf_counter()
      for _ in range(args.inner):
        step()
      best = min(best, (time.perf_counter() - start) / args.inner)
    print(f"{tag} threads={torch.get_num_threads()} ms={best * 1e3:.2f} img_per_s={args.batch / best:.2f}",
          flush=True)
