"""Run by tests/test_multihost.py as two processes (one CPU device each) joined through
`jax.distributed` on the loopback address: trains a few segmenter steps with each host reading
its own shard, then writes what each host saw and holds to `result_<process>.json` / `.npz`.
Process 1 starts LAG_S seconds late, past gloo's 30 s key-exchange timeout, as a host with a
cold compilation cache or a busy CPU would: the hosts must meet before the first collective.

Then, on the trained models: lesion crops (an artifact stage) where the hosts have different
numbers of images left to segment, with a predict step holding a batch-wide reduction (a
collective on a mesh across hosts, as XLA may put into any predict step); GAN sampling and
FD-derm; and each host's augmentation stream seeds."""
import json
import os
import sys
import time

import jax
import numpy as np

import jax.numpy as jnp

from lesion_jax.artifacts import crops, stage
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.pipelines.gan import task as gan
from lesion_jax.tasks import classification, runner, segmentation
from lesion_jax.train import sharding, steps
from lesion_jax.train.state import OptimizerConfig


LAG_S = 35.0
CROP_SPLIT, CROP_SIZE = "train", 16
PRESTORED = 16  # of process 0's 32 crop ids: it segments 2 batches of 8, process 1 segments 4
GAN_SPLIT = "train"


def make_task(data_dir: str) -> segmentation.SegmentationTask:
  return segmentation.SegmentationTask(segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset="synthetic_lesions/tiny", data_dir=data_dir, image_size=32,
                                 batch_size=8),
      model=segmentation.SegmenterModelConfig(features=4, levels=2), run=RunConfig(num_steps=3, eval_every=3,
      log_every=1), optimizer=OptimizerConfig(name="sgd", learning_rate=0.05, lr_schedule="constant"),
      summary_images=0))  # no process-0-only work between the collectives


def make_gan_task(data_dir: str, classifier_workdir: str) -> gan.GANTask:
  return gan.GANTask(gan.GANConfig(
      input=pipeline.InputConfig(dataset="synthetic_lesions/tiny", data_dir=data_dir, image_size=16,
                                 batch_size=4, augment=gan.GAN_AUGMENT),
      model=gan.DCGANModelConfig(generator_features=4, discriminator_features=4),
      feature_workdir=classifier_workdir, fd_samples=8, run=RunConfig(val_split=GAN_SPLIT)))


def gan_latents(task: gan.GANTask) -> np.ndarray:
  return task.latents(3, 6)  # a full batch and a padded one


def crop_store(data_dir: str, root: str, segmenter_workdir: str, step: int):
  builder = pipeline.get_builder("synthetic_lesions/tiny", data_dir)
  return crops.crop_store(root, builder.info.full_name, segmenter_workdir, step, CROP_SIZE, 0.1)


def prestored_ids(data_dir: str) -> list[str]:
  """Crop ids already stored before the stage runs: the first PRESTORED of process 0's share."""
  builder = pipeline.get_builder("synthetic_lesions/tiny", data_dir)
  return stage.shard_ids(stage.split_ids(builder, CROP_SPLIT), 0, 2)[:PRESTORED]


def with_batch_reduction(predict_step):
  """`predict_step` plus 0 x the batch mean: the same maps, from a program that, on a mesh across
  hosts, holds a cross-host all-reduce."""
  def predict(state, batch):
    return predict_step(state, batch) + 0.0 * jnp.mean(batch["image"])
  return predict


def seed_op(example, seed):
  del example
  return {"seed": seed}


def flat_params(params) -> dict[str, np.ndarray]:
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(jax.device_get(v))
          for path, v in jax.tree_util.tree_leaves_with_path(params)}


