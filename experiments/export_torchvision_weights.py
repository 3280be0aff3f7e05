r"""torchvision ResNet weights (.pth/.pt state_dict) -> .npz for lesion_jax.pretrained.

  python -m experiments.export_torchvision_weights --input=resnet50-11ad3fa6.pth --output=resnet50.npz
  python -m experiments.export_torchvision_weights --arch=resnet50 --weights=IMAGENET1K_V2 \
      --output=resnet50.npz   # torchvision's own file (from its cache, or downloaded)

Needs torch (and torchvision for --arch), absl-py and numpy; imports no jax, so it runs in an
environment that has torch but not lesion_jax's dependencies. The .npz holds every state_dict
entry under its state_dict key, floating tensors as float32 (num_batches_tracked as int64);
lesion_jax.pretrained.load_torchvision_resnet reads it. A checkpoint dict holding the state_dict
under 'state_dict' or 'model' is unwrapped, and a 'module.' prefix (DataParallel) dropped.
"""
import os
import sys
import tempfile

import numpy as np
import torch
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "A .pth/.pt file: a state_dict, or a checkpoint dict holding one.")
flags.DEFINE_string("arch", None, "Instead of --input: a torchvision.models constructor (resnet18, resnet50).")
flags.DEFINE_string("weights", "DEFAULT", "With --arch: the torchvision weights enum member (DEFAULT, "
                    "IMAGENET1K_V1, IMAGENET1K_V2), or 'random' for a randomly initialised network.")
flags.DEFINE_string("output", None, "The .npz to write.")
flags.mark_flags_as_required(["output"])


def unwrap_state_dict(obj, where: str) -> dict:
  """The state_dict in `obj` (itself, or under 'state_dict'/'model'), without a 'module.' prefix."""
  if isinstance(obj, dict):
    for key in ("state_dict", "model"):
      if isinstance(obj.get(key), dict):
        obj = obj[key]
        break
  if not isinstance(obj, dict) or not obj:
    raise ValueError(f"{where}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
  if all(isinstance(k, str) and k.startswith("module.") for k in obj):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return obj


def to_numpy(state_dict: dict, where: str) -> dict:
  out = {}
  for key, value in state_dict.items():
    if not isinstance(value, torch.Tensor):
      raise ValueError(f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor")
    value = value.detach().cpu()
    out[key] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def save_npz(arrays: dict, path: str) -> None:
  """Writes atomically: a temporary file in the same folder, renamed over `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def load_state_dict() -> tuple[dict, str]:
  if (FLAGS.input is None) == (FLAGS.arch is None):
    raise app.UsageError("give exactly one of --input and --arch")
  if FLAGS.input:
    try:
      obj = torch.load(FLAGS.input, map_location="cpu", weights_only=True)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{FLAGS.input}: torch.load failed ({type(e).__name__}: {e})") from e
    return unwrap_state_dict(obj, FLAGS.input), FLAGS.input
  import torchvision  # pylint: disable=g-import-not-at-top
  weights = None if FLAGS.weights == "random" else FLAGS.weights
  model = torchvision.models.get_model(FLAGS.arch, weights=weights)
  return model.state_dict(), f"torchvision.models.{FLAGS.arch}(weights={weights})"


def main(argv):
  del argv
  try:
    state_dict, source = load_state_dict()
    arrays = to_numpy(state_dict, source)
  except ValueError as e:
    sys.exit(f"error: {e}")
  save_npz(arrays, FLAGS.output)
  size = sum(a.nbytes for a in arrays.values())
  print(f"{source}: {len(arrays)} entries ({size / 2 ** 20:.1f} MiB) -> {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
