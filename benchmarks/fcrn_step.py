r"""Train-step throughput of the FCRN (the Lesion Indexing Network's network), against PyTorch.

  python benchmarks/fcrn_step.py [--torch_python=PATH | --no_torch] [--variants=fcrn_small:128:8,fcrn50:128:4]
                                 [--rounds=3] [--torch_threads=0,1] [--no_xla_defaults]
                                 [--precision=float32|bfloat16]

The JAX step is the library's own, as the training loop runs it: LesionIndexTask's train_step
(steps.make_supervised_train_step with lesion_index.pixel_classes and pixel_softmax_loss, plus its
Jaccard / pixel-accuracy metrics), on a create_train_state(fcrn(variant), optax.adam(1e-3))
state, jitted with the state donated. Batch: image (N, S, S, 3), mask (N, S, S, 1), label (N,).
The PyTorch reference, benchmarks/torch_fcrn_step.py, is the same network built in PyTorch (NCHW;
blocks and width passed from lesion_jax.models.fcrn.FCRN_VARIANTS), per-pixel softmax cross-entropy
against mask * (label + 1), Adam; both parameter counts are printed and must agree.

JAX and PyTorch are measured alternately in the same run (best of several rounds each), because
this machine is shared and absolute times drift; the printed ratio is JAX images/s over PyTorch
images/s (>1 = JAX faster). Also prints the fraction of this machine's measured float32 matmul
peak that the JAX step achieves (FLOPs from XLA's cost analysis; the PyTorch line uses the same
FLOP count). PyTorch is found in this interpreter, or in --torch_python (`pip install
torch==2.13.0` takes the local CPU wheel); without it the ratio line says "skipped".

PyTorch is timed at its default thread count (one per core) and at one thread (--torch_threads),
with OMP_WAIT_POLICY=PASSIVE unless set: on this shared 2-core machine, with training jobs
running, spinning OpenMP threads made the 2-thread step up to 20x slower, and one thread was often
the fastest. The ratio is against the fastest PyTorch configuration. The JAX step is also timed in
a subprocess with XLA's own CPU defaults (LESION_JAX_XLA_DEFAULTS=0, see lesion_jax/__init__.py;
--no_xla_defaults skips it), as benchmarks/train_step.py does for the U-Net; that process is started
once, before the alternating rounds (a start costs ~20 s a variant here), and keeps its best of
rounds x repeats windows.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from lesion_jax.models.fcrn import FCRN_VARIANTS, fcrn  # noqa: E402
from lesion_jax.pipelines.lesion_index import task as lesion_index  # noqa: E402

TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_fcrn_step.py")
NUM_CLASSES = 4  # background + the three diagnoses (melanoma, seborrheic keratosis, nevus)
GROUP_SIZE = 2  # FCRN's default "residual in residual" grouping, passed on to the reference


class JaxStep(common.JaxTrainStep):
  """The library's FCRN train step on one fixed batch; compiled once, timed round after round."""

  def __init__(self, variant: str, size: int, batch_size: int, count_flops: bool = True,
               precision: str = "float32"):
    rng = np.random.default_rng(0)
    batch = common.device_inputs(precision, {
        "image": rng.random((batch_size, size, size, 3), np.float32) * 2 - 1,
        "mask": (rng.random((batch_size, size, size, 1)) > 0.5).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES - 1, batch_size).astype(np.int32)})
    model = fcrn(variant, num_classes=NUM_CLASSES, dtype=common.compute_dtype(precision))
    state = common.adam_state(model, size=size)
    step = lesion_index.LesionIndexTask(lesion_index.LesionIndexConfig()).train_step()
    super().__init__(step, state, batch, count_flops)


def measure_torch(python: str, variant: str, size: int, batch: int, repeats: int, inner: int,
                  threads: str) -> tuple[dict[int, float], int | None, str]:
  """({thread count: seconds per step}, parameter count, error text) of the PyTorch reference,
  timed in a subprocess at each of the comma-separated `threads` (0: torch's default)."""
  blocks, width = FCRN_VARIANTS[variant]
  return common.run_torch_reference(
      [python, TORCH_SCRIPT, f"--blocks={','.join(map(str, blocks))}", f"--width={width}",
       f"--num_classes={NUM_CLASSES}", f"--group_size={GROUP_SIZE}", f"--batch={batch}",
       f"--size={size}", f"--repeats={repeats}", f"--inner={inner}", f"--threads={threads}"])


def main() -> None:
  common.variant_benchmark_main(__doc__, __file__, FCRN_VARIANTS, "fcrn_small:128:8,fcrn50:128:4", JaxStep,
                                lambda v, size, batch: (f"{v} (blocks {FCRN_VARIANTS[v][0]}, width "
                                                        f"{FCRN_VARIANTS[v][1]}) batch {batch} {size}px"),
                                measure_torch, TORCH_SCRIPT)


if __name__ == "__main__":
  main()
