"""Renders a grid of `synthetic_lesions` examples for the README.

Each example gets two panels: the image, and the image with the lesion mask contour (green) and
the occlusion mask tinted (hair cyan, ruler/bubbles/sticker magenta), titled with the diagnosis.

  python -m experiments.sample_grid --out=docs/sample_grid.png [--image_size=128] [--num=16]
"""
from __future__ import annotations

import io
import math

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from lesion_jax import io as lj_io  # pylint: disable=wrong-import-position
from lesion_jax.data import synthetic  # pylint: disable=wrong-import-position

_OUT = flags.DEFINE_string("out", "docs/sample_grid.png", "Output PNG path.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Rendered image side in pixels.")
_NUM = flags.DEFINE_integer("num", 16, "Number of examples.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first example; the others follow.")

_HAIR_TINT = np.array((0.0, 0.9, 1.0))
_OTHER_TINT = np.array((1.0, 0.0, 1.0))


def _overlay(example: dict) -> np.ndarray:
  """Image (float RGB in [0, 1]) with occlusions tinted; the contour is drawn by matplotlib."""
  image = example["image"].astype(np.float64) / 255.0
  hair = example["hair_mask"] > 0
  other = (example["occlusion_mask"] > 0) & ~hair
  for mask, tint in ((hair, _HAIR_TINT), (other, _OTHER_TINT)):
    image[mask] = 0.45 * image[mask] + 0.55 * tint
  return image


def draw_grid(examples: list[dict], columns: int = 4) -> plt.Figure:
  """Figure with (image, overlay) panel pairs, `columns` examples per row."""
  rows = math.ceil(len(examples) / columns)
  fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 1.6, rows * 1.75),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for i, ex in enumerate(examples):
    ax_img, ax_ov = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
    ax_img.imshow(ex["image"], interpolation="nearest")
    ax_ov.imshow(_overlay(ex), interpolation="nearest")
    if ex["mask"].any():
      ax_ov.contour(ex["mask"] > 0, levels=[0.5], colors="lime", linewidths=0.8)
    name = synthetic.DIAGNOSES[ex["label"]].replace("_", " ")
    name = "seb. keratosis" if name == "seborrheic keratosis" else name
    ax_img.set_title(name, fontsize=8, color="firebrick" if ex["malignant"] else "black",
                     loc="left")
  fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.96, wspace=0.03,
                      hspace=0.18)
  return fig


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = synthetic.RenderConfig(image_size=_IMAGE_SIZE.value)
  examples = [synthetic.render_example(_SEED.value + i, config) for i in range(_NUM.value)]
  fig = draw_grid(examples)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110)
  plt.close(fig)
  lj_io.atomic_write_bytes(_OUT.value, buf.getvalue())
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
