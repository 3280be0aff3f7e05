"""Preprocessing as small named ops over feature dicts, composed into chains (after big_vision's
`pp` registry, without its string language).

An op is a callable `op(example, seed) -> example`: `example` is a dict of tf.Tensors (one
example, as TFDS reads it: images still encoded), `seed` an int64 shape-[2] stateless seed that
deterministic ops ignore. Ops are made by registered factories:

  ops.get("resize_image")(key="image", size=64)      # by name, e.g. from a config
  ops.resize_image("image", 64)                      # the same factory, directly

and composed with `ops.chain([...])`; the pipelines accept the list itself. Registered ops:
decode_image, decode_mask, resize_image, resize_mask, center_crop, augment, normalize, label, copy,
keep, letterbox, lesion_instances and the one-to-many `patches` and `class_rotations`. `segmentation_ops` and `classification_ops` are the op lists of the
segmentation and classification tasks.

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
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Union

import numpy as np
import tensorflow as tf

from lesion_jax.data import augment as augment_lib
from lesion_jax import data as data_lib

data_lib.hide_accelerators_from_tensorflow()  # TensorFlow is for input only

Example = dict[str, tf.Tensor]
_plain = tf.autograph.experimental.do_not_convert


class MissingFeatureError(KeyError):
  """An op's input feature is not in the example."""

  def __str__(self) -> str:  # KeyError would print the message quoted
    return str(self.args[0]) if self.args else ""


class Op:
  """A preprocessing step: `fn(example, seed) -> example` plus what the chain needs to know.

  needs: the keys `fn` reads (checked before it runs, for a clear error).
  random: whether it uses its seed (it then takes a seed slot of the chain).
  expands: one-to-many: returns every feature with a leading axis of N examples.
  """

  def __init__(self, fn: Callable[[Example, tf.Tensor], Example], name: str | None = None,
               needs: Sequence[str] = (), random: bool = False, expands: bool = False):
    self.fn = fn
    self.name = name or getattr(fn, "__name__", type(fn).__name__)
    self.needs = tuple(needs)
    self.random = random or expands  # the outputs' seeds derive from a one-to-many op's slot
    self.expands = expands

  def __call__(self, example: Mapping[str, tf.Tensor], seed: tf.Tensor) -> Example:
    missing = [k for k in self.needs if k not in example]
    if missing:
      raise MissingFeatureError(f"op {self.name}: example has no {missing[0]!r} feature "
                                f"(features: {sorted(example)})")
    return self.fn(dict(example), seed)

  def __repr__(self) -> str:
    return self.name


OpLike = Union[Op, Callable[[Example, tf.Tensor], Example], Sequence["OpLike"]]
_REGISTRY: dict[str, Callable[..., Op]] = {}


def register(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
  """Registers an op factory under `name`; the ops it makes are named after their arguments."""

  def decorator(factory: Callable[..., Op]) -> Callable[..., Op]:
    if name in _REGISTRY:
      raise ValueError(f"op {name!r} is already registered")

    @functools.wraps(factory)
    def make(*args, **kwargs) -> Op:
      op = factory(*args, **kwargs)
      op = op if isinstance(op, Op) else Op(op, random=True)
      op.name = name + "(" + ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]) + ")"
      return op

    _REGISTRY[name] = make
    return make

  return decorator


def get(name: str) -> Callable[..., Op]:
  """The factory registered as `name`."""
  if name not in _REGISTRY:
    raise KeyError(f"no op {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def expand(fn: Callable[[Example, tf.Tensor], Example], name: str | None = None,
           needs: Sequence[str] = ()) -> Op:
  """A one-to-many op from `fn(example, seed) -> features with a leading axis of N`."""
  return Op(fn, name, needs, expands=True)


# ---------------------------------------------------------------------------------------------
# Chains and seeds.

def _flatten(preprocess: OpLike) -> list[Op]:
  if isinstance(preprocess, Chain):
    return list(preprocess.ops)
  if isinstance(preprocess, Op):
    return [preprocess]
  if isinstance(preprocess, (list, tuple)):
    return [op for p in preprocess for op in _flatten(p)]
  if callable(preprocess):  # a plain function: assume it is random, so it gets its own seed
    return [Op(preprocess, random=True)]
  raise TypeError(f"not an op, a chain or a list of them: {preprocess!r}")


def slot_seed(seed: tf.Tensor, k: int) -> tf.Tensor:
  """The seed of a chain's k-th random op."""
  seed = tf.cast(seed, tf.int64)
  return seed if k == 0 else tf.random.experimental.stateless_fold_in(seed, tf.constant(k, tf.int64))


def fold_in_range(seed: tf.Tensor, n) -> tf.Tensor:
  """(n, 2): row j is stateless_fold_in(seed, j) (int64), for all j at once."""
  seed = tf.cast(seed, tf.int64)
  first = tf.random.stateless_uniform([], seed=seed, dtype=tf.int64, minval=None, maxval=None)
  return tf.stack([tf.fill([n], first), tf.range(n, dtype=tf.int64)], axis=1)


