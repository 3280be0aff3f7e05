"""Preprocessing ops: each op, missing-key errors, chain seeds, augmentation that moves many masks
and boxes together, the one-to-many `patches` op through tf.data, and pytree batch padding."""
import math

import numpy as np
import pytest
import tensorflow as tf

from lesion_jax.data import augment, batching, ops, pipeline

SEED = tf.constant([3, 5], tf.int64)


def _png(array: np.ndarray) -> tf.Tensor:
  return tf.io.encode_png(tf.constant(array))


def _record_seed(key):
  """A random op that stores the seed it was given."""
  return ops.Op(lambda ex, s: {**ex, key: s}, name=f"record({key})", random=True)


def test_registry_names_and_factories():
  assert {"decode_image", "decode_mask", "resize_image", "resize_mask", "augment", "normalize", "label",
          "copy", "keep", "patches"} <= set(ops.names())
  assert ops.get("resize_image") is ops.resize_image
  assert ops.get("resize_image")("image", size=8).name == "resize_image('image', size=8)"
  with pytest.raises(KeyError, match="no op 'nope'.*resize_image"):
    ops.get("nope")
  with pytest.raises(ValueError, match="already registered"):
    ops.register("copy")(lambda: None)


def test_decode_resize_normalize_label_copy_keep():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
  mask = np.zeros((12, 10, 1), np.uint8)
  mask[2:8, 3:9] = 255
  ex = {"id": tf.constant("a"), "image": _png(image), "mask": _png(mask), "malignant": tf.constant(1, tf.int64)}
  out = ops.decode_image("image", out="pixels")(ex, SEED)
  np.testing.assert_array_equal(out["pixels"], image)
  assert out["image"] is ex["image"]  # `out` leaves the input alone
  out = ops.chain([ops.copy("mask", "mask_encoded"), ops.decode_image(), ops.resize_image("image", 8),
                   ops.decode_mask("mask"), ops.resize_mask("mask", 8), ops.normalize("image"),
                   ops.label("malignant"), ops.keep(["image", "label", "mask", "mask_encoded"])])(ex, SEED)
  assert list(out) == ["image", "label", "mask", "mask_encoded"]
  np.testing.assert_array_equal(out["image"], pipeline.normalize_image(pipeline.resize_image(tf.constant(image), 8)))
  np.testing.assert_array_equal(out["mask"], pipeline.resize_mask(tf.constant(mask), 8))
  assert out["mask"].shape == (8, 8, 1) and set(np.unique(out["mask"])) == {0.0, 1.0}
  assert float(tf.reduce_min(out["image"])) >= -1 and float(tf.reduce_max(out["image"])) <= 1
  assert out["label"].dtype == tf.int32 and int(out["label"]) == 1
  assert out["mask_encoded"].numpy() == ex["mask"].numpy()
  with pytest.raises(TypeError, match="'image' is uint8, not encoded"):
    ops.decode_image()({"image": tf.constant(image)}, SEED)


def test_missing_key_error_names_op_key_and_features():
  ex = {"id": tf.constant("a"), "image": tf.zeros((4, 4, 3))}
  cases = [ops.resize_mask("mask", 4), ops.copy("mask", "m"), ops.keep(["image", "mask"]),
           ops.augment(augment.AugmentConfig(), spatial_keys=("mask",)), ops.patches("centers", 2)]
  for op in cases:
    with pytest.raises(ops.MissingFeatureError) as e:
      op(ex, SEED)
    message = str(e.value)
    assert op.name in message and "'" + ("centers" if "patches" in op.name else "mask") + "'" in message
    assert "['id', 'image']" in message


def test_missing_key_in_a_pipeline_names_the_dataset(tiny_data_dir, tiny_dataset):
  config = pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, batch_size=4)
  preprocess = ops.segmentation_ops(32, None, mask_key="lesion_outline")
  with pytest.raises(ops.MissingFeatureError, match=r"dataset synthetic_lesions/tiny.*'lesion_outline'"):
    pipeline.eval_stream(config, preprocess, "validation")


