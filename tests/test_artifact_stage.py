"""The artifact stage (resumable, batched, per-example failures, per-host shares, npz arrays, the
Beam runner) and the one mask codec."""
import os

import cv2
import numpy as np
import pytest

from lesion_jax import io
from lesion_jax.artifacts import crops, stage
from lesion_jax.artifacts.store import ArtifactStore
from lesion_jax.data import pipeline
from lesion_jax.eval import postprocess

SPLIT = "test"  # 16 examples


@pytest.fixture(scope="module")
def builder(tiny_data_dir, tiny_dataset):
  return pipeline.get_builder(tiny_dataset, tiny_data_dir)


def _dark_mask(examples, pool):
  """A toy stage: pixels darker than the image's mean, and that fraction as the record."""
  def one(ex):
    grey = ex["image"].mean(-1)
    mask = grey < grey.mean()
    return stage.Artifact(mask, {"fraction": round(float(mask.mean()), 6)})
  return list(pool.map(one, examples))


def _counting(compute, calls):
  def wrapped(examples, pool):
    calls.append([ex["id"] for ex in examples])
    return compute(examples, pool)
  return wrapped


def test_resumes_and_recomputes_only_what_is_incomplete(builder, tmp_path):
  store = ArtifactStore(str(tmp_path), "tiny", "dark", "v1")
  calls = []
  st = stage.ArtifactStage(store, _counting(_dark_mask, calls), batch_size=5, workers=2)
  first = st.run_split(builder, SPLIT, features=("image",))
  assert (first.total, first.computed, first.reused, first.failed) == (16, 16, 0, 0)
  assert [len(c) for c in calls] == [5, 5, 5, 1]  # batched
  assert sorted(first.computed_ids) == sorted(stage.split_ids(builder, SPLIT))
  assert store.read_record("synth_test_000000")["id"] == "synth_test_000000"
  calls.clear()
  second = st.run_split(builder, SPLIT, features=("image",))
  assert (second.computed, second.reused) == (0, 16) and not calls  # nothing read or computed
  victim = "synth_test_000007"
  before = open(store.png_path(victim), "rb").read()
  os.remove(store.record_path(victim))  # killed between the PNG and its record
  third = st.run_split(builder, SPLIT, features=("image",))
  assert (third.computed, third.reused, third.computed_ids) == (1, 15, [victim]) and calls == [[victim]]
  assert open(store.png_path(victim), "rb").read() == before
  assert not [f for f in os.listdir(store.directory) if f.startswith(".tmp")]
  # A kill during an atomic write leaves a .tmp-* file: the next run removes it once it is stale
  # (a young one may be another process's write in progress).
  stale, young = os.path.join(store.directory, ".tmp-abc.png"), os.path.join(store.directory, ".tmp-def.png")
  for path in (stale, young):
    open(path, "wb").write(b"partial")
  os.utime(stale, (0, 0))
  st.run_split(builder, SPLIT, features=("image",))
  assert not os.path.exists(stale) and os.path.exists(young)


def test_a_failing_example_is_skipped_counted_and_named(builder, tmp_path):
  bad = "synth_test_000004"

  def fragile(examples, pool):
    if any(ex["id"] == bad for ex in examples):
      raise ValueError("corrupt pixels")
    return _dark_mask(examples, pool)

  store = ArtifactStore(str(tmp_path), "tiny", "dark", "v1")
  summary = stage.ArtifactStage(store, fragile, batch_size=8).run_split(builder, SPLIT, ("image",))
  assert (summary.computed, summary.failed) == (15, 1)
  assert summary.failures == {bad: "ValueError: corrupt pixels"}
  assert not store.has(bad) and store.has("synth_test_000005")  # its batch-mates were stored
  with pytest.raises(stage.StageError, match=bad):
    stage.ArtifactStage(store, fragile, on_error="raise").run_split(builder, SPLIT, ("image",))
  # Not one Artifact per example is a bug in compute: raised, never skipped.
  with pytest.raises(TypeError, match="one Artifact per example"):
    stage.ArtifactStage(ArtifactStore(str(tmp_path), "tiny", "x", "v"),
                        lambda ex, pool: []).run_split(builder, SPLIT, ("image",))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 20])