def _run(ops: Sequence[Op], example: Example, seed: tf.Tensor) -> tuple[Example, int]:
  """Runs one-to-one ops; returns the example and the number of seed slots used."""
  k = 0
  for op in ops:
    if op.random:
      example = op(example, slot_seed(seed, k))
      k += 1
    else:
      example = op(example, seed)
  return example, k


class Chain(Op):
  """Ops applied in order (nested chains and lists are flattened)."""

  def __init__(self, preprocess: OpLike):
    self.ops = tuple(_flatten(preprocess))
    super().__init__(self._call, "chain[" + ", ".join(op.name for op in self.ops) + "]",
                     random=any(op.random for op in self.ops), expands=any(op.expands for op in self.ops))

  def _call(self, example: Example, seed: tf.Tensor) -> Example:
    if self.expands:
      raise ValueError(f"{self.name} has a one-to-many op: run it with ops.apply over a tf.data.Dataset")
    return _run(self.ops, example, seed)[0]

  def segments(self) -> list[tuple[tuple[Op, ...], Op | None]]:
    """(one-to-one ops, the one-to-many op after them or None); the last has None."""
    out, current = [], []
    for op in self.ops:
      if op.expands:
        out.append((tuple(current), op))
        current = []
      else:
        current.append(op)
    out.append((tuple(current), None))
    return out


def chain(preprocess: OpLike) -> Chain:
  return preprocess if isinstance(preprocess, Chain) else Chain(preprocess)


