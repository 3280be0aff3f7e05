r"""docs/synthetic_ham7.png: typical `synthetic_lesions` examples of each diagnosis of a class set,
a column per class (the first seeds whose cues come from the class's own appearance model, so the
10-15 % look-alikes of each class are left out).

  python -m experiments.class_grid --out=docs/synthetic_ham7.png [--class_set=ham10000] [--rows=4]
"""
from absl import app, flags

from lesion_jax.data import synthetic
from lesion_jax.eval import figures

_OUT = flags.DEFINE_string("out", "docs/synthetic_ham7.png", "Output PNG path.")
_CLASS_SET = flags.DEFINE_enum("class_set", "ham10000", list(synthetic.CLASS_SETS), "Class set to draw.")
_ROWS = flags.DEFINE_integer("rows", 4, "Examples per class.")
_SIZE = flags.DEFINE_integer("image_size", 128, "Rendered image side in pixels.")


def main(argv):
  del argv
  names = synthetic.class_names(_CLASS_SET.value)
  columns, cell_titles = {}, {}
  for k, name in enumerate(names):
    config = synthetic.RenderConfig(image_size=_SIZE.value, class_set=_CLASS_SET.value, label=k)
    examples, seed = [], 100 * k
    while len(examples) < _ROWS.value:
      example = synthetic.render_example(seed, config)
      if synthetic.own_appearance(_CLASS_SET.value, k) == example["cues"]["appearance"]:
        examples.append(example)
      seed += 1
    title = name.replace("_", " ")
    columns[title] = [e["image"] for e in examples]
    cell_titles[title] = [title if i == 0 else "" for i in range(_ROWS.value)]
  figures.save_column_grid(_OUT.value, columns, cell=2.0, cell_titles=cell_titles,
                           suptitle=f"synthetic_lesions, class_set={_CLASS_SET.value!r}, {_SIZE.value} px: "
                                    "typical examples of each class (look-alikes left out)")


if __name__ == "__main__":
  app.run(main)
