r"""Train-step throughput of the Mask R-CNN (pipeline 4's segmenter), against torchvision's.

  python benchmarks/maskrcnn_step.py [--torch_python=PATH | --no_torch] [--size=128] [--batch=4] [--depth=50]
                                     [--rounds=2] [--repeats=2] [--torch_threads=0] [--precision=float32|bfloat16]
                                     [--shape=torchvision|task]

The JAX step is the library's own (MaskRCNNTask.train_step: pipelines/maskrcnn/steps.py make_train_step on
models.maskrcnn.MaskRCNN), jitted with the state donated. --shape=torchvision (the default) sets it to torchvision's
`maskrcnn_resnet50_fpn` shape: ResNet-50 (or --depth=101) at width 64 with BatchNorm (torchvision
without pretrained weights uses plain BatchNorm), FPN 256, RPN 256 anchors per image with the
top 2000 per level before and 1000 per image after NMS, 512 sampled RoIs (25 % foreground),
box head 1024, mask head 256, anchors 16..256 px, SGD (lr 0.01, momentum 0.9, weight decay 1e-4).
--shape=task times MaskRCNNModelConfig's own defaults instead (the network a train_maskrcnn run
trains: width 16, FPN 64, 128 RoIs, GroupNorm; sized for a CPU), with no PyTorch reference.
The reference, benchmarks/torch_maskrcnn_step.py, is torchvision 0.29's MaskRCNN, randomly
initialised, on the same kind of batch (one elliptical lesion per image, its box and mask).

torchvision needs a torch 2.14 + torchvision 0.29 environment (PyPI's torchvision does not import
beside the local torch 2.13 CPU wheel): `python -m venv tv && tv/bin/pip install torch==2.14.1
torchvision==0.29.1` (~5.5 GB), then --torch_python=tv/bin/python. Without it the ratio is skipped.

Differences that remain: torchvision's shapes depend on the data (proposals left after NMS,
foreground RoIs), ours are fixed (every slot is computed, padded ones masked); torchvision
normalises with ImageNet statistics inside the model, ours takes [-1, 1] images. The printed
ratio is JAX images/s over PyTorch images/s (>1 = JAX faster), best of alternating rounds.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.data import pipeline  # noqa: E402
from lesion_jax.pipelines.maskrcnn import task as maskrcnn  # noqa: E402
from lesion_jax.config import RunConfig  # noqa: E402
from lesion_jax.train.state import OptimizerConfig  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_maskrcnn_step.py")
ANCHORS = (16.0, 32.0, 64.0, 128.0, 256.0)


def benchmark_config(size: int, batch: int, depth: int, mask_rois: int = 0,
                            precision: str = "float32", shape: str = "torchvision") -> maskrcnn.MaskRCNNConfig:
  if shape == "task":
    return maskrcnn.MaskRCNNConfig(input=pipeline.InputConfig(image_size=size, batch_size=batch),
                                   model=maskrcnn.MaskRCNNModelConfig(depth=depth, mask_rois_per_image=mask_rois),
                                   run=RunConfig(precision=precision))
  model = maskrcnn.MaskRCNNModelConfig(
      depth=depth, width=64, fpn_features=256, norm="batch", anchor_sizes=ANCHORS,
      rpn_pre_nms_topk_train=2000, rpn_post_nms_topk_train=1000, rpn_batch_per_image=256,
      rois_per_image=512, roi_fg_fraction=0.25, box_fc_features=1024, mask_features=256,
      mask_rois_per_image=mask_rois)
  return maskrcnn.MaskRCNNConfig(input=pipeline.InputConfig(image_size=size, batch_size=batch), model=model,
                                 optimizer=OptimizerConfig(name="sgd", learning_rate=0.01, momentum=0.9,
                                                           weight_decay=1e-4, lr_schedule="constant"),
                                 run=RunConfig(precision=precision))


def lesion_batch(size: int, batch: int, max_instances: int = 4) -> dict[str, np.ndarray]:
  """One elliptical lesion per image (20-60 % of the side), its box and mask, padded instances."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:size, :size]
  masks = np.zeros((batch, size, size, max_instances), np.float32)
  boxes = np.zeros((batch, max_instances, 4), np.float32)
  valid = np.zeros((batch, max_instances), bool)
  for i in range(batch):
    h, w = rng.uniform(0.2, 0.6, 2) * size
    cy, cx = rng.uniform(h / 2, size - h / 2), rng.uniform(w / 2, size - w / 2)
    m = ((yy + 0.5 - cy) / (h / 2)) ** 2 + ((xx + 0.5 - cx) / (w / 2)) ** 2 <= 1
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    masks[i, ..., 0], boxes[i, 0], valid[i, 0] = m, [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], True
  return {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32), "gt_boxes": boxes,
          "gt_classes": valid.astype(np.int32), "gt_masks": masks, "gt_valid": valid,
          "weight": np.ones(batch, np.float32)}


class JaxStep(common.JaxTrainStep):
  def __init__(self, size: int, batch: int, depth: int, mask_rois: int = 0, precision: str = "float32",
               shape: str = "torchvision"):
    task = maskrcnn.MaskRCNNTask(benchmark_config(size, batch, depth, mask_rois, precision, shape))
    state = task.init_state(jax.random.key(0))
    super().__init__(task.train_step(), state, task.host_inputs(lesion_batch(size, batch)))


def main() -> None:
  parser = common.comparison_parser(__doc__)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--depth", type=int, default=50, choices=(50, 101))
  parser.add_argument("--mask_rois", type=int, default=0,
                      help="JAX mask-head slots per image (0: the foreground maximum, 128 here)")
  parser.add_argument("--shape", default="torchvision", choices=("torchvision", "task"),
                      help="torchvision: the reference's network; task: MaskRCNNModelConfig's defaults (no "
                           "PyTorch reference).")
  common.add_round_args(parser)
  parser.set_defaults(rounds=2, repeats=2, torch_threads="0")
  args = parser.parse_args()
  start = time.perf_counter()
  no_torch = args.no_torch or args.shape != "torchvision"  # the reference is torchvision's network
  peak, torch_python = common.print_setup(args.torch_python, no_torch=no_torch, precision=args.precision)
  step = JaxStep(args.size, args.batch, args.depth, args.mask_rois, args.precision, args.shape)
  inner = common.window_steps(step, args.window_s)

  def measure_torch():
    return common.run_torch_reference(
        [torch_python, TORCH_SCRIPT, f"--size={args.size}", f"--batch={args.batch}", f"--depth={args.depth}",
         "--anchor_sizes=" + ",".join(str(int(a)) for a in ANCHORS), "--rpn_pre_nms_top_n_train=2000",
         "--rpn_post_nms_top_n_train=1000", "--box_batch_size_per_image=512", "--warmup=1",
         f"--repeats={args.repeats}", f"--inner={inner}", f"--threads={args.torch_threads}"])

  measured = common.alternate_rounds(args.rounds, args.repeats, inner, step.call,
                                     measure_torch if torch_python else None)
  print(f"\nMask R-CNN R{args.depth}-FPN ({args.shape} shape) batch {args.batch} {args.size}px; best of "
        f"{args.rounds} rounds x {args.repeats} windows x {inner} steps; JAX first call (compile or cache load) "
        f"{step.compile_s:.1f} s")
  common.report_comparison(f"maskrcnn_r{args.depth}", measured, batch=args.batch, flops=step.flops,
                           params=step.params, peak=peak, defaults_s=float("inf"), torch_python=torch_python,
                           torch_python_flag=args.torch_python, torch_script=TORCH_SCRIPT, memory=step.memory,
                           no_torch=no_torch)
  print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