def apply(ds: tf.data.Dataset, preprocess: OpLike, stream_seed: int | None = None,
          num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
  """Runs `preprocess` over `ds`, keeping its order; yields the examples.

  `ds` yields (seed, example), or with `stream_seed` (position, example) and the seed is
  stack([stream_seed, position]), made in the same map as the first ops.
  """
  segments = chain(preprocess).segments()
  for i, (ops, expander) in enumerate(segments):
    last = i == len(segments) - 1
    make_seed = i == 0 and stream_seed is not None

    def fn(seed, example, ops=ops, expander=expander, last=last, make_seed=make_seed):
      if make_seed:
        seed = tf.stack([tf.constant(stream_seed, tf.int64), tf.cast(seed, tf.int64)])
      example, k = _run(ops, example, seed)
      if expander is None:
        return example if last else (seed, example)
      s = slot_seed(seed, k)
      many = expander(example, s)
      leaves = tf.nest.flatten(many)
      if not leaves or any(t.shape.rank == 0 for t in leaves):
        raise ValueError(f"one-to-many op {expander.name} must give every feature a leading axis")
      return fold_in_range(s, tf.shape(leaves[0])[0]), many

    ds = ds.map(_plain(fn), num_parallel_calls=num_parallel_calls, deterministic=True)
    if expander is not None:
      ds = ds.unbatch()
  return ds


# ---------------------------------------------------------------------------------------------
# Tensor helpers (the single definitions the pipelines and predict-time preprocessing share).

def normalize_image(image01):
  """[0, 1] → [-1, 1]; the single definition shared by training, evaluation and predict."""
  return image01 * 2.0 - 1.0


def resize_image_tensor(image_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, C) → float32 [0, 1] (size, size, C), area-preserving (antialiased) bilinear."""
  image = tf.image.convert_image_dtype(image_uint8, tf.float32)
  return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def resize_mask_tensor(mask_uint8: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 (H, W, C) with values {0, 255} (or {0, 1}) → float32 {0, 1} (size, size, C)."""
  mask = tf.cast(mask_uint8 > 0, tf.float32)
  mask = tf.image.resize(mask, [size, size], method="bilinear", antialias=True)
  return tf.cast(mask >= 0.5, tf.float32)


def _decode(value: tf.Tensor, key: str, channels: int) -> tf.Tensor:
  if value.dtype != tf.string:
    raise TypeError(f"feature {key!r} is {value.dtype.name}, not encoded image bytes (PNG/JPEG)")
  return tf.io.decode_image(value, channels=channels, expand_animations=False)


# ---------------------------------------------------------------------------------------------
# The registered ops.

@register("decode_image")
def decode_image(key: str = "image", channels: int = 3, out: str | None = None) -> Op:
  """Encoded bytes → uint8 (H, W, channels), into `out` (default: in place)."""
  return Op(lambda ex, _: {**ex, (out or key): _decode(ex[key], key, channels)}, needs=(key,))


@register("decode_mask")
def decode_mask(key: str = "mask", out: str | None = None) -> Op:
  """Encoded single-channel PNG → uint8 (H, W, 1), into `out` (default: in place)."""
  return Op(lambda ex, _: {**ex, (out or key): _decode(ex[key], key, 1)}, needs=(key,))


@register("resize_image")
def resize_image(key: str, size: int) -> Op:
  """uint8 → float32 [0, 1] (size, size, C), antialiased bilinear."""
  return Op(lambda ex, _: {**ex, key: resize_image_tensor(ex[key], size)}, needs=(key,))


@register("resize_mask")
def resize_mask(key: str, size: int) -> Op:
  """uint8 mask (nonzero = inside) → float32 {0, 1} (size, size, C)."""
  return Op(lambda ex, _: {**ex, key: resize_mask_tensor(ex[key], size)}, needs=(key,))


@register("augment")
def augment(config: augment_lib.AugmentConfig, image_key: str = "image", spatial_keys: Sequence[str] = ("mask",),
            box_keys: Sequence[str] = (), float_keys: Sequence[str] = (),
            center_key: str | None = augment_lib.AUTO) -> Op:
  """Random flips, rotation, crop and colour (`config`), moving the image, every spatial feature
  and the boxes together; see augment.augment_features. Always takes a seed slot (even when
  `config` disables everything), so the seeds of other ops do not depend on it."""
  spatial_keys, box_keys, float_keys = tuple(spatial_keys), tuple(box_keys), tuple(float_keys)

  def fn(example, seed):
    return augment_lib.augment_features(example, seed, config, image_key, spatial_keys, box_keys,
                                        float_keys, center_key)

  return Op(fn, needs=(image_key, *spatial_keys, *box_keys), random=True)


@register("normalize")
def normalize(key: str = "image") -> Op:
  """[0, 1] → [-1, 1] (normalize_image)."""
  return Op(lambda ex, _: {**ex, key: normalize_image(ex[key])}, needs=(key,))


@register("label")
def label(key: str, out: str = "label") -> Op:
  """A class label as int32, into `out`."""
  return Op(lambda ex, _: {**ex, out: tf.cast(ex[key], tf.int32)}, needs=(key,))


@register("copy")
def copy(src: str, dst: str) -> Op:
  """Copies feature `src` to `dst` (e.g. the encoded mask as 'mask_encoded', before decoding)."""
  return Op(lambda ex, _: {**ex, dst: ex[src]}, needs=(src,))


@register("keep")
def keep(keys: Iterable[str]) -> Op:
  """Only the features `keys` (in this order)."""
  keys = tuple(keys)
  return Op(lambda ex, _: {k: ex[k] for k in keys}, needs=keys)


INSTANCE_MODES = ("whole", "components")


def _component_masks(mask: np.ndarray, max_instances: int, min_area: int) -> np.ndarray:
  """(H, W, K) uint8: the mask's 8-connected components of at least `min_area` pixels, largest
  first, the first K of them (zero-padded)."""
  import cv2  # pylint: disable=g-import-not-at-top  (only this op needs OpenCV)
  binary = (mask[..., 0] >= 0.5).astype(np.uint8)
  _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
  areas = stats[1:, cv2.CC_STAT_AREA]
  order = [i + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area][:max_instances]
  out = np.zeros(binary.shape + (max_instances,), np.uint8)
  for k, c in enumerate(order):
    out[..., k] = labels == c
  return out


@register("lesion_instances")
def lesion_instances(mask_key: str = "mask", max_instances: int = 4, mode: str = "whole", min_area: int = 4,
                     class_key: str | None = None) -> Op:
  """Mask R-CNN ground truth from a lesion mask (float (H, W, 1) {0, 1}; after the augmentation,
  so the boxes are exact for the augmented image, not rotated boxes' bounding boxes):
  'gt_masks' (H, W, K) float32, 'gt_boxes' (K, 4) float32 pixel [y1, x1, y2, x2]
  (lesion_jax.detection.boxes), 'gt_valid' (K,) bool and 'gt_classes' (K,) int32 (1, or 1 + the
  example's `class_key` label for diagnosis-level boxes; 0 for padding), padded to K = max_instances.

  mode 'whole': the mask is one instance when it has at least `min_area` pixels (ISIC masks
  annotate one lesion per image, its parts included); 'components': each 8-connected component
  of at least `min_area` pixels is an instance, largest first.
  """
  if mode not in INSTANCE_MODES:
    raise ValueError(f"unknown instance mode {mode!r}; choose one of {INSTANCE_MODES}")
  if max_instances < 1:
    raise ValueError(f"max_instances={max_instances}: must be at least 1")

  def fn(ex, _):
    mask = tf.cast(ex[mask_key] >= 0.5, tf.float32)
    h, w = tf.shape(mask)[0], tf.shape(mask)[1]
    if mode == "whole":
      whole = mask[..., :1]
      present = tf.reduce_sum(whole) >= min_area
      masks = tf.concat([whole * tf.cast(present, tf.float32),
                         tf.zeros(tf.stack([h, w, max_instances - 1]), tf.float32)], axis=-1)
    else:
      masks = tf.numpy_function(lambda m: _component_masks(m, max_instances, min_area), [mask], tf.uint8,
                                stateful=False)
      masks = tf.cast(tf.ensure_shape(masks, mask.shape[:2].concatenate([max_instances])), tf.float32)
    hit_rows, hit_cols = tf.reduce_any(masks > 0, axis=1), tf.reduce_any(masks > 0, axis=0)  # (H, K), (W, K)

    def extent(hit, n):  # first and one-past-last index along an axis, per instance
      idx = tf.cast(tf.range(n), tf.float32)[:, None]
      first = tf.reduce_min(tf.where(hit, idx, tf.cast(n, tf.float32)), axis=0)
      last = tf.reduce_max(tf.where(hit, idx, -1.0), axis=0) + 1
      return first, last

    y1, y2 = extent(hit_rows, h)
    x1, x2 = extent(hit_cols, w)
    valid = tf.reduce_any(hit_rows, axis=0)
    boxes = tf.where(valid[:, None], tf.stack([y1, x1, y2, x2], axis=-1), 0.0)
    classes = tf.ones([max_instances], tf.int32)
    if class_key is not None:
      classes += tf.cast(ex[class_key], tf.int32)
    return {**ex, "gt_masks": masks, "gt_boxes": boxes, "gt_valid": valid,
            "gt_classes": tf.where(valid, classes, 0)}

  return Op(fn, needs=(mask_key,) + ((class_key,) if class_key else ()))


@register("random_holes")
def random_holes(size: int, config=None, out: str = "holes") -> Op:
  """float32 {0, 1} (size, size, 1) random hole mask (1 = hole) into `out`: strokes, hair-like
  curves and blobs (data/holes.py), drawn from the op's seed."""
  from lesion_jax.data import holes  # pylint: disable=g-import-not-at-top  (OpenCV)
  config = config or holes.HoleConfig()

  def draw(seed):
    return (holes.random_hole_mask(seed.astype(np.uint64), size, config) > 0).astype(np.float32)[..., None]

  def fn(example, seed):
    mask = tf.numpy_function(draw, [tf.cast(seed, tf.int64)], tf.float32, stateful=False)
    return {**example, out: tf.ensure_shape(mask, [size, size, 1])}

  return Op(fn, random=True)


@register("patches")
def patches(centers_key: str, size: int, keys: Sequence[str] = ("image",), index_key: str = "patch_index",
            jitter: float = 0.0) -> Op:
  """One example → one per centre (one-to-many): `size`×`size` crops of each feature of `keys`.

  `centers_key` holds (N, 2) normalised (row, col) centres (0 and 1 the image edges), e.g.
  superpixel centroids, or (N, 4) boxes [ymin, xmin, ymax, xmax], cropped around their centres.
  Crops are pixel-exact (no resampling) and shifted inwards at the borders so they stay inside
  the image; `keys` must share one (H, W) >= size. `jitter` (pixels) moves each centre by a
  uniform random offset drawn from the op's seed. In the outputs `centers_key` holds the patch's
  own row, `index_key` its index j (int32); every other feature is repeated N times.
  """
  keys = tuple(keys)

  def fn(example, seed):
    centers = tf.cast(example[centers_key], tf.float32)
    if centers.shape.rank != 2 or centers.shape[-1] not in (2, 4):
      raise ValueError(f"patches: {centers_key!r} must be (N, 2) centres or (N, 4) boxes, got {centers.shape}")
    if centers.shape[-1] == 4:
      centers = (centers[:, :2] + centers[:, 2:]) / 2.0
    n = tf.shape(centers)[0]
    shape = tf.shape(example[keys[0]])
    hw = tf.cast(shape[:2], tf.float32)
    pixel = centers * hw  # in pixel-edge coordinates
    if jitter > 0:
      pixel += tf.random.stateless_uniform([n, 2], seed, -jitter, jitter)
    limit = tf.maximum(shape[:2] - size, 0)
    corner = tf.clip_by_value(tf.cast(tf.round(pixel - size / 2.0), tf.int32), 0, limit)
    checks = [tf.debugging.assert_greater_equal(shape[:2], size,
                                                message=f"patches: {keys[0]!r} is smaller than {size}")]
    with tf.control_dependencies(checks):
      rows = corner[:, :1] + tf.range(size)[None]  # (N, size)
      cols = corner[:, 1:] + tf.range(size)[None]
    out = {}
    for k, v in example.items():
      if k in keys:
        out[k] = tf.gather(tf.gather(v, rows, axis=0), cols, axis=2, batch_dims=1)  # (N, size, size, C)
      elif k == centers_key:
        out[k] = example[centers_key]
      else:
        out[k] = tf.broadcast_to(v[None], tf.concat([[n], tf.shape(v)], 0))
    out[index_key] = tf.range(n, dtype=tf.int32)
    return out

  return expand(fn, needs=(centers_key, *keys))


@register("center_crop")
def center_crop(keys: Sequence[str] = ("image",), aspect: float = 1.0) -> Op:
  """The central window of aspect `aspect` (width / height) of each feature of `keys` (which
  share one (H, W)), as large as fits: with a resize after it, the lesion keeps its shape
  instead of being stretched (the Lesion Indexing Network's pre-processing)."""
  keys = tuple(keys)

  def fn(example, _):
    shape = tf.shape(example[keys[0]])
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    ch = tf.cast(tf.round(tf.minimum(h, w / aspect)), tf.int32)
    cw = tf.cast(tf.round(tf.minimum(w, h * aspect)), tf.int32)
    y0, x0 = (shape[0] - ch) // 2, (shape[1] - cw) // 2
    return {**example, **{k: example[k][y0:y0 + ch, x0:x0 + cw] for k in keys}}

  return Op(fn, needs=keys)


@register("letterbox")
def letterbox(key: str, size: int, out: str | None = None, mask: bool = False) -> Op:
  """uint8 (H, W, C) → float32 [0, 1] (size, size, C): resized proportionally so the longer side
  is `size` (antialiased bilinear), centred on black; into `out` (default: in place). With
  `mask`, a mask (nonzero = inside) → float32 {0, 1}, resized as `resize_mask` does.
  `letterbox_window` gives the window the image occupies, to map predictions back."""

  def fn(example, _):
    value = example[key]
    image = tf.cast(value > 0, tf.float32) if mask else tf.image.convert_image_dtype(value, tf.float32)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    (top, left, nh, nw) = letterbox_window_tensor(h, w, size)
    image = tf.image.resize(image, [nh, nw], method="bilinear", antialias=True)
    if mask:
      image = tf.cast(image >= 0.5, tf.float32)
    image = tf.pad(image, [[top, size - nh - top], [left, size - nw - left], [0, 0]])
    return {**example, (out or key): tf.ensure_shape(image, [size, size, image.shape[-1]])}

  return Op(fn, needs=(key,))


@register("shades_of_gray")
def shades_of_gray(key: str = "image", p: float = 6.0) -> Op:
  """Colour constancy by Shades of Gray (Finlayson and Trezzi 2004; the ISIC winners' p = 6) on
  a float [0, 1] image: channel c's illuminant is its p-norm mean e_c = mean(I_c^p)^(1/p), and
  each channel is scaled by |e| / (sqrt(3) e_c), so the illuminant becomes grey of the same
  length; clipped to [0, 1]. p = 1 is Grey World, large p tends to max-RGB. The gains do not
  change when e is scaled, so black letterbox padding leaves them as they are."""
  if p < 1:
    raise ValueError(f"Shades of Gray needs p >= 1, got {p}")

  def fn(example, _):
    image = example[key]
    illuminant = tf.reduce_mean(tf.pow(image, p), axis=(0, 1)) ** (1.0 / p)
    gains = tf.norm(illuminant) / np.sqrt(3.0) / tf.maximum(illuminant, 1e-6)
    return {**example, key: tf.clip_by_value(image * gains, 0.0, 1.0)}

  return Op(fn, needs=(key,))


GEOMETRIES = ("stretch", "letterbox")
COLOR_CONSTANCY = ("none", "shades_of_gray")


def image_ops(size: int, geometry: str = "stretch", color_constancy: str = "none", p: float = 6.0,
              key: str = "image") -> list[Op]:
  """Decoded uint8 image → float32 [0, 1] (size, size, 3), the way every task (and predict) sizes
  and colour-corrects its input: `geometry` stretch (resize to a square) or letterbox (keep the
  aspect ratio, pad with black); `color_constancy` none or shades_of_gray (exponent `p`)."""
  if geometry not in GEOMETRIES:
    raise ValueError(f"geometry {geometry!r}: choose one of {GEOMETRIES}")
  if color_constancy not in COLOR_CONSTANCY:
    raise ValueError(f"color_constancy {color_constancy!r}: choose one of {COLOR_CONSTANCY}")
  out = [resize_image(key, size) if geometry == "stretch" else letterbox(key, size)]
  if color_constancy == "shades_of_gray":
    out.append(shades_of_gray(key, p))
  return out


def mask_resize_op(size: int, geometry: str = "stretch", key: str = "mask") -> Op:
  """The mask's twin of `image_ops`' geometry (so image and mask stay aligned)."""
  return resize_mask(key, size) if geometry == "stretch" else letterbox(key, size, mask=True)


def letterbox_window_tensor(h, w, size: int):
  longer = tf.cast(tf.maximum(h, w), tf.float32)
  nh = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float32) * size / longer), tf.int32))
  nw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float32) * size / longer), tf.int32))
  return (size - nh) // 2, (size - nw) // 2, nh, nw


