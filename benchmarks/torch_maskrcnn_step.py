"""PyTorch side of a Mask R-CNN training-step benchmark: one SGD step of torchvision's Mask R-CNN
(ResNet-FPN backbone, torchvision.models.detection.maskrcnn_resnet50_fpn / MaskRCNN) on a fixed batch,
with the knobs the JAX model shares exposed as flags so both sides can be set equal. Needs only
torch and torchvision.

  python torch_maskrcnn_step.py [--size=128] [--batch=4] [--depth=50|101] [--anchor_sizes=16,32,64,128,256]
                                [--rpn_batch_size_per_image=256] [--rpn_pre_nms_top_n_train=2000]
                                [--rpn_post_nms_top_n_train=1000] [--box_batch_size_per_image=512]
                                [--box_positive_fraction=0.25] [--seed=0] [--warmup=2] [--repeats=3]
                                [--inner=5] [--threads=0] [--no_reset] [--params_only]

Prints one line per thread count of --threads (0: torch's default, one per core):
`torch_maskrcnn_step depth=D size=S batch=B anchors=a,b,... rpn=R/PRE/POST box=N/F params=P threads=T
ms=M windows_ms=a,b,... img_per_s=...`: after --warmup steps (at each thread count), --repeats timed
windows of --inner steps each; windows_ms are the windows' mean step times, ms their median.
img_per_s counts the B images of a step. rpn= is rpn_batch_size_per_image / pre-NMS / post-NMS
top-n (training), box= is box_batch_size_per_image / box_positive_fraction. With --params_only,
prints the line up to params=P and exits.

What is measured: one training step = the model in train mode on the B images and their targets,
returning torchvision's loss dict (loss_objectness, loss_rpn_box_reg, loss_classifier,
loss_box_reg, loss_mask), the sum of those losses, backward, and an SGD(lr=0.01, momentum=0.9,
weight_decay=1e-4) step (zero_grad first). Each timed step starts from the same state: one
untimed step is taken from the initialisation (so SGD's momentum buffers exist), its parameters,
buffers (BatchNorm running statistics), momentum buffers and torch RNG state are saved, and they are
copied back, untimed, before every warm-up and timed step. Without that (--no_reset: the state
carries on from step to step, as a training run) SGD at lr 0.01 from this random initialisation
diverges on the fixed batch (loss_mask ~7, 90, 160, 8e6, then inf / NaN from the 6th step on), and
PyTorch's step time depends on the state through its data-dependent shapes (proposals left after
NMS, positive RoIs for the mask head, NaN boxes dropped): on 2 shared cores it went from ~20 s to
2-15 s a step once NaN. Everything inside the model is timed: the GeneralizedRCNNTransform
(normalisation, a scale-1 "resize", batching), backbone + FPN, anchors, RPN with proposal selection
and NMS, the RoI sampler, MultiScaleRoIAlign, box and mask heads and losses.

Inputs: a fixed (seeded) random batch of B images S x S, 3 channels, uniform in [0, 1], each with ONE
lesion-like target: an axis-aligned elliptical binary mask whose width and height are each drawn
uniformly in 20-60 % of S at a random position fully inside the image, its tight box
(x1, y1, x2, y2) = (min column, min row, max column + 1, max row + 1) of the mask's pixels, label 1.

Settings that differ from torchvision's defaults:
  - random initialisation, seeded (weights=None, weights_backbone=None; torchvision's own init:
    Kaiming-normal backbone convs, BatchNorm scale 1 / bias 0, FPN convs Kaiming-uniform(a=1),
    RPN/heads as torchvision); num_classes=2 (background + lesion) instead of 91.
  - BatchNorm: with neither weights nor weights_backbone torchvision builds the ResNet with ordinary
    nn.BatchNorm2d (not FrozenBatchNorm2d; the script asserts this) and, in train mode, normalises
    with the statistics of the current batch (over the B images, per channel) and updates the running
    statistics (momentum 0.1, eps 1e-5). FPN, RPN and heads have no normalisation.
  - all backbone layers trainable (trainable_backbone_layers=5, which is what torchvision falls back
    to without pretrained weights; the argument is left unset to skip its warning, and the script
    asserts every parameter requires grad).
  - min_size = max_size = S (defaults 800 / 1333), so the transform does not resize: the scale is
    min(S / S, S / S) = 1, and a one-off check asserts the transformed batch is B x 3 x S x S with
    every image size (S, S). (torchvision still calls a scale-1 bilinear interpolate on each image,
    an identity, and nearest on each mask; S is a multiple of 32, so batching pads nothing.)
    Normalisation stays torchvision's ImageNet mean / std.
  - anchors scaled to the image: AnchorGenerator(sizes=--anchor_sizes, one size per FPN level
    P2..P6 (default 16, 32, 64, 128, 256 against 32 .. 512), aspect ratios 0.5, 1, 2 at every level
    (as torchvision)).
  - RoI counts: rpn_batch_size_per_image 256 (= default), rpn_pre_nms_top_n_train 2000 (= default;
    torchvision applies it per FPN level, so at 128 px only P2's 3072 anchors are cut),
    rpn_post_nms_top_n_train 1000 (default 2000, per image), box_batch_size_per_image 512 (= default),
    box_positive_fraction 0.25 (= default). The other RPN / RoI settings are torchvision's (NMS 0.7,
    fg/bg IoU 0.7/0.3 for the RPN, 0.5/0.5 for the boxes, RoIAlign 7x7 boxes and 14x14 masks,
    28x28 mask targets).
  --depth=101 builds the same model with resnet_fpn_backbone("resnet101", weights=None,
  norm_layer=nn.BatchNorm2d, trainable_layers=5) and the MaskRCNN constructor.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

import torch_common  # benchmarks/torch_common.py, beside this script


def build_model(args, anchor_sizes):
  anchors = AnchorGenerator(sizes=tuple((a,) for a in anchor_sizes),
                            aspect_ratios=((0.5, 1.0, 2.0),) * len(anchor_sizes))
  kwargs = dict(num_classes=2, min_size=args.size, max_size=args.size, rpn_anchor_generator=anchors,
                rpn_batch_size_per_image=args.rpn_batch_size_per_image,
                rpn_pre_nms_top_n_train=args.rpn_pre_nms_top_n_train,
                rpn_post_nms_top_n_train=args.rpn_post_nms_top_n_train,
                box_batch_size_per_image=args.box_batch_size_per_image,
                box_positive_fraction=args.box_positive_fraction)
  if args.depth == 50:
    # trainable_backbone_layers unset: without pretrained weights torchvision uses 5 (all) and warns if given.
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
  elif args.depth == 101:
    backbone = resnet_fpn_backbone(backbone_name="resnet101", weights=None, norm_layer=nn.BatchNorm2d,
                                   trainable_layers=5)
    model = MaskRCNN(backbone, **kwargs)
  else:
    raise SystemExit(f"--depth must be 50 or 101, got {args.depth}")
  num_levels = len(model.backbone(torch.zeros(1, 3, 64, 64)))
  if num_levels != len(anchor_sizes):
    raise SystemExit(f"--anchor_sizes needs one size per FPN level ({num_levels}), got {len(anchor_sizes)}")
  assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
  assert any(type(m) is nn.BatchNorm2d for m in model.backbone.body.modules())
  assert all(p.requires_grad for p in model.parameters())
  return model


def state_tensors(model, opt):
  """What a step changes: the parameters, the buffers (BatchNorm running statistics and counts) and
  SGD's momentum buffers, in a fixed order."""
  params = list(model.parameters())
  return params + list(model.buffers()) + [opt.state[p]["momentum_buffer"] for p in params]