def test_chain_seeds_first_random_op_gets_the_seed_itself():
  out = ops.chain([ops.normalize("x"), _record_seed("a"), ops.copy("x", "y"), [_record_seed("b"), _record_seed("c")]])(
      {"x": tf.zeros(2)}, SEED)
  np.testing.assert_array_equal(out["a"], SEED)
  np.testing.assert_array_equal(out["b"], tf.random.experimental.stateless_fold_in(SEED, tf.constant(1, tf.int64)))
  np.testing.assert_array_equal(out["c"], tf.random.experimental.stateless_fold_in(SEED, tf.constant(2, tf.int64)))
  rows = ops.fold_in_range(SEED, 4)
  for j in range(4):
    np.testing.assert_array_equal(rows[j], tf.random.experimental.stateless_fold_in(SEED, tf.constant(j, tf.int64)))


def test_augment_op_equals_augment_with_the_raw_seed():
  rng = np.random.default_rng(1)
  image = tf.constant(rng.random((16, 16, 3), dtype=np.float32))
  mask = tf.constant((rng.random((16, 16, 1)) > 0.5).astype(np.float32))
  config = augment.AugmentConfig(color=0.3)
  out = ops.chain([ops.augment(config), _record_seed("later")])({"image": image, "mask": mask}, SEED)
  want_image, want_mask = augment.augment(image, mask, SEED, config)
  np.testing.assert_array_equal(out["image"], want_image)
  np.testing.assert_array_equal(out["mask"], want_mask)