def letterbox_window(h: int, w: int, size: int) -> tuple[int, int, int, int]:
  """(top, left, height, width) of an (h, w) image inside its `letterbox` of side `size`
  (numpy twin of the op's geometry: the same rounding)."""
  longer = max(h, w)
  nh = max(1, int(round(h * size / longer)))
  nw = max(1, int(round(w * size / longer)))
  return (size - nh) // 2, (size - nw) // 2, nh, nw


FLIP_MODES = ("none", "random", "both")


@register("class_rotations")
def class_rotations(label_key: str, degrees_per_class: Sequence[float], image_key: str = "image",
                    spatial_keys: Sequence[str] = ("mask",), flip: str = "none",
                    index_key: str = "rotation_index") -> Op:
  """One example → its rotations by every multiple of its class's step (one-to-many): the Lesion
  Indexing Network's class-balancing augmentation. An example of class c gives
  round(360 / degrees_per_class[c]) copies, rotated by 0, step, 2 step, ... about the image
  centre, with `spatial_keys` (masks) moved alongside; a step of 0 or >= 360 gives the example
  once. `flip`: "none" is the paper's DR; "random" its DM (each copy also flipped at random from
  the op's seed); "both" DR + DM (each rotation twice: as is, and flipped at random). Copies are
  numbered in `index_key`."""
  if flip not in FLIP_MODES:
    raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
  spatial_keys = tuple(spatial_keys)
  steps = [float(d) for d in degrees_per_class]
  counts = tf.constant([1 if d <= 0 or d >= 360 else max(1, int(round(360.0 / d))) for d in steps], tf.int32)
  step_table = tf.constant([d if 0 < d < 360 else 0.0 for d in steps], tf.float32)

  def fn(example, seed):
    label = tf.cast(example[label_key], tf.int32)
    checks = [tf.debugging.assert_less(label, len(steps), message=f"class_rotations: {label_key} beyond "
                                       f"the {len(steps)} classes given")]
    with tf.control_dependencies(checks):
      rotations = tf.gather(counts, label)
      angles = tf.range(rotations, dtype=tf.float32) * tf.gather(step_table, label) * (math.pi / 180.0)
    if flip == "both":  # every rotation as is, then every rotation flipped
      angles = tf.concat([angles, angles], 0)
    n = tf.shape(angles)[0]
    image = example[image_key]
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    center = ((tf.cast(h, tf.float32) - 1.0) / 2.0, (tf.cast(w, tf.float32) - 1.0) / 2.0)
    keys = (image_key, *spatial_keys)

    def one(args):
      angle, j = args
      rotated = {k: augment_lib.rotate(tf.cast(example[k], tf.float32), None, angle, center)[0] for k in keys}
      if flip != "none":
        s = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tf.cast(j, tf.int64))
        flipped = augment_lib.augment_features(rotated, s, augment_lib.AugmentConfig(
            flip=True, rotate=False, crop=False, color=0.0), image_key, spatial_keys)
        use = tf.constant(True) if flip == "random" else j >= rotations  # "both": the second half
        rotated = {k: tf.where(use, flipped[k], rotated[k]) for k in keys}
      # Masks stay binary after bilinear rotation.
      return {k: rotated[k] if k == image_key else tf.cast(rotated[k] >= 0.5, tf.float32) for k in keys}

    signature = {k: tf.TensorSpec(example[k].shape, tf.float32) for k in keys}
    many = tf.map_fn(one, (angles, tf.range(n)), fn_output_signature=signature)
    out = {k: tf.broadcast_to(v[None], tf.concat([[n], tf.shape(v)], 0)) for k, v in example.items()
           if k not in keys}
    out.update(many)
    out[index_key] = tf.range(n, dtype=tf.int32)
    return out

  return expand(fn, needs=(label_key, image_key, *spatial_keys))


