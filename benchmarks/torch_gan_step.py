"""PyTorch side of benchmarks/gan_step.py: one joint DCGAN training round of
lesion_jax/models/dcgan.py (de-coupled, one class model) rebuilt in PyTorch (NCHW), as
lesion_jax.pipelines.gan.steps.make_train_step runs it. Needs only torch.

  python torch_gan_step.py [--size=64] [--batch=64] [--features=64] [--classes=1] [--latent_dim=10]
                           [--extra_generator_steps=2] [--warmup=2] [--repeats=3] [--inner=5]
                           [--threads=0] [--params_only]

Prints one line per thread count of --threads (0: torch's default, one per core):
`torch_gan_step size=S batch=B features=F classes=C params=P threads=T ms=M windows_ms=a,b,...
img_per_s=...`: after --warmup rounds (at each thread count), --repeats timed windows of --inner
rounds each; windows_ms are the windows' mean round times, ms their median. img_per_s counts
B x C real images per round (B per class model), as benchmarks/gan_step.py does.

With --classes=C, C independent DCGANs (each its own generator, discriminator and two Adams) are
trained one after the other in each round: what PyTorch code without a class axis does,
against JAX's one step over the C class models.

The networks, as dcgan.py (its docstring and code are the spec), for S = 4 * 2**last:
generator: Linear(latent -> 4*4*w0, no bias), BatchNorm, ReLU; then ConvTranspose2d(4, stride 2,
  padding 1) per layer i = 1..last, no bias but the last (to 3 channels, bias, tanh), BatchNorm and
  ReLU after the others; w_i = features * min(8, 2**(last - 1 - i)).
discriminator: Conv2d(4, stride 2, padding 1) per layer i = 0..last-1 to features * min(8, 2**i)
  (bias only on the first; BatchNorm on all but the first), LeakyReLU(0.2); then flatten (4x4) and
  Linear -> 1 logit.
Weights N(0, 0.02), biases 0, BatchNorm scales N(1, 0.02) (momentum 0.1 = flax 0.9, eps 1e-5).
Both players: Adam(2e-4, betas (0.5, 0.999)).

One round (make_train_step): D update on BCE(D(real), 0.9) + BCE(D(fake), 0), fake = G(z)
generated in training mode without gradient; then 1 + extra_generator_steps G updates on the
non-saturating BCE(D(G(z)), 1), each with fresh z. During the G updates the discriminator's
parameters have requires_grad off, so backward computes only what the generator's gradient needs,
as JAX's jax.grad with respect to the generator's parameters (PyTorch's DCGAN example instead also
accumulates discriminator weight gradients there and discards them). One difference left: during
the G updates PyTorch's BatchNorm in training mode also updates the discriminator's running
statistics, which JAX drops (a per-channel average, negligible).
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common  # benchmarks/torch_common.py, beside this script


def num_layers(image_size):
  last = (image_size // 4).bit_length() - 1
  if image_size < 8 or 4 * 2 ** last != image_size:
    raise SystemExit(f"--size must be 4 * 2**n (8, 16, 32, 64, 128, 256), got {image_size}")
  return last + 1


def bn(c):
  return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


class Generator(nn.Module):
  def __init__(self, size, features, latent_dim):
    super().__init__()
    last = num_layers(size) - 1
    self.widths = [3 if i == last else features * min(8, 2 ** (last - 1 - i)) for i in range(last + 1)]
    self.project = nn.Linear(latent_dim, 4 * 4 * self.widths[0], bias=False)
    self.norms = nn.ModuleList(bn(w) for w in self.widths[:-1])  # after layers 0 .. last-1
    self.ups = nn.ModuleList(nn.ConvTranspose2d(self.widths[i - 1], self.widths[i], 4, 2, 1, bias=i == last)
                             for i in range(1, last + 1))

  def forward(self, z):
    x = F.relu(self.norms[0](self.project(z).view(z.shape[0], self.widths[0], 4, 4)))
    for i, up in enumerate(self.ups, start=1):
      x = up(x)
      x = torch.tanh(x) if i == len(self.ups) else F.relu(self.norms[i](x))
    return x


class Discriminator(nn.Module):
  def __init__(self, size, features):
    super().__init__()
    last = num_layers(size) - 1
    widths = [3] + [features * min(8, 2 ** i) for i in range(last)]
    self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1, bias=i == 0) for i in range(last))
    self.norms = nn.ModuleList(nn.Identity() if i == 0 else bn(widths[i + 1]) for i in range(last))
    self.logit = nn.Linear(4 * 4 * widths[-1], 1)

  def forward(self, x):
    for conv, norm in zip(self.convs, self.norms):
      x = F.leaky_relu(norm(conv(x)), 0.2)
    return self.logit(x.flatten(1))[:, 0]


def dcgan_init(module):
  if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
    nn.init.normal_(module.weight, 0.0, 0.02)
    if module.bias is not None:
      nn.init.zeros_(module.bias)
  elif isinstance(module, nn.BatchNorm2d):
    nn.init.normal_(module.weight, 1.0, 0.02)
    nn.init.zeros_(module.bias)


class ClassGAN:
  """One class model: generator, discriminator and their Adams, with its real batch."""

  def __init__(self, size, batch, features, latent_dim):
    self.g, self.d = Generator(size, features, latent_dim), Discriminator(size, features)
    for net in (self.g, self.d):
      net.apply(dcgan_init)
      net.train()
    self.opt_g = torch.optim.Adam(self.g.parameters(), 2e-4, betas=(0.5, 0.999))
    self.opt_d = torch.optim.Adam(self.d.parameters(), 2e-4, betas=(0.5, 0.999))
    self.real = torch.rand(batch, 3, size, size) * 2 - 1
    self.batch, self.latent_dim = batch, latent_dim

  def params(self):
    return sum(p.numel() for net in (self.g, self.d) for p in net.parameters())

  def round(self, extra_generator_steps, real_label=0.9):
    b = self.batch
    with torch.no_grad():
      fake = self.g(torch.randn(b, self.latent_dim))
    self.opt_d.zero_grad(set_to_none=True)
    real_logits, fake_logits = self.d(self.real), self.d(fake)
    d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    d_loss.backward()
    self.opt_d.step()
    self.d.requires_grad_(False)
    for _ in range(1 + extra_generator_steps):
      self.opt_g.zero_grad(set_to_none=True)
      logits = self.d(self.g(torch.randn(b, self.latent_dim)))
      g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
      g_loss.backward()
      self.opt_g.step()
    self.d.requires_grad_(True)
    return d_loss.detach() + g_loss.detach()


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  torch_common.add_step_args(parser)  # --batch, --size, --repeats (windows), --inner (rounds a window), --threads
  parser.set_defaults(batch=64, size=64)
  parser.add_argument("--features", type=int, default=64)
  parser.add_argument("--classes", type=int, default=1, help="Independent class models, trained in turn.")
  parser.add_argument("--latent_dim", type=int, default=10)
  parser.add_argument("--extra_generator_steps", type=int, default=2)
  parser.add_argument("--warmup", type=int, default=2, help="Untimed rounds before each thread count's windows.")
  torch_common.add_params_only_arg(parser)
  args = parser.parse_args()
  torch.manual_seed(0)
  models = [ClassGAN(args.size, args.batch, args.features, args.latent_dim) for _ in range(args.classes)]
  tag = (f"torch_gan_step size={args.size} batch={args.batch} features={args.features} classes={args.classes} "
         f"params={sum(m.params() for m in models)}")
  if args.params_only:
    print(tag)
    return

  def step():
    return [m.round(args.extra_generator_steps) for m in models]

  default_threads = torch.get_num_threads()
  for threads in (int(t) for t in args.threads.split(",")):
    torch.set_num_threads(threads or default_threads)
    for _ in range(args.warmup):
      step()
    windows = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      for _ in range(args.inner):
        step()
      windows.append((time.perf_counter() - start) / args.inner)
    ms = statistics.median(windows) * 1e3
    print(f"{tag} threads={torch.get_num_threads()} ms={ms:.2f} "
          f"windows_ms={','.join(f'{w * 1e3:.2f}' for w in windows)} "
          f"img_per_s={args.batch * args.classes / ms * 1e3:.2f}", flush=True)


if __name__ == "__main__":
  main()