def make_batch(batch, size, generator):
  """B images in [0, 1] and their targets: one elliptical mask each, its tight box, label 1."""
  images = torch.rand(batch, 3, size, size, generator=generator)
  rows = torch.arange(size, dtype=torch.float32)[:, None] + 0.5
  cols = torch.arange(size, dtype=torch.float32)[None, :] + 0.5
  targets = []
  for _ in range(batch):
    w, h = ((0.2 + 0.4 * torch.rand(2, generator=generator)) * size).tolist()
    cx = w / 2 + torch.rand((), generator=generator).item() * (size - w)
    cy = h / 2 + torch.rand((), generator=generator).item() * (size - h)
    mask = ((cols - cx) / (w / 2)) ** 2 + ((rows - cy) / (h / 2)) ** 2 <= 1.0
    ys, xs = torch.nonzero(mask, as_tuple=True)
    box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
    targets.append({"boxes": box, "labels": torch.ones(1, dtype=torch.int64),
                    "masks": mask[None].to(torch.uint8)})
  return list(images), targets


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  torch_common.add_step_args(parser)  # --batch, --size, --repeats (windows), --inner (steps a window), --threads
  parser.set_defaults(batch=4, size=128)
  parser.add_argument("--depth", type=int, default=50, choices=(50, 101), help="ResNet depth of the backbone.")
  parser.add_argument("--anchor_sizes", default="16,32,64,128,256",
                      help="Anchor size per FPN level (P2..P6), comma-separated; aspect ratios 0.5, 1, 2.")
  parser.add_argument("--rpn_batch_size_per_image", type=int, default=256)
  parser.add_argument("--rpn_pre_nms_top_n_train", type=int, default=2000, help="Per FPN level (torchvision).")
  parser.add_argument("--rpn_post_nms_top_n_train", type=int, default=1000, help="Per image.")
  parser.add_argument("--box_batch_size_per_image", type=int, default=512)
  parser.add_argument("--box_positive_fraction", type=float, default=0.25)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before each thread count's windows.")
  parser.add_argument("--no_reset", action="store_true",
                      help="Let the state carry on from step to step instead of restarting every step from "
                           "the saved one (it diverges to NaN within a few steps, and the step time with it).")
  torch_common.add_params_only_arg(parser)
  args = parser.parse_args()
  anchor_sizes = tuple(int(a) for a in args.anchor_sizes.split(","))
  torch.manual_seed(args.seed)
  model = build_model(args, anchor_sizes)
  tag = (f"torch_maskrcnn_step depth={args.depth} size={args.size} batch={args.batch} "
         f"anchors={','.join(map(str, anchor_sizes))} rpn={args.rpn_batch_size_per_image}/"
         f"{args.rpn_pre_nms_top_n_train}/{args.rpn_post_nms_top_n_train} "
         f"box={args.box_batch_size_per_image}/{args.box_positive_fraction:g} "
         f"params={sum(p.numel() for p in model.parameters())}")
  if args.params_only:
    print(tag)
    return

  images, targets = make_batch(args.batch, args.size, torch.Generator().manual_seed(args.seed))
  model.train()
  with torch.no_grad():  # one-off: the transform must not resize (nor pad)
    batched, _ = model.transform(images, [dict(t) for t in targets])
  assert tuple(batched.tensors.shape) == (args.batch, 3, args.size, args.size), batched.tensors.shape
  assert all(tuple(s) == (args.size, args.size) for s in batched.image_sizes), batched.image_sizes
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

  def step():
    opt.zero_grad(set_to_none=True)
    losses = model(images, targets)
    loss = sum(losses.values())
    loss.backward()
    opt.step()
    return loss.detach()

  step()  # untimed: creates SGD's momentum buffers; the state after it is what every timed step starts from
  saved = [t.detach().clone() for t in state_tensors(model, opt)]
  saved_rng = torch.get_rng_state()

  def timed_step():
    """Seconds of one step(), from the saved state unless --no_reset (the copy back is not timed)."""
    if not args.no_reset:
      with torch.no_grad():
        for t, s in zip(state_tensors(model, opt), saved):
          t.copy_(s)
      torch.set_rng_state(saved_rng)
    start = time.perf_counter()
    loss = step()
    return time.perf_counter() - start, loss

  default_threads = torch.get_num_threads()
  for threads in (int(t) for t in args.threads.split(",")):
    torch.set_num_threads(threads or default_threads)
    for _ in range(args.warmup):
      _, loss = timed_step()
    windows = []
    for _ in range(args.repeats):
      total = 0.0
      for _ in range(args.inner):
        seconds, loss = timed_step()
        total += seconds
      windows.append(total / args.inner)
    if not torch.isfinite(loss):
      raise SystemExit(f"non-finite loss {loss.item()}")
    ms = statistics.median(windows) * 1e3
    print(f"{tag} threads={torch.get_num_threads()} ms={ms:.2f} "
          f"windows_ms={','.join(f'{w * 1e3:.2f}' for w in windows)} "
          f"img_per_s={args.batch / ms * 1e3:.2f}", flush=True)


if __name__ == "__main__":
  main()