# ---------------------------------------------------------------------------------------------
# Superpixel patches: the Lesion Feature Network's input (Li and Shen 2018, ISIC 2017 task 2).

def decode_index_rgb_tensor(encoded: tf.Tensor) -> tf.Tensor:
  """PNG bytes of a label map in ISIC 2017 Part 2's RGB index encoding → int32 (H, W) with
  index = R + 256 G + 65536 B (the tf twin of `artifacts.superpixels.decode_index_rgb`)."""
  rgb = tf.cast(tf.io.decode_png(encoded, channels=3), tf.int32)
  return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@register("decode_superpixels")
def decode_superpixels(key: str = "superpixels", out: str | None = None) -> Op:
  """A superpixel label map → int32 (H, W), into `out` (default: in place). Encoded bytes (the
  superpixel artifacts' PNG, joined by `pipeline.ArtifactJoin`, or an official ISIC 2017
  `*_superpixels.png`) are decoded from the RGB index encoding index = R + 256 G + 65536 B; an
  integer map (e.g. `isic2017_features`' decoded `superpixels`) is only cast (a trailing channel
  of 1 dropped)."""

  def fn(example, _):
    value = example[key]
    if value.dtype == tf.string:
      labels = decode_index_rgb_tensor(value)
    elif value.dtype.is_integer:
      labels = tf.cast(value, tf.int32)
      if labels.shape.rank == 3:
        labels = labels[..., 0]
    else:
      raise TypeError(f"decode_superpixels: {key!r} is {value.dtype.name}, neither encoded bytes nor "
                      "an integer label map")
    return {**example, (out or key): labels}

  return Op(fn, needs=(key,))