def test_host_shares_are_disjoint_and_cover_all_ids(count):
  ids = [f"img_{i:03d}" for i in np.random.default_rng(count).permutation(17)]
  shares = [stage.shard_ids(ids, i, count) for i in range(count)]
  assert sorted(sum(shares, [])) == sorted(ids)  # disjoint and complete
  assert max(map(len, shares)) - min(map(len, shares)) <= 1
  assert shares == [stage.shard_ids(sorted(ids), i, count) for i in range(count)]  # order-free
  with pytest.raises(ValueError):
    stage.shard_ids(ids, count, count)


def test_each_process_computes_only_its_share(builder, tmp_path):
  store = ArtifactStore(str(tmp_path), "tiny", "dark", "v1")
  st = stage.ArtifactStage(store, _dark_mask)
  ids = stage.split_ids(builder, SPLIT)
  runs = [st.run_split(builder, SPLIT, ("image",), process_index=i, process_count=3) for i in range(3)]
  assert [sorted(r.computed_ids) for r in runs] == [stage.shard_ids(ids, i, 3) for i in range(3)]
  assert all(store.has(i) for i in ids)


def test_named_arrays_round_trip_through_npz(builder, tmp_path):
  def superpixels(examples, pool):
    out = []
    for ex in examples:
      labels = (np.arange(32 * 32, dtype=np.int32).reshape(32, 32) // 100)
      features = np.stack([ex["image"].reshape(-1, 3)[labels.ravel() == j].mean(0)
                           for j in range(labels.max() + 1)]).astype(np.float32)
      out.append(stage.Artifact(None, {"superpixels": int(labels.max() + 1)},
                                {"labels": labels, "features": features}))
    return out

  store = ArtifactStore(str(tmp_path), "tiny", "superpixels", "grid100")
  stage.ArtifactStage(store, superpixels, batch_size=4).run_split(builder, SPLIT, ("image",))
  arrays = store.read_arrays("synth_test_000002")
  assert arrays["labels"].dtype == np.int32 and arrays["labels"].shape == (32, 32)
  assert arrays["features"].shape == (11, 3) and arrays["features"].dtype == np.float32
  assert store.read_record("synth_test_000002")["superpixels"] == 11
  assert not os.path.exists(store.png_path("synth_test_000002"))


def test_crop_split_keeps_its_summary_and_resumes(builder, tmp_path):
  store = crops.crop_store(str(tmp_path), builder.info.full_name, str(tmp_path / "seg"), 3, 16, 0.1)
  segment = lambda images: [1.0 - im.mean(-1) / 255.0 for im in images]  # noqa: E731
  binarize = lambda prob: postprocess.clean_mask(prob > 0.6)  # noqa: E731
  first = crops.crop_split(builder, SPLIT, store, segment, binarize, 16, chunk=6)
  assert {k: first[k] for k in ("split", "computed", "reused", "failed")} == {
      "split": SPLIT, "computed": 16, "reused": 0, "failed": 0}
  assert set(first) >= {"empty_masks", "seconds"}
  assert cv2.imread(store.png_path("synth_test_000001")).shape == (16, 16, 3)
  second = crops.crop_split(builder, SPLIT, store, segment, binarize, 16, chunk=6)
  assert (second["computed"], second["reused"], second["empty_masks"]) == (0, 16, 0)


def test_crops_use_the_given_binarisation_and_version_the_fallback(builder, tmp_path):
  # Maps that never reach 0.5: a plain threshold gives empty masks (whole image kept); the
  # segmenter's fallback (half the map's maximum) gives a lesion, as evaluate --fallback does.
  segment = lambda images: [0.4 * (1.0 - im.mean(-1) / 255.0) for im in images]  # noqa: E731
  plain = crops.crop_store(str(tmp_path), builder.info.full_name, str(tmp_path / "seg"), 3, 16, 0.1)
  rescued = crops.crop_store(str(tmp_path), builder.info.full_name, str(tmp_path / "seg"), 3, 16, 0.1, fallback=True)
  assert plain.directory != rescued.directory  # the two kinds of crop never mix
  empty = crops.crop_split(builder, SPLIT, plain, segment, lambda p: p > 0.5, 16)
  assert empty["empty_masks"] == 16
  fallback = lambda p: postprocess.catastrophic_fallback(p, p > 0.5)[0]  # noqa: E731
  found = crops.crop_split(builder, SPLIT, rescued, segment, fallback, 16)
  assert found["empty_masks"] < 8  # most rescued (a few fallbacks would cover the whole image: not used)
  records = rescued.records(f"synth_test_{i:06d}" for i in range(16))
  rescued_records = [r for r in records if not r["empty_mask"]]
  assert len(rescued_records) == 16 - found["empty_masks"]
  assert all(0.0 < r["lesion_fraction"] <= 0.9 and r["measurements"]["area"] > 0 for r in rescued_records)


# ----------------------------------------------------------------------------------------------
# The mask codec


def _png(values: np.ndarray) -> bytes:
  ok, buf = cv2.imencode(".png", values.astype(np.uint8))
  assert ok
  return buf.tobytes()


def test_01_and_0255_masks_decode_alike_through_store_and_postprocess(tmp_path):
  mask = np.zeros((6, 7), bool)
  mask[1:4, 2:6] = True
  store = ArtifactStore(str(tmp_path), "ds", "masks", "v")
  for name, scale in (("zero_one", 1), ("zero_255", 255)):
    data = _png(mask * scale)
    io.atomic_write_bytes(store.png_path(name), data)
    np.testing.assert_array_equal(store.read_mask(name), mask)
    np.testing.assert_array_equal(postprocess.decode_mask(data), mask)
    np.testing.assert_array_equal(io.decode_mask(data), mask)
    np.testing.assert_array_equal(io.read_mask_file(store.png_path(name)), mask)


def test_masks_are_written_as_0_255(tmp_path):
  mask = np.eye(5, dtype=np.uint8)  # {0, 1}
  store = ArtifactStore(str(tmp_path), "ds", "masks", "v")
  store.write("m", mask[..., None])
  stored = cv2.imread(store.png_path("m"), cv2.IMREAD_UNCHANGED)
  assert stored.dtype == np.uint8 and stored.ndim == 2 and set(np.unique(stored)) == {0, 255}
  assert io.encode_mask(mask) == io.encode_mask(mask.astype(bool)) == _png(mask * 255)
  np.testing.assert_array_equal(store.read_mask("m"), mask.astype(bool))
  with pytest.raises(ValueError, match="could not decode"):
    io.decode_mask(b"not a png")
  with pytest.raises(FileNotFoundError):
    store.read_mask("absent")


def test_artifact_writes_come_from_whichever_process_computed_them(tmp_path, monkeypatch):
  monkeypatch.setattr(io, "is_primary_process", lambda: False)  # as on process 1 of 2
  io.write_json(tmp_path / "run_output.json", {"a": 1})
  assert not os.path.exists(tmp_path / "run_output.json")  # run outputs: process 0 only
  io.write_json(tmp_path / "mine.json", {"a": 1}, all_processes=True)
  assert io.read_json(tmp_path / "mine.json") == {"a": 1}
  store = ArtifactStore(str(tmp_path), "ds", "masks", "v")
  store.write("x", np.ones((3, 3), bool), {"k": 2})
  assert store.has("x") and store.read_mask("x").all()


# ----------------------------------------------------------------------------------------------
# Beam


def test_the_same_stage_runs_on_beam(builder, tmp_path):
  pytest.importorskip("apache_beam")
  store = ArtifactStore(str(tmp_path), "tiny", "dark", "v1")
  st = stage.ArtifactStage(store, _dark_mask, batch_size=4, workers=2)
  st.run_split(builder, SPLIT, ("image",), process_index=0, process_count=2)  # half done before
  beam_run = stage.run_on_beam(st, builder, SPLIT, ("image",))
  assert (beam_run.computed, beam_run.reused, beam_run.failed) == (8, 8, 0)
  reference = ArtifactStore(str(tmp_path), "tiny", "dark", "reference")
  stage.ArtifactStage(reference, _dark_mask).run_split(builder, SPLIT, ("image",))
  for i in stage.split_ids(builder, SPLIT):
    assert open(store.png_path(i), "rb").read() == open(reference.png_path(i), "rb").read()
    assert open(store.record_path(i)).read() == open(reference.record_path(i)).read()
  assert st.run_split(builder, SPLIT, ("image",)).reused == 16