def main(data_dir: str, workdir: str, process_id: int, num_processes: int, port: int) -> None:
  sharding.initialize_distributed("on", f"127.0.0.1:{port}", num_processes, process_id)
  if process_id == 1:
    time.sleep(LAG_S)
  task = make_task(data_dir)
  mesh = sharding.make_mesh()
  state = runner.train(task, os.path.join(workdir, "run"), mesh=mesh)
  builder = pipeline.get_builder("synthetic_lesions/tiny", data_dir)
  train_ids = [r["id"].decode() for r in pipeline.read_split(builder, "train").as_numpy_iterator()]
  validation = task.evaluate(state, "validation", mesh)
  np.savez(os.path.join(workdir, f"params_{process_id}.npz"), **flat_params(state.params))
  classifier = classification.ClassificationTask(classification.ClassifierConfig(
      input=pipeline.InputConfig(dataset="synthetic_lesions/tiny", data_dir=data_dir, image_size=32,
                                 batch_size=8),
      run=RunConfig(num_steps=3, eval_every=3, log_every=1), optimizer=OptimizerConfig(lr_schedule="constant")))
  cls_state = runner.train(classifier, os.path.join(workdir, "classifier"), mesh=mesh)
  predicted = classifier.evaluate(cls_state, "validation", mesh)
  labels, probs, cls_ids = predicted.per_example["labels"], predicted.per_example["probs"], predicted.ids
  # The gathers on uneven shards (3 rows here, none on the other host), 64-bit values, and
  # strings of different lengths, non-ASCII, with a trailing NUL.
  rows = 3 if process_id == 0 else 0
  uneven = sharding.allgather_rows({"i": np.arange(rows, dtype=np.int64) + 2 ** 40,
                                    "f": np.full((rows, 2), 0.5, np.float32)})
  strings = sharding.allgather_strings([f"é{process_id}", "a\0", "x" * (5 + process_id)])
  # Lesion crops: process 0 finds PRESTORED of its ids done, so the hosts run different numbers of
  # predict batches.
  seg_dir = os.path.join(workdir, "run")
  root = os.path.join(workdir, "artifacts")
  store = crop_store(data_dir, root, seg_dir, int(jax.device_get(state.step)))
  if process_id == 0:
    for i in prestored_ids(data_dir):
      store.write(i, None, {"prestored": True})
  original = steps.segmentation_predict_step
  steps.segmentation_predict_step = with_batch_reduction(original)
  try:
    crop_dir = segmentation.lesion_crops(seg_dir, builder, [CROP_SPLIT], CROP_SIZE, root, mesh=mesh)
  finally:
    steps.segmentation_predict_step = original
  # GAN sampling and FD-derm (features of the classifier trained above) from a fresh GAN state.
  gan_task = make_gan_task(data_dir, os.path.join(workdir, "classifier"))
  gan_state = sharding.replicate(gan_task.init_state(jax.random.key(0)), mesh)
  np.savez(os.path.join(workdir, f"gan_{process_id}.npz"),
           samples=gan_task.sample(gan_state, gan_latents(gan_task), mesh))
  fd = gan_task.evaluate(gan_state, GAN_SPLIT, mesh).scores
  # Augmentation stream seeds: the first training batch's (stream seed, position) per example.
  seeds = next(pipeline.train_iterator(pipeline.InputConfig(
      dataset="synthetic_lesions/tiny", data_dir=data_dir, batch_size=8), [seed_op], "train"))["seed"]
  result = {"crop_dir": crop_dir, "fd": fd, "stream_seeds": seeds.tolist(),
            "uneven": {"i": uneven["i"].tolist(), "i_dtype": str(uneven["i"].dtype),
                       "f_shape": list(uneven["f"].shape)},
            "strings": strings,
            "classifier_validation": {"labels": labels.tolist(), "probs": probs.tolist(), "ids": cls_ids},
            "process_count": jax.process_count(), "devices": len(jax.devices()),
            "local_devices": len(jax.local_devices()), "mesh_devices": int(mesh.devices.size),
            "train_ids": train_ids, "validation": validation.scores, "validation_ids": validation.ids}
  with open(os.path.join(workdir, f"result_{process_id}.json"), "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
