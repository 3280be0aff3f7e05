"""Run by tests/test_sharding.py in a subprocess with 8 fake CPU devices:
trains the same few steps on 1 device and on 8, and restores the 8-device checkpoint on 1.
Prints one JSON line with the comparisons."""
import json
import os
import sys

import jax
import numpy as np

from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.tasks import classification, runner, segmentation
from lesion_jax.train import sharding
from lesion_jax.train.state import OptimizerConfig


def max_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
             zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))))


def main(data_dir: str, workdir: str) -> None:
  assert len(jax.devices()) == 8, jax.devices()
  one, eight = sharding.make_mesh(1), sharding.make_mesh(8)
  out = {"devices": len(jax.devices())}
  # SGD, not Adam: Adam's g/sqrt(v) turns float-rounding differences in near-zero gradients (summed
  # in another order across 8 devices) into full-size updates of opposite sign, which would hide
  # whether the sharded gradients themselves agree.
  optimizer = OptimizerConfig(name="sgd", learning_rate=0.05, lr_schedule="constant")
  seg = segmentation.SegmentationTask(segmentation.SegmenterConfig(
      input=pipeline.InputConfig(dataset="synthetic_lesions/tiny", data_dir=data_dir, image_size=32,
                                 batch_size=8),
      model=segmentation.SegmenterModelConfig(features=4, levels=2), run=RunConfig(num_steps=3, eval_every=3,
      log_every=1), optimizer=optimizer))
  s1 = runner.train(seg, f"{workdir}/seg1", mesh=one)
  s8 = runner.train(seg, f"{workdir}/seg8", mesh=eight)
  out["seg_param_diff"] = max_diff(s1.params, s8.params)
  initial = seg.init_state(jax.random.split(jax.random.key(seg.seed))[0])
  out["seg_param_change"] = max_diff(s1.params, initial.params)
  out["seg_batch_stats_diff"] = max_diff(s1.batch_stats, s8.batch_stats)
  h1 = json.load(open(f"{workdir}/seg1/history.json"))
  h8 = json.load(open(f"{workdir}/seg8/history.json"))
  out["seg_loss_1"] = [v for _, v in h1["train/loss"]]
  out["seg_loss_8"] = [v for _, v in h8["train/loss"]]
  out["seg_val_1"] = h1["val/jaccard"][-1][1]
  out["seg_val_8"] = h8["val/jaccard"][-1][1]
  out["seg_sharded_on"] = len(s8.params["logits"]["kernel"].sharding.device_set)
  # A checkpoint written from 8 devices restores onto 1.
  restored = runner.restore(seg, f"{workdir}/seg8", "latest", mesh=one)
  out["restore_8_to_1_diff"] = max_diff(restored.params, s8.params)
  out["restored_on"] = len(restored.params["logits"]["kernel"].sharding.device_set)

  cls = classification.ClassificationTask(classification.ClassifierConfig(
      input=pipeline.InputConfig(dataset="synthetic_lesions/tiny", data_dir=data_dir, image_size=32,
                                 batch_size=8),
      model=classification.ClassifierModelConfig("resnet18", width=0.125),
      run=RunConfig(num_steps=3, eval_every=3, log_every=1, val_split=""), optimizer=optimizer))  # no validation: its compiles add nothing here
  c1 = runner.train(cls, f"{workdir}/cls1", mesh=one)
  c8 = runner.train(cls, f"{workdir}/cls8", mesh=eight)
  out["cls_param_diff"] = max_diff(c1.params, c8.params)
  initial = cls.init_state(jax.random.split(jax.random.key(cls.seed))[0])
  out["cls_param_change"] = max_diff(c1.params, initial.params)
  out["cls_batch_stats_diff"] = max_diff(c1.batch_stats, c8.batch_stats)
  out["cls_loss_1"] = [v for _, v in json.load(open(f"{workdir}/cls1/history.json"))["train/loss"]]
  out["cls_loss_8"] = [v for _, v in json.load(open(f"{workdir}/cls8/history.json"))["train/loss"]]
  try:
    sharding.check_batch_size(12, eight)
    out["batch_error"] = None
  except ValueError as e:
    out["batch_error"] = str(e)
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  main(sys.argv[1], sys.argv[2])
