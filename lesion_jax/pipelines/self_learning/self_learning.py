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

With `scored_on.dataset` (an archive with masks), each round is scored there instead of on the
segmenter's own test split: the self-learned U-Net of a mask-less archive (isic2017/part3_512, whose
run.test_split is "") is scored on another archive's masks, e.g. the ISIC 2017 sample's Training
masks (a part of Training: what settings are chosen on) and Validation masks (reported), as
`<split>/jaccard` per round. Not with `transductive` (its test images are the segmenter's own).

Registered as the `self_learning` pipeline (`SelfLearningPipeline`), so `runner.load(workdir)`
opens its config.json: its stages are the rounds' runs, its predictor the last finished round.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any

from absl import logging

from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.artifacts import annotate, kmeans, relabel, stage
from lesion_jax.data import pipeline
from lesion_jax.eval import figures
from lesion_jax.tasks import base, runner, segmentation
from lesion_jax.train import sharding

ROUND_KEYS = ("jaccard", "jaccard_thresholded", "dice")
STARTS = ("kmeans", "ground_truth")


@dataclasses.dataclass(frozen=True)
class ScoredOn:
  """An archive with masks each round is scored on, when the segmenter's own has none."""
  dataset: str = config_lib.field("", "TFDS dataset[/config] with masks each round is scored on (\"\": the "
                                  "segmenter's own input, at its run.test_split).")
  data_dir: str | None = config_lib.field(None, "Its TFDS data directory (default: the segmenter's).", location=True)
  manual_dir: str | None = config_lib.field(None, "Its hand-downloaded archive.", location=True)
  splits: tuple[str, ...] = config_lib.field(("validation",), "Its splits scored each round (each as <split>/...).")

  def overrides(self, data: pipeline.InputConfig) -> dict[str, Any]:
    """The segmenter's evaluation-time input overrides that read this archive."""
    return {"input.dataset": self.dataset, "input.manual_dir": self.manual_dir,
            "input.data_dir": self.data_dir if self.data_dir is not None else data.data_dir}


@dataclasses.dataclass(frozen=True)
class SelfLearningConfig:
  segmenter: segmentation.SegmenterConfig = segmentation.SegmenterConfig()  # train / val splits: the unlabelled images; test split: scored each round
  kmeans: kmeans.KMeansConfig = kmeans.KMeansConfig()
  relabel: relabel.RelabelConfig = relabel.RelabelConfig()
  rounds: int = 2  # relabelling rounds after the K-means one (0: the paper's single U-Net)
  transductive: bool = False
  start: str = "kmeans"  # round 0's masks: kmeans (no manual mask anywhere) or ground_truth
  artifact_dir: str | None = config_lib.field(None, "Where artifacts live.", location=True)
  scored_on: ScoredOn = ScoredOn()

  def __post_init__(self):  # ConfigError: the experiment reports it as a usage error, before any write
    if self.rounds < 0:
      raise config_lib.ConfigError(f"`rounds`={self.rounds}: must be >= 0")
    if self.start not in STARTS:
      raise config_lib.ConfigError(f"`start`={self.start!r}: must be one of {STARTS}")
    if self.scored_on.dataset and self.transductive:
      raise config_lib.ConfigError(f"`scored_on.dataset`={self.scored_on.dataset!r} with `transductive`: a transductive "
                                   "run relabels its own test images; score it on its own input")
    if self.start == "ground_truth" and not self.transductive:
      raise config_lib.ConfigError("`start`=ground_truth needs `transductive`=true: it relabels the test split's "
                                   "images (every training image already has its manual mask)")


def _round_config(config: SelfLearningConfig, masks: str | None, relabelled: bool = False) -> segmentation.SegmenterConfig:
  seg = config.segmenter
  if masks is None:  # ground_truth, round 0: the supervised run itself
    return seg
  train = f"{seg.run.train_split}+{seg.run.test_split}" if config.transductive else seg.run.train_split
  # A segmenter config of its own may ask for labels=kmeans (round 0's masks, which prepare finds
  # stored); a relabelled round trains on the previous U-Net's masks, so it asks for none.
  labels = "ground_truth" if relabelled else seg.labels
  # From ground truth only the test split's images are relabelled; the training images keep theirs.
  # The rounds' artifacts (crops, K-means) live where the pipeline's do: one root.
  data = dataclasses.replace(seg.input, artifact_dir=config.artifact_dir or seg.input.artifact_dir)
  return dataclasses.replace(seg, input=data, mask_artifacts=masks, labels=labels,
                             run=dataclasses.replace(seg.run, train_split=train),
                             keep_unmatched_masks=config.start == "ground_truth")


def _unlabelled_splits(config: SelfLearningConfig) -> list[str]:
  seg = config.segmenter
  if config.start == "ground_truth":
    return [seg.run.test_split]
  # With run.holdout the selection split is a part of train_split (the runner cuts it), not val_split.
  val = "" if seg.run.holdout else seg.run.val_split
  return [s for s in (seg.run.train_split, val) if s] + ([seg.run.test_split] if config.transductive else [])


def run(config: SelfLearningConfig, workdir: str) -> dict[str, Any]:
  """Every round (each resumable) into `workdir`/round_<r>; writes config.json, metrics.json
  (per round: the pseudo-masks' Jaccard on the training images, for reporting only, and the
  test scores) and figures/rounds.png."""
  mesh = sharding.make_mesh()
  seg = config.segmenter
  data = seg.input
  builder = pipeline.get_builder(data.dataset, data.data_dir, data.manual_dir, field="segmenter.input.dataset")
  # Round 0 of a K-means start trains on pseudo-masks: checked as labels=kmeans (no manual mask needed).
  first = seg if config.start == "ground_truth" else dataclasses.replace(seg, labels="kmeans")
  segmentation.SegmentationTask(first).check(mesh, [("segmenter.run.test_split", seg.run.test_split)])
  runner.write_config(workdir, {"task": "self_learning", "config": config_lib.to_dict(config)}, config)
  root = config.artifact_dir or data.artifact_root()
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
    task = segmentation.SegmentationTask(_round_config(config, masks, relabelled=r > 0))
    start = time.perf_counter()
    scores = runner.run(task, round_dir, mesh=mesh)
    if config.scored_on.dataset:
      scores = _score_elsewhere(task, round_dir, config.scored_on, mesh)
    source = initial if r == 0 else later.format(r - 1)
    scored = config.scored_on.splits if config.scored_on.dataset else ("test",)
    rows.append({"round": r, "trained_on": source, "masks": masks,
                 "pseudo_masks": pseudo,  # per split; Jaccard against ground truth, reporting only
                 "seconds": time.perf_counter() - start,  # this invocation's (a resumed round: what was left)
                 **{f"{prefix}/{k}": scores.get(f"{prefix}/{k}") for prefix in scored for k in ROUND_KEYS}})
    logging.info("self-learning round %d (on %s masks): %s", r, source,
                 ", ".join(f"{prefix} JA {scores[f'{prefix}/jaccard']:.4f}" for prefix in scored))
    io.write_json(os.path.join(workdir, "metrics.json"), {"rounds": rows})
    if r == config.rounds:
      break
    step, segment, binarize = segmentation.segmenter_functions(task, round_dir, mesh)
    rstore = relabel.relabel_store(root, builder.info.full_name, round_dir, step)
    pseudo = {}
    for split in unlabelled:
      summary = relabel.relabel_split(builder, split, rstore, segment, binarize, config.relabel)
      pseudo[split] = {k: summary[k] for k in ("uncertain", "pseudo_mask_jaccard", "pseudo_mask_jaccard_confident")}
    masks = rstore.directory
  figures.save_curves(os.path.join(workdir, "figures", "rounds.png"), _curves(rows, seg.run.train_split),
                      xlabel="round")
  if config.scored_on.dataset:
    elsewhere = task.with_overrides(**config.scored_on.overrides(task.config.input))
    kstore = _score_kmeans_elsewhere(config, elsewhere.builder, root, os.path.join(workdir, "kmeans"))
    _comparison_figure(config.scored_on.splits[-1], task, elsewhere.builder, kstore, round_dir, mesh,
                       os.path.join(workdir, "figures"))
  return {"rounds": rows}


def _score_elsewhere(task: segmentation.SegmentationTask, round_dir: str, scored_on: ScoredOn,
                     mesh) -> dict[str, Any]:
  """A finished round's best checkpoint scored on `scored_on`'s splits, each written to the round's
  eval_<split>.json as `experiments.evaluate` writes it (with what it was scored on, so a resumed
  pipeline reuses it rather than scoring again)."""
  record = config_lib.to_dict(scored_on)
  scores: dict[str, Any] = {}
  elsewhere, state = None, None
  for split in scored_on.splits:
    path = os.path.join(round_dir, f"eval_{stage.split_tag(split)}.json")
    stored = io.read_json(path) if os.path.exists(path) else {}
    if stored.get("scored_on") != record:
      if elsewhere is None:
        elsewhere = task.with_overrides(**scored_on.overrides(task.config.input))
        state = runner.restore(task, round_dir, "best")
      stored = runner.evaluate(elsewhere, state, split, mesh, round_dir, prefix=split)[0]
      stored |= {"split": split, "checkpoint": "best", "scored_on": record}
      io.write_json(path, stored)
    scores.update(stored)
  return scores


def _score_kmeans_elsewhere(config: SelfLearningConfig, builder, root: str, kmeans_dir: str):
  """The K-means pseudo-masks themselves (what round 0 learns from) scored on `scored_on`'s splits of
  `builder` (its archive), into `kmeans_dir`/eval_<split>.json as a round's are (the baseline row of
  the rounds' table); returns their store."""
  scored_on = config.scored_on
  kstore = annotate.kmeans_store(root, builder.info.full_name, config.kmeans)
  for split in scored_on.splits:
    summary = annotate.annotate_split(builder, split, kstore, config.kmeans)
    io.write_json(os.path.join(kmeans_dir, f"eval_{stage.split_tag(split)}.json"),
                  {**{f"{split}/{k}": v for k, v in (summary.scores or {}).items()}, f"{split}/uncertain": summary.uncertain,
                   "split": split, "masks": kstore.directory, "scored_on": config_lib.to_dict(scored_on)})
  return kstore


def _comparison_figure(split: str, task: segmentation.SegmentationTask, builder, kstore, round_dir: str, mesh,
                       fig_dir: str, count: int = 6) -> None:
  """figures/kmeans_vs_selflearned_<split>.png: image | K-means pseudo-mask (from `kstore`, already
  annotated) | the last round's mask | ground truth, for the first `count` examples of `builder`'s
  `split`."""
  examples = list(itertools.islice(stage.read_examples(builder, split, features=("image", task.config.mask_key)), count))
  images = [ex["image"] for ex in examples]
  _, segment, binarize = segmentation.segmenter_functions(task, round_dir, mesh)
  columns = {"image": images,
             "K-means": [kstore.read_mask(ex["id"]) for ex in examples],
             "self-learned U-Net": [binarize(p) for p in segment(images)],
             "ground truth": [ex[task.config.mask_key] for ex in examples]}
  figures.save_column_grid(os.path.join(fig_dir, f"kmeans_vs_selflearned_{stage.split_tag(split)}.png"), columns,
                           titles=[ex["id"] for ex in examples],
                           suptitle=f"{builder.info.full_name} {split}: K-means vs the self-learned U-Net vs truth")


def _curves(rows, train_split: str) -> dict[str, list[tuple[int, float]]]:
  scored = [k[:-len("/jaccard")] for k in rows[0] if k.endswith("/jaccard")]
  curves = {f"{prefix} JA": [(r["round"], r[f"{prefix}/jaccard"]) for r in rows] for prefix in scored}
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

  def predictor(self, workdir: str, predict: str = "predict") -> tuple[base.Task, Any]:
    """(segmentation task, best state) of the last round whose run finished (scored: metrics.json;
    a segmenter fits nothing after training, for any `predict`)."""
    del predict
    done = [d for d in self.stages(workdir).values() if os.path.exists(os.path.join(d, "metrics.json"))]
    if not done:
      raise base.PredictionUnsupported(f"no self-learning round has finished in {workdir}: run the pipeline first")
    task = runner.load(done[-1], segmentation.SegmentationTask)
    return task, runner.restore(task, done[-1], "best")