@register("superpixel_patches")
def superpixel_patches(mask_channels: Sequence[int], size: int = 56, min_fraction: float = 0.5,
                       priority: Sequence[int] | None = None, keep_probability: Sequence[float] = (),
                       rotate_classes: Sequence[int] = (), image_key: str = "image",
                       superpixels_key: str = "superpixels", masks_key: str = "feature_masks",
                       label_key: str = "label", index_key: str = "patch_index",
                       rotation_key: str = "rotation", repeat_keys: Sequence[str] = ("id",)) -> Op:
  """One image → one example per superpixel (one-to-many): the Lesion Feature Network's patches.

  Inputs: `image_key` uint8 (H, W, 3) (or float in [0, 1]), `superpixels_key` an integer (H, W)
  label map (`decode_superpixels`; labels need not be consecutive: unused ones give no patch),
  `masks_key` (H, W, C) {0, 1} per-pixel feature masks (e.g. `feature_masks`).

  Label space: 0 = background, class c >= 1 = mask channel `mask_channels[c - 1]`. A superpixel
  shows class c when at least `min_fraction` (in (0, 1]) of its pixels are in that channel's
  mask; when several classes qualify, the first of `priority` (class labels 1..K, highest
  first, e.g. rarest first; default 1, 2, ..., K) wins; when none does, it is background.

  Patch content: the superpixel's bounding box sampled to `size` x `size` with
  tf.image.crop_and_resize (box corners on the box's outer pixel centres, bilinear), the image
  first mapped to the model's input range [-1, 1] (`normalize_image`); every sample whose
  nearest source pixel lies outside the superpixel is set to 0 (mid-grey in that range), so a
  patch shows its superpixel alone.

  Balancing (the paper's, for training; leave both empty for evaluation):
  * `keep_probability` (K + 1 values, background first): a patch of class c is kept when a
    uniform draw from the op's seed (one per superpixel) is below keep_probability[c], so
    background (and any class capped below 1) is randomly subsampled, deterministically per seed.
  * `rotate_classes`: kept patches of these (small) classes are emitted 4 times, rotated by
    0, 90, 180 and 270 degrees (tf.image.rot90; `rotation_key` holds k = 0..3, else 0).

  Outputs, per patch: `image_key` float32 (size, size, 3), `label_key` int32, `index_key` int32
  (the superpixel's label in the map), `rotation_key` int32, and the features `repeat_keys`
  (e.g. the image id) repeated; the other input features are dropped. Patches come in
  superpixel order, the rotations of one superpixel together.
  """
  channels = [int(c) for c in mask_channels]
  k = len(channels)
  if k < 1:
    raise ValueError("superpixel_patches: give at least one mask channel")
  if not 0.0 < min_fraction <= 1.0:
    raise ValueError(f"superpixel_patches: min_fraction must be in (0, 1], got {min_fraction}")
  order = [int(c) for c in priority] if priority is not None else list(range(1, k + 1))
  if sorted(order) != list(range(1, k + 1)):
    raise ValueError(f"superpixel_patches: priority {order} must list each class 1..{k} once")
  keep_table = [float(p) for p in keep_probability]
  if keep_table and len(keep_table) != k + 1:
    raise ValueError(f"superpixel_patches: keep_probability needs {k + 1} values (background first), "
                     f"got {len(keep_table)}")
  rotated = sorted({int(c) for c in rotate_classes})
  if any(not 0 <= c <= k for c in rotated):
    raise ValueError(f"superpixel_patches: rotate_classes {rotated} must be classes in 0..{k}")
  copies_table = [4 if c in rotated else 1 for c in range(k + 1)]
  repeat_keys = tuple(repeat_keys)

  def fn(example, seed):
    image = tf.image.convert_image_dtype(example[image_key], tf.float32)
    labels = tf.cast(example[superpixels_key], tf.int32)
    if labels.shape.rank == 3:
      labels = labels[..., 0]
    masks = tf.gather(tf.cast(example[masks_key], tf.float32), channels, axis=-1) > 0.5
    h, w = tf.shape(labels)[0], tf.shape(labels)[1]
    checks = [tf.debugging.assert_equal(tf.shape(image)[:2], tf.shape(labels), message=(
                  f"superpixel_patches: {superpixels_key!r} and {image_key!r} differ in size")),
              tf.debugging.assert_equal(tf.shape(masks)[:2], tf.shape(labels), message=(
                  f"superpixel_patches: {masks_key!r} and {superpixels_key!r} differ in size")),
              tf.debugging.assert_non_negative(labels, message="superpixel_patches: negative label")]
    with tf.control_dependencies(checks):
      flat = tf.reshape(labels, [-1])
    n = tf.reduce_max(flat) + 1
    area = tf.math.unsorted_segment_sum(tf.ones_like(flat, tf.float32), flat, n)  # (n,)
    in_mask = tf.math.unsorted_segment_sum(tf.reshape(tf.cast(masks, tf.float32), [-1, k]), flat, n)
    rows = tf.repeat(tf.range(h), w)
    cols = tf.tile(tf.range(w), [h])
    box = tf.stack([tf.math.unsorted_segment_min(rows, flat, n), tf.math.unsorted_segment_min(cols, flat, n),
                    tf.math.unsorted_segment_max(rows, flat, n), tf.math.unsorted_segment_max(cols, flat, n)], 1)
    # Class by the min-fraction rule, ties to the first of `priority`.
    hit = tf.gather(in_mask >= min_fraction * area[:, None], [c - 1 for c in order], axis=1)  # (n, K)
    first = tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32)
    label = tf.where(tf.reduce_any(hit, axis=1), tf.gather(tf.constant(order, tf.int32), first), 0)
    count = tf.cast(area > 0, tf.int32)  # label values no pixel has give no patch
    if keep_table:
      draw = tf.random.stateless_uniform([n], seed)
      count *= tf.cast(draw < tf.gather(tf.constant(keep_table, tf.float32), label), tf.int32)
    count *= tf.gather(tf.constant(copies_table, tf.int32), label)
    index = tf.repeat(tf.range(n), count)  # the superpixel of each output patch
    rotation = tf.range(tf.shape(index)[0]) - tf.gather(tf.cumsum(count, exclusive=True), index)
    # Box corners on pixel centres: crop_and_resize maps a normalised y to y * (H - 1).
    scale = tf.cast(tf.stack([h, w, h, w]) - 1, tf.float32)
    boxes = tf.cast(tf.gather(box, index), tf.float32) / tf.maximum(scale, 1.0)
    where = tf.zeros_like(index)
    patch = tf.image.crop_and_resize(normalize_image(image)[None], boxes, where, [size, size], "bilinear")
    owner = tf.image.crop_and_resize(tf.cast(labels, tf.float32)[None, :, :, None], boxes, where, [size, size],
                                     "nearest")
    inside = tf.cast(tf.equal(tf.cast(tf.round(owner), tf.int32), index[:, None, None, None]), tf.float32)
    patch = patch * inside
    if rotated:
      turns = tf.stack([tf.image.rot90(patch, t) for t in range(4)])  # (4, M, size, size, 3)
      patch = tf.gather_nd(turns, tf.stack([rotation, tf.range(tf.shape(index)[0])], 1))
    m = tf.shape(index)[0]
    out = {key: tf.broadcast_to(example[key][None], tf.concat([[m], tf.shape(example[key])], 0))
           for key in repeat_keys}
    out.update({image_key: tf.ensure_shape(patch, [None, size, size, 3]), label_key: tf.gather(label, index),
                index_key: index, rotation_key: rotation})
    return out

  return expand(fn, needs=(image_key, superpixels_key, masks_key, *repeat_keys))


