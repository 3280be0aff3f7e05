"""Preprocessing as small named ops over feature dicts, composed into chains (after big_vision's
`pp` registry, without its string language).

An op is a callable `op(example, seed) -> example`: `example` is a dict of tf.Tensors (one
example, as TFDS reads it: images still encoded), `seed` an int64 shape-[2] stateless seed that
deterministic ops ignore. Ops are made by registered factories:

  ops.get("resize_image")(key="image", size=64)      # by name, e.g. from a config
  ops.resize_image("image", 64)                      # the same factory, directly

and composed with `ops.chain([...])`; the pipelines accept the list itself. Registered ops
(`ops.names()`): decode_image, decode_mask, resize_image, resize_mask, center_crop, letterbox,
shades_of_gray, augment, normalize, label, copy, keep and the one-to-many `patches`.
`segmentation_ops` and `classification_ops` are the op lists of the segmentation and
classification tasks.

Seeds. A chain gives its first random op its own seed unchanged and the k-th (k >= 1) random op
`fold_in(seed, k)`; deterministic ops do not count. So in a stream whose only random op is
`augment`, each example is augmented with exactly the stream seed (seed, position), and adding
random ops after it changes nothing for the ones before.

One-to-many ops (`expand`, e.g. `patches`) return every feature with a new leading axis of N
examples. `apply` runs a chain over a tf.data.Dataset and unbatches after each such op, so later
ops and batching see N separate examples; the one-to-many op takes a random op's seed slot (s)
and its j-th output continues the chain with seed fold_in(s, j), a function of (seed, stream
position, j). Calling a chain directly works only without one-to-many ops.

A missing input feature raises MissingFeatureError naming the op, the key and the keys present
(at trace time, when the pipeline is built); the pipelines add the dataset's name.

Layout (every name is re-exported here, so `from lesion_jax.data import ops; ops.X` is the way
to use them): `core` (Op, registry, chains, seeds, apply, MissingFeatureError), `features`
(label, copy, keep), `image` (decoding, resizing, geometry, colour constancy, augment,
normalize, the tasks' op lists) and `one_to_many` (patches). Importing the package registers
every op. An op only one pipeline uses lives in that pipeline's package, built on `core` and
made with `named` (named like a registered op, but not in the registry): random_holes in
lesion_jax/pipelines/purification/ops.py, class_rotations, decode_superpixels and
superpixel_patches in lesion_jax/pipelines/lesion_index/ops.py, lesion_instances in
lesion_jax/pipelines/maskrcnn/ops.py.
"""
# pylint: disable=g-importing-member,unused-import
from lesion_jax.data.ops.core import (Chain, Example, MissingFeatureError, Op, OpLike, apply, chain, expand,
                                      fold_in_range, get, named, names, register, slot_seed)
from lesion_jax.data.ops.features import copy, keep, label
from lesion_jax.data.ops.image import (COLOR_CONSTANCY, GEOMETRIES, augment, center_crop, classification_ops,
                                       decode_image, decode_mask, image_ops, letterbox, letterbox_window,
                                       letterbox_window_tensor, mask_resize_op, normalize, normalize_image,
                                       resize_image, resize_image_tensor, resize_mask, resize_mask_tensor,
                                       segmentation_ops, shades_of_gray)
from lesion_jax.data.ops.one_to_many import patches
