"""Iterative self-learning (beyond the self-learning paper, which stops after one U-Net): the
U-Net trained on K-means pseudo-masks relabels every unlabelled image, a new U-Net trains on its
confident masks, and so on for `rounds` rounds. No manual mask is used to train, select or flag
anything; each round's checkpoint is picked on the pseudo-masks of the selection split.

With `transductive`, the images of the reported split are relabelled and trained on too (their
masks never): the usual semi-supervised use of unlabelled target images, off by default because
its scores are then not those of a model that never saw the test images.

With `start="ground_truth"` (semi-supervised self-training, transductive only) round 0 is the
supervised U-Net on the training split's manual masks; each later round trains on those manual
masks plus the previous U-Net's confident masks of the reported split's images.

Registered as the `self_learning` pipeline (`SelfLearningPipeline`), so `runner.load(workdir)`
opens its config.json: its stages are the rounds' runs, its predictor the last finished round.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging

from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.artifacts import annotate, kmeans, relabel, store
from lesion_jax.data import pipeline
from lesion_jax.eval import figures
from lesion_jax.tasks import base, runner, segmentation
from lesion_jax.train import sharding

ROUND_KEYS = ("jaccard", "jaccard_thresholded", "dice")
STARTS = ("kmeans", "ground_truth")


@dataclasses.dataclass(frozen=True)
class SelfLearningConfig:
  segmenter: segmentation.SegmenterConfig = segmentation.SegmenterConfig()  # train / val splits: the unlabelled images; test split: scored each round
  kmeans: kmeans.KMeansConfig = kmeans.KMeansConfig()
  relabel: relabel.RelabelConfig = relabel.RelabelConfig()
  rounds: int = 2  # relabelling rounds after the K-means one (0: the paper's single U-Net)
  transductive: bool = False
  start: str = "kmeans"  # round 0's masks: kmeans (no manual mask anywhere) or ground_truth
  artifact_dir: str | None = config_lib.field(None, "Where artifacts live.", location=True)

  def __post_init__(self):  # ConfigError: the experiment reports it as a usage error, before any write
    if self.rounds < 0:
      raise config_lib.ConfigError(f"`rounds`={self.rounds}: must be >= 0")
    if self.start not in STARTS:
      raise config_lib.ConfigError(f"`start`={self.start!r}: must be one of {STARTS}")
    if self.start == "ground_truth" and not self.transductive:
      raise config_lib.ConfigError("`start`=ground_truth needs `transductive`=true: it relabels the test split's "
                                   "images (every training image already has its manual mask)")


def _round_config(config: SelfLearningConfig, masks: str | None) -> segmentation.SegmenterConfig:
  seg = config.segmenter
  if masks is None:  # ground_truth, round 0: the supervised run itself
    return seg
  train = f"{seg.run.train_split}+{seg.run.test_split}" if config.transductive else seg.run.train_split
  # From ground truth only the test split's images are relabelled; the training images keep theirs.
  return dataclasses.replace(seg, mask_artifacts=masks, run=dataclasses.replace(seg.run, train_split=train),
                             keep_unmatched_masks=config.start == "ground_truth")


def _unlabelled_splits(config: SelfLearningConfig) -> list[str]:
  seg = config.segmenter
  if config.start == "ground_truth":
    return [seg.run.test_split]
  return [s for s in (seg.run.train_split, seg.run.val_split) if s] + ([seg.run.test_split] if config.transductive else [])


def run(config: SelfLearningConfig, workdir: str) -> dict[str, Any]:
  """Every round (each resumable) into `workdir`/round_<r>; writes config.json, metrics.json
  (per round: the pseudo-masks' Jaccard on the training images, for reporting only, and the
  test scores) and figures/rounds.png."""
  mesh = sharding.make_mesh()
  seg = config.segmenter
  data = seg.input
  builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir, field="segmenter.input.dataset")
  segmentation.SegmentationTask(seg).check(mesh, [("segmenter.run.test_split", seg.run.test_split)])
  runner.write_config(workdir, {"task": "self_learning", "config": config_lib.to_dict(config)}, config)
  root = config.artifact_dir or store.default_root(data.data_dir)
  unlabelled = _unlabelled_splits(config)
  pseudo, masks = {}, None
  if config.start == "kmeans":
    kstore = annotate.kmeans_store(root, builder.info.full_name, config.kmeans)
    for split in unlabelled:
      summary = annotate.annotate_split(builder, split, kstore, config.kmeans)
      pseudo[split] = {"uncertain": summary.uncertain,
                       "pseudo_mask_jaccard": (summary.scores or {}).get("jaccard")}
    masks = kstore.directory
  initial, later = (("K-means", "round {} U-Net") if config.start == "kmeans"
                    else ("ground truth", "ground truth + round {} U-Net"))
  rows = []
  for r in range(config.rounds + 1):
    round_dir = os.path.join(workdir, f"round_{r}")
    task = segmentation.SegmentationTask(_round_config(config, masks))
    scores = runner.run(task, round_dir, mesh=mesh)
    source = initial if r == 0 else later.format(r - 1)
    rows.append({"round": r, "trained_on": source, "masks": masks,
                 "pseudo_masks": pseudo,  # per split; Jaccard against ground truth, reporting only
                 **{f"test/{k}": scores.get(f"test/{k}") for k in ROUND_KEYS}})
    logging.info("self-learning round %d (on %s masks): test JA %.4f", r, source, scores["test/jaccard"])
    io.write_json(os.path.join(workdir, "metrics.json"), {"rounds": rows})
    if r == config.rounds:
      break
    state, local, predict, step = runner.process_local_predictor(task, round_dir, mesh)
    rstore = relabel.relabel_store(root, builder.info.full_name, round_dir, step)
    segment = lambda images: task.masks.segment_images(state, images, local, predict)  # noqa: E731
    binarize = lambda prob: task.masks.binarize(prob)[0]  # noqa: E731
    pseudo = {}
    for split in unlabelled:
      summary = relabel.relabel_split(builder, split, rstore, segment, binarize, config.relabel)
      pseudo[split] = {k: summary[k] for k in ("uncertain", "pseudo_mask_jaccard", "pseudo_mask_jaccard_confident")}
    masks = rstore.directory
  figures.save_curves(os.path.join(workdir, "figures", "rounds.png"), _curves(rows, seg.run.train_split),
                      xlabel="round")
  return {"rounds": rows}


def _curves(rows, train_split: str) -> dict[str, list[tuple[int, float]]]:
  curves = {"test JA": [(r["round"], r["test/jaccard"]) for r in rows]}
  trained = [(r["round"], r["pseudo_masks"].get(train_split, {}).get("pseudo_mask_jaccard")) for r in rows]
  if all(v is not None for _, v in trained):
    curves["pseudo-mask JA (training images)"] = trained
  return curves


@base.register
class SelfLearningPipeline(base.Pipeline):
  """Iterative self-learning as a pipeline: `runner.load(workdir)` opens its config.json. Stages:
  one segmentation run per round ("round_<r>"); its prediction on a photo is the U-Net of the
  last round that finished."""
  name = "self_learning"
  config_cls = SelfLearningConfig

  def run(self, workdir: str) -> dict[str, Any]:
    """Every round (each resumable; `run`); returns what metrics.json holds."""
    return run(self.config, workdir)

  def stages(self, workdir: str) -> dict[str, str]:
    return {f"round_{r}": os.path.join(workdir, f"round_{r}") for r in range(self.config.rounds + 1)}

  def predictor(self, workdir: str) -> tuple[base.Task, Any]:
    """(segmentation task, best state) of the last round whose run finished (scored: metrics.json)."""
    done = [d for d in self.stages(workdir).values() if os.path.exists(os.path.join(d, "metrics.json"))]
    if not done:
      raise base.PredictionUnsupported(f"no self-learning round has finished in {workdir}: run the pipeline first")
    task = runner.load(done[-1], segmentation.SegmentationTask)
    return task, runner.restore(task, done[-1], "best")