# ---------------------------------------------------------------------------------------------
# The tasks' op lists.

def segmentation_ops(image_size: int, augment_config: augment_lib.AugmentConfig | None, mask_key: str = "mask",
                     mask_is_encoded: bool = True, keep_encoded_mask: bool = False,
                     instances: Op | None = None, geometry: str = "stretch",
                     color_constancy: str = "none", p: float = 6.0) -> list[Op]:
  """'id', 'image' (float32 [-1, 1], (size, size, 3)) and 'mask' (float32 {0, 1}, (size, size, 1),
  read from `mask_key`), augmented unless `augment_config` is None (evaluation); sized and
  colour-corrected by `image_ops`. With `keep_encoded_mask`, also 'mask_encoded': the stored PNG
  at the image's own resolution, for scoring as the challenges do. `instances` (a
  lesion_instances op) adds the Mask R-CNN ground truth after the augmentation."""
  if keep_encoded_mask and not mask_is_encoded:
    raise ValueError("keep_encoded_mask needs an encoded mask feature")
  out = [copy(mask_key, "mask_encoded")] if keep_encoded_mask else []
  out += [decode_image("image"), *image_ops(image_size, geometry, color_constancy, p)]
  if mask_is_encoded:
    out.append(decode_mask(mask_key, out="mask"))
  elif mask_key != "mask":
    out.append(copy(mask_key, "mask"))
  out.append(mask_resize_op(image_size, geometry))
  if augment_config is not None:
    out.append(augment(augment_config, spatial_keys=("mask",)))
  instance_keys = ()
  if instances is not None:  # Mask R-CNN ground truth from the (augmented) mask
    out.append(instances)
    instance_keys = ("gt_boxes", "gt_classes", "gt_masks", "gt_valid")
  out += [normalize("image"), keep(("id", "image", "mask") + (("mask_encoded",) if keep_encoded_mask else ())
                                   + instance_keys)]
  return out


def classification_ops(image_size: int, augment_config: augment_lib.AugmentConfig | None,
                       label_key: str = "label", geometry: str = "stretch", color_constancy: str = "none",
                       p: float = 6.0) -> list[Op]:
  """'id', 'image' (float32 [-1, 1], (size, size, 3), by `image_ops`) and 'label' (int32, from
  `label_key`), augmented unless `augment_config` is None (evaluation)."""
  out = [decode_image("image"), *image_ops(image_size, geometry, color_constancy, p), label(label_key, "label")]
  if augment_config is not None:
    out.append(augment(augment_config, spatial_keys=()))
  return out + [normalize("image"), keep(("id", "image", "label"))]