def _blocks(size=48, seed=0):
  """An image whose channels are {0, 1} rectangles and discs."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  image = np.zeros((size, size, 3), np.float32)
  for c in range(3):
    for _ in range(2):
      y0, x0 = rng.integers(6, size - 18, 2)
      image[y0:y0 + rng.integers(6, 12), x0:x0 + rng.integers(6, 12), c] = 1
    cy, cx = rng.integers(10, size - 10, 2)
    image[..., c][(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 1
  return image


def _edge(mask: np.ndarray) -> np.ndarray:
  """Pixels within one pixel (3x3) of the outline of a (H, W) bool mask."""
  padded = np.pad(mask, 1, mode="edge")
  shifts = [padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
            for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
  return np.any(shifts, axis=0) & ~np.all(shifts, axis=0)


def _bbox(mask: np.ndarray) -> np.ndarray:
  """Normalised [ymin, xmin, ymax, xmax] of a (H, W) mask, 0 and 1 the image edges."""
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  h, w = mask.shape
  return np.array([rows[0] / h, cols[0] / w, (rows[-1] + 1) / h, (cols[-1] + 1) / w])


@pytest.mark.parametrize("config", [augment.AugmentConfig(), augment.AugmentConfig(rotate=False, crop=False),
                                    augment.AugmentConfig(flip=False, crop=False),
                                    augment.AugmentConfig(flip=False, rotate=False, min_crop_scale=0.6)])
def test_augment_moves_every_mask_and_box_with_the_image(config):
  size = 48
  image = _blocks(size)
  rects = np.zeros((size, size, 2), np.float32)
  rects[14:22, 14:32, 0] = 1
  rects[24:34, 18:25, 1] = 1
  boxes = np.stack([_bbox(rects[..., k]) for k in range(2)]).astype(np.float32)
  features = {"image": tf.constant(image), "id": tf.constant("x"), "boxes": tf.constant(boxes),
              "m0": tf.constant(image[..., :1]), "m1": tf.constant(image[..., 1:2]), "m2": tf.constant(image[..., 2:]),
              "rects": tf.constant(rects), "clean": tf.constant(image)}
  op = ops.augment(config, spatial_keys=("rects", "m0", "m1", "m2", "clean"), box_keys=("boxes",),
                   float_keys=("clean",))
  moved = compared = 0
  for s in range(6):
    out = op(features, tf.constant([s, 11], tf.int64))
    assert out["id"] is features["id"]
    transformed = np.asarray(out["image"])
    for c in range(3):  # each mask is its channel of the image, transformed
      mask, channel = np.asarray(out[f"m{c}"])[..., 0] > 0, transformed[..., c] >= 0.5
      if config.rotate and config.crop:  # masks are re-binarised between the two resamplings, the image not
        assert not ((mask ^ channel) & ~_edge(channel)).any()  # they differ on the outline only
      else:  # one resampling at most: exactly
        np.testing.assert_array_equal(mask, channel)
    np.testing.assert_array_equal(out["clean"], out["image"])  # float images: moved, not binarised
    assert set(np.unique(out["rects"])) <= {0.0, 1.0}
    for k in range(2):  # the boxes stay the bounding boxes of their rectangles
      rect = np.asarray(out["rects"])[..., k] > 0
      if not rect.any():  # turned or cropped out of the image
        continue
      box, want = np.asarray(out["boxes"])[k] * size, _bbox(rect) * size
      assert (box[:2] <= want[:2] + 2).all() and (box[2:] >= want[2:] - 2).all()  # contains the mask
      if box.min() > 1 and box.max() < size - 1:  # clipped boxes of rotated ones are larger: corners left
        np.testing.assert_allclose(box, want, atol=2.0)
        compared += 1
    moved += not np.allclose(out["boxes"], boxes)
  assert moved >= 4 and compared >= 4


def test_boxes_leaving_the_image_are_clipped_to_zero_area():
  image = tf.zeros((32, 32, 3))
  boxes = tf.constant([[0.0, 0.0, 0.05, 0.05], [0.3, 0.3, 0.7, 0.7]])
  config = augment.AugmentConfig(flip=False, rotate=False, min_crop_scale=0.5)
  for s in range(8):
    out = np.asarray(augment.augment_features({"image": image, "b": boxes}, tf.constant([s, 0]), config,
                                              spatial_keys=(), box_keys=("b",))["b"])
    assert (out >= 0).all() and (out <= 1).all() and (out[:, 2:] >= out[:, :2]).all()


def test_augment_moves_masks_of_another_resolution_too():
  image = _blocks(32, seed=3)
  big = np.repeat(np.repeat(image[..., :1], 2, 0), 2, 1)  # the same shapes at twice the resolution
  config = augment.AugmentConfig(max_rotation_degrees=40.0)
  for s in range(4):
    out = augment.augment_features({"image": tf.constant(image), "m": tf.constant(image[..., :1]),
                                    "big": tf.constant(big)}, tf.constant([s, 2]), config, spatial_keys=("m", "big"))
    small = np.asarray(out["m"])[..., 0] > 0
    down = np.asarray(out["big"])[..., 0].reshape(32, 2, 32, 2).mean((1, 3)) >= 0.5
    assert (small ^ down).sum() <= 0.15 * small.sum()


def _grid_example(size=16):
  values = np.arange(size * size * 3, dtype=np.float32).reshape(size, size, 3)
  centers = np.array([[0.5, 0.5], [0.0, 0.0], [0.9, 0.25]], np.float32)
  return values, {"id": tf.constant("g"), "image": tf.constant(values), "label": tf.constant(2),
                  "centers": tf.constant(centers)}


def test_patches_gives_one_example_per_centre_with_the_right_crops_and_seeds():
  values, example = _grid_example()
  preprocess = [ops.copy("label", "label2"), ops.patches("centers", 4), _record_seed("seed"), _record_seed("seed2")]
  ds = ops.apply(tf.data.Dataset.from_tensors(example).repeat(2).enumerate(start=7), preprocess, stream_seed=5)
  out = list(ds.as_numpy_iterator())
  assert len(out) == 6
  corners = [(6, 6), (0, 0), (12, 2)]  # centred where possible, shifted inwards at the borders
  for i, ex in enumerate(out):
    position, j = 7 + i // 3, i % 3
    r, c = corners[j]
    np.testing.assert_array_equal(ex["image"], values[r:r + 4, c:c + 4])
    assert ex["patch_index"] == j and ex["id"] == b"g" and ex["label"] == ex["label2"] == 2
    np.testing.assert_array_equal(ex["centers"], np.asarray(example["centers"])[j])
    stream = tf.constant([5, position], tf.int64)  # the patches op is the chain's first random op
    child = tf.random.experimental.stateless_fold_in(stream, tf.constant(j, tf.int64))
    np.testing.assert_array_equal(ex["seed"], child)
    grandchild = tf.random.experimental.stateless_fold_in(child, tf.constant(1, tf.int64))
    np.testing.assert_array_equal(ex["seed2"], grandchild)
  again = list(ds.as_numpy_iterator())
  for a, b in zip(out, again):
    np.testing.assert_array_equal(a["seed"], b["seed"])
  assert len({tuple(ex["seed"]) for ex in out}) == 6
  with pytest.raises(ValueError, match="one-to-many"):
    ops.chain(preprocess)(example, SEED)


def test_patches_around_boxes_and_with_jitter():
  values, example = _grid_example()
  example["boxes"] = tf.constant([[0.25, 0.25, 0.75, 0.75]])
  many = ops.patches("boxes", 6, keys=("image",))(example, SEED)
  np.testing.assert_array_equal(many["image"][0], values[5:11, 5:11])
  jittered = ops.patches("centers", 4, jitter=3.0)
  a, b = jittered(example, SEED), jittered(example, SEED)
  np.testing.assert_array_equal(a["image"], b["image"])
  others = [jittered(example, tf.constant([s, 1], tf.int64))["image"] for s in range(4)]
  assert any(not np.array_equal(o, a["image"]) for o in others)


def test_train_stream_of_patches_batches_and_resumes(tiny_data_dir, tiny_dataset):
  config = pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, batch_size=4)
  centers = ops.Op(lambda ex, _: {**ex, "centers": tf.constant([[0.3, 0.3], [0.7, 0.7], [0.5, 0.5]])}, name="centers")
  preprocess = [ops.decode_image(), ops.resize_image("image", 32), centers, ops.patches("centers", 8),
                ops.augment(augment.AugmentConfig(), spatial_keys=()), ops.keep(["id", "image", "patch_index"])]
  batches = [b for _, b in zip(range(3), pipeline.train_iterator(config, preprocess))]
  assert batches[0]["image"].shape == (4, 8, 8, 3)
  np.testing.assert_array_equal(batches[0]["patch_index"], [0, 1, 2, 0])
  assert batches[0]["id"][0] == batches[0]["id"][2] != batches[0]["id"][3]
  resumed = next(pipeline.train_iterator(config, preprocess, start_step=2))
  for k in resumed:
    np.testing.assert_array_equal(resumed[k], batches[2][k])
  evaluated = list(pipeline.eval_iterator(config, preprocess[:-2] + [ops.keep(["id", "image"])], "validation"))
  assert sum(b["weight"].sum() for b in evaluated) == 3 * 16


def test_train_stream_moves_hair_and_occlusion_masks_with_the_lesion(tiny_data_dir, tiny_dataset):
  config = pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, batch_size=4)
  masks = ("mask", "hair_mask", "occlusion_mask")
  preprocess = ([ops.decode_image(), ops.resize_image("image", 32)]
                + [op for k in masks for op in (ops.decode_mask(k), ops.resize_mask(k, 32))]
                + [ops.augment(augment.AugmentConfig(), spatial_keys=masks), ops.normalize(),
                   ops.keep(("image",) + masks)])
  batch = next(pipeline.train_iterator(config, preprocess))
  plain = next(pipeline.train_iterator(config, ops.segmentation_ops(32, augment.AugmentConfig())))
  np.testing.assert_array_equal(batch["image"], plain["image"])  # extra masks change nothing else
  np.testing.assert_array_equal(batch["mask"], plain["mask"])
  for k in masks:
    assert batch[k].shape == (4, 32, 32, 1) and set(np.unique(batch[k])) <= {0.0, 1.0}


def test_pad_batch_pads_every_leaf_of_a_pytree():
  batch = {"image": np.arange(6, dtype=np.float32).reshape(3, 2), "id": np.array([b"a", b"b", b"c"], object),
           "targets": {"boxes": np.ones((3, 5, 4)), "pair": (np.arange(3), np.zeros((3, 1)))}}
  out = batching.pad_batch(batch, 5)
  assert out["image"].shape == (5, 2) and out["targets"]["boxes"].shape == (5, 5, 4)
  np.testing.assert_array_equal(out["targets"]["pair"][0], [0, 1, 2, 2, 2])
  assert isinstance(out["targets"]["pair"], tuple) and list(out["id"]) == [b"a", b"b", b"c", b"c", b"c"]
  np.testing.assert_array_equal(out["weight"], [1, 1, 1, 0, 0])
  assert pipeline.pad_batch is batching.pad_batch
  with pytest.raises(ValueError, match="disagree"):
    batching.pad_batch({"a": np.zeros(3), "b": {"c": np.zeros(2)}}, 4)
  full = batching.pad_batch({"a": np.zeros(4)}, 4)
  np.testing.assert_array_equal(full["weight"], np.ones(4))


def test_short_host_shards_get_all_padding_batches():
  batch = {"image": np.ones((2, 3)), "meta": {"id": np.array([b"a", b"b"], object)}}
  out = list(pipeline._padded(iter([batch]), 4, 3))  # pylint: disable=protected-access
  assert len(out) == 3 and all(b["image"].shape == (4, 3) and b["meta"]["id"].shape == (4,) for b in out)
  np.testing.assert_array_equal([b["weight"].sum() for b in out], [2, 0, 0])


def test_batching_module_does_not_import_tensorflow():
  import ast, inspect  # pylint: disable=g-import-not-at-top,multiple-imports
  tree = ast.parse(inspect.getsource(batching))
  imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
  assert imported <= {"__future__", "typing", "numpy"}, imported


def test_rotation_of_boxes_matches_the_image_rotation_exactly_at_right_angles():
  size = 32
  rects = np.zeros((size, size, 1), np.float32)
  rects[4:12, 6:26] = 1
  boxes = tf.constant([_bbox(rects[..., 0])], tf.float32)
  features = {"image": tf.zeros((size, size, 3)), "r": tf.constant(rects), "b": boxes}
  layout = augment._layout(features, "image", ("r",), (), ("b",))  # pylint: disable=protected-access
  out = augment._rotate_step(features, layout, tf.constant(math.pi / 2), None)  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(out["b"])[0], _bbox(np.asarray(out["r"])[..., 0] > 0), atol=1e-5)


def _sibling_imports(package: str, module: str) -> set[str]:
  """The modules of `package` that `package.module` imports."""
  import ast, importlib, inspect  # pylint: disable=g-import-not-at-top,multiple-imports
  tree = ast.parse(inspect.getsource(importlib.import_module(f"{package}.{module}")))
  return {n.module[len(package) + 1:] for n in ast.walk(tree)
          if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(package + ".")}


def test_ops_package_reexports_every_op_and_its_modules_import_downwards():
  for name in ops.names():
    assert getattr(ops, name) is ops.get(name), name
  assert ops.expand is ops.core.expand and callable(ops.expand)  # the factory, not a module
  layers = {"core": set(), "features": {"core"}, "image": {"core", "features"}, "one_to_many": {"core"}}
  assert {m: _sibling_imports("lesion_jax.data.ops", m) for m in layers} == layers
  # A pipeline package's own ops are named like registered ones but stay out of the registry.
  from lesion_jax.pipelines.lesion_index import ops as lesion_index_ops  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.purification import ops as purification_ops  # pylint: disable=g-import-not-at-top
  assert not {"random_holes", "class_rotations", "decode_superpixels", "superpixel_patches"} & set(ops.names())
  assert purification_ops.random_holes(8).name == "random_holes(8)"
  assert lesion_index_ops.class_rotations("label", (90.0,)).name == "class_rotations('label', (90.0,))"
