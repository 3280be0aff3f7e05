r"""Train-step throughput of the Lesion Feature Network (pipeline 5's patch classifier), against PyTorch.

  python benchmarks/lfn_step.py [--torch_python=PATH | --no_torch] [--variants=lfn:56:64,lfn_wide:56:64]
                                [--rounds=3] [--torch_threads=0,1] [--no_xla_defaults]
                                [--precision=float32|bfloat16]

The JAX step is the library's own, as the training loop runs it: FeatureNetworkTask's train_step
(steps.make_supervised_train_step with feature_network.weighted_cross_entropy, the paper's class
weights 1, 1, 5, 3, 8, plus accuracy) on a create_train_state(lfn(variant), optax.adam(1e-3)) state,
jitted with the state donated (Adam on both sides, as the other step benchmarks; the LFN's own
config trains with SGD, a negligible part of the step). Batch: image (N, 56, 56, 3) superpixel
patches, label (N,) in 0..4: the default is the pipeline's (patch.size 56, input.batch_size 64).
The PyTorch reference, benchmarks/torch_lfn_step.py, is the same network built in PyTorch (NCHW;
widths passed from lesion_jax.models.lfn.LFN_VARIANTS), the same weighted loss, Adam; both
parameter counts are printed and must agree.

Measured as benchmarks/fcrn_step.py measures (its docstring says why): JAX and PyTorch alternately in
the same run, best of several rounds each; the ratio is JAX images/s over PyTorch's fastest thread
count (>1 = JAX faster); the fraction of this machine's matmul peak; and, unless --no_xla_defaults,
the JAX step with XLA's own CPU defaults in one subprocess.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.models.lfn import LFN_VARIANTS, lfn  # noqa: E402
from lesion_jax.pipelines.lesion_index import feature_network  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_lfn_step.py")
NUM_CLASSES = 5  # background + the four ISIC 2017 dermoscopic features


class JaxStep(common.JaxTrainStep):
  """The library's LFN train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, variant: str, size: int, batch_size: int, count_flops: bool = True,
               precision: str = "float32"):
    rng = np.random.default_rng(0)
    batch = common.device_inputs(precision, {
        "image": rng.random((batch_size, size, size, 3), np.float32) * 2 - 1,
        "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)})
    model = lfn(variant, num_classes=NUM_CLASSES, dtype=common.compute_dtype(precision))
    state = common.adam_state(model, size=size)
    step = feature_network.FeatureNetworkTask(feature_network.FeatureNetworkConfig()).train_step()
    super().__init__(step, state, batch, count_flops)


def measure_torch(python: str, variant: str, size: int, batch: int, repeats: int, inner: int,
                  threads: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference."""
  return common.run_torch_reference(
      [python, TORCH_SCRIPT, f"--widths={','.join(map(str, LFN_VARIANTS[variant]))}",
       f"--num_classes={NUM_CLASSES}", f"--batch={batch}", f"--size={size}", f"--repeats={repeats}",
       f"--inner={inner}", f"--threads={threads}"])


def main() -> None:
  common.variant_benchmark_main(__doc__, __file__, LFN_VARIANTS, "lfn:56:64,lfn_wide:56:64", JaxStep,
                                lambda v, size, batch: f"{v} (widths {LFN_VARIANTS[v]}) batch {batch} {size}px",
                                measure_torch, TORCH_SCRIPT)


if __name__ == "__main__":
  main()
