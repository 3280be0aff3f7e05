"""The Lesion Indexing Network (Li and Shen 2018) as a pipeline: the DR and DM FCRN runs (each an
ordinary `lesion_index` run, task.py), their maps summed. `LesionIndexNetwork`'s config names the
member runs; `run` writes the paper's Tables III-V (as experiments/lesion_index_report.py asks);
`predictor` sums the members' maps on photos.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

from lesion_jax import config as config_lib
from lesion_jax import io, run_lock
from lesion_jax.config import field
from lesion_jax.data import selection
from lesion_jax.pipelines.lesion_index import task as fcrn  # the module: it imports this package's registry first
from lesion_jax.tasks import base, runner
from lesion_jax.train import sharding

@dataclasses.dataclass(frozen=True)
class LesionIndexNetworkConfig:
  """The LIN (Li and Shen 2018): the FCRN runs whose maps it sums (each an ordinary
  train_lesion_index run), and what its report scores."""
  dr_workdir: str = field("", "The FCRN run trained on DR (--augmentation=dr).", location=True)
  dm_workdir: str = field("", "The FCRN run trained on DM (--augmentation=dm).", location=True)
  dr_dm_workdir: str | None = field(None, "Optional: one FCRN run trained on DR + DM (a row of Table III; "
                                    "not a member of the LIN).", location=True)
  split: str = field("test", "Split the report scores (never one used for selection), or `selection`: the FCRN "
                     "runs' own selection split (run.val_split / run.holdout; both must share it), to compare "
                     "the LIN with other runs selected there.")
  checkpoint: str = field("best", "Checkpoint of every run: 'best', 'latest' or a step number.")


SELECTION = "selection"  # `split`: the members' own selection split
SEGMENTATION_KEYS = ("jaccard", "jaccard_thresholded", "dice", "accuracy", "sensitivity", "specificity", "hd95",
                     "boundary_f")
INDEX_KEYS = ("licu_melanoma_auc", "licu_melanoma_ap", "licu_keratosis_auc", "licu_mean_auc")


class LesionIndexNetworkTask(base.Task):
  """The LIN's predictor: its members' (DR, DM) FCRN tasks, with a tuple of their states as its
  state; every output is the sum of the members' native maps (each member at its own test scales,
  batch size and model), as `fcrn.evaluate_members` scores it.

  Why not `Task.jit_predict(..., ensemble=True)` (the mean over a tuple of states in one program):
  the mean of the maps would give the same mask and indices as their sum, since `lesion_mask`
  compares the background with half of the maps' own total and the LICU normalises every pixel's
  class scores (eq. 1) and weighs by the mask alone, so neither depends on the maps' scale. But
  that mechanism runs one predict function (one config: one model, one set of test scales) over
  states of that config, while the LIN's members are separate runs whose configs may differ (their
  test scales, width or variant); and the LIN's rule is the sum. So each member predicts with its
  own task, and the maps are summed at each photo's resolution."""
  name = "lesion_index_network"
  config_cls = LesionIndexNetworkConfig
  predicts = frozenset({"mask", "probabilities"})

  def predict_fns(self):
    return {}  # its members' predict functions run, each at its own scales (predict_images, evaluate)

  def __init__(self, config: LesionIndexNetworkConfig, members: Sequence[fcrn.LesionIndexTask]):
    super().__init__(config)
    if not members:
      raise ValueError("the LIN needs at least one member")
    self.members = tuple(members)

  @property
  def class_names(self) -> list[str]:
    return self.members[0].class_names

  @property
  def batch_size(self) -> int:
    return self.members[0].batch_size

  def jit_predict(self, state, mesh, name="predict", ensemble=False) -> tuple[Callable, ...]:
    """Each member's jitted predict function, for its own state (`state` is their tuple)."""
    if ensemble:
      raise ValueError("the LIN sums its members' maps; it is not an ensemble of one configuration")
    return tuple(t.jit_predict(s, mesh, name) for t, s in zip(self.members, state))

  def evaluate(self, state, split, mesh, predict=None, keep_examples=0) -> base.Evaluation:
    predict = predict or self.jit_predict(state, mesh)
    return fcrn.evaluate_members(list(zip(self.members, state, predict)), split, mesh, keep_examples)

  def write_figures(self, evaluation, fig_dir, prefix) -> None:
    self.members[0].write_figures(evaluation, fig_dir, prefix)

  def predict_images(self, state, images, predict="predict") -> list[dict[str, Any]]:
    """Per photo: "mask" and "probabilities" (the LICU index per diagnosis, summing to 1) of the
    sum of the members' maps, as `fcrn.LesionIndexTask.predict_images` gives them for one FCRN."""
    summed = None
    for task, member_state in zip(self.members, state):
      maps = task.image_maps(member_state, images, predict=predict)
      summed = maps if summed is None else [a + b for a, b in zip(summed, maps)]
    return fcrn.index_records(summed)


def _checkpoint(value: str) -> int | str:
  if value.isdigit():
    return int(value)
  if value not in ("best", "latest"):
    raise config_lib.ConfigError(f"`checkpoint`={value!r}: give 'best', 'latest' or a step number")
  return value


@base.register
class LesionIndexNetwork(base.Pipeline):
  """The LIN = the FCRN on DR + the FCRN on DM, their maps summed. `run` scores it (and its
  members, and the LIN at the training scale) into the paper's Tables III-V; `predictor` gives
  the LesionIndexNetworkTask that predicts on photos."""
  name = "lesion_index_network"
  config_cls = LesionIndexNetworkConfig

  def stages(self, workdir: str) -> dict[str, str]:
    """The runs it reads (not trained by it: they are train_lesion_index runs of their own)."""
    del workdir
    c = self.config
    return {"dr": c.dr_workdir, "dm": c.dm_workdir, **({"dr_dm": c.dr_dm_workdir} if c.dr_dm_workdir else {})}

  def scored_split(self) -> str:
    """`split`, with `selection` resolved to the split the members selected their checkpoints on."""
    if self.config.split != SELECTION:
      return self.config.split
    splits = {stage: runner.load(workdir, fcrn.LesionIndexTask, f"{stage}_workdir").val_split
              for stage, workdir in self.stages("").items()}
    if not all(splits.values()) or len(set(splits.values())) != 1:
      raise config_lib.ConfigError(
          "`split`=selection: the FCRN runs must have selected on one split; they selected on "
          + ", ".join(f"{stage}: {selection.split_name(s) if s else 'none'}" for stage, s in splits.items()))
    return splits["dr"]

  def check(self) -> None:
    """Refuses, before anything is written or restored, members that are missing or not FCRN runs."""
    c = self.config
    _checkpoint(c.checkpoint)
    for name in ("dr_workdir", "dm_workdir"):
      if not getattr(c, name):
        raise config_lib.ConfigError(f"`{name}`: the LIN needs its DR and DM FCRN runs")
    split = self.scored_split()
    for stage, workdir in self.stages("").items():
      task = runner.load(workdir, fcrn.LesionIndexTask, f"{stage}_workdir")
      base.check_split(task.builder, split, "split")

  def member(self, stage: str, mesh=None) -> tuple[fcrn.LesionIndexTask, Any]:
    """(task, state) of one stage's run, at the configured checkpoint."""
    workdir = self.stages("")[stage]
    task = runner.load(workdir, fcrn.LesionIndexTask, f"{stage}_workdir")
    return task, runner.restore(task, workdir, _checkpoint(self.config.checkpoint), mesh)

  def predictor(self, workdir: str, predict: str = "predict") -> tuple[LesionIndexNetworkTask, tuple[Any, ...]]:
    """The LIN on photos: the DR and DM members' maps summed (`LesionIndexNetworkTask`; nothing
    fitted after training)."""
    del workdir, predict
    members = [self.member(stage) for stage in ("dr", "dm")]
    return LesionIndexNetworkTask(self.config, [t for t, _ in members]), tuple(s for _, s in members)

  def run(self, workdir: str) -> dict[str, Any]:
    """Scores the LIN, its members and the LIN at the training scale on `split`; writes
    config.json, report.md (Tables III-V), report.json and metrics.json (`<row>/<score>`, rows
    fcrn_dr, fcrn_dm, [fcrn_dr_dm,] lin, lin_single_scale; the lin row again as test/). Returns
    the metrics."""
    self.check()
    mesh = sharding.make_mesh()
    with run_lock.hold(workdir):
      runner.write_config(workdir, self.describe(), self.config)
      results, text = lin_report(self, mesh)
      c = self.config
      split = self.scored_split()
      io.write_json(os.path.join(workdir, "report.json"),
                    {"split": split, "workdirs": {"dr": c.dr_workdir, "dm": c.dm_workdir, "dr_dm": c.dr_dm_workdir},
                     "results": results})
      io.atomic_write_bytes(os.path.join(workdir, "report.md"), text.encode())
      metrics_ = {f"{row}/{k}": v for row, scores in results.items() for k, v in scores.items()}
      # The LIN's own scores also under its split's role, test/ (the reported split, as runner.run
      # names it) or selection/, so a LIN run is a row of the tables that compare runs there (e.g.
      # ISIC 2017 Task 3's) and a selection-split score never reads as a reported one.
      role = SELECTION if c.split == SELECTION else "test"
      metrics_.update({f"{role}/{k}": v for k, v in results["lin"].items()})
      metrics_["split"] = metrics_[f"{role}/split"] = split
      io.write_json(os.path.join(workdir, "metrics.json"), metrics_)
    return metrics_


def lin_report(lin: LesionIndexNetwork, mesh) -> tuple[dict[str, dict[str, Any]], str]:
  """(scores per row, report.md) of the paper's Table III (the FCRN on DR, on DM, on DR + DM if
  given, and the LIN, each at its multi-scale test setting), Table IV (the LIN at the training
  scale only vs at every test scale) and Table V (the LIN's melanoma and seborrheic keratosis
  index without and with the LICU)."""
  split = lin.scored_split()
  dr, dm = lin.member("dr", mesh), lin.member("dm", mesh)

  def score(members):
    return fcrn.evaluate_members([(t, s, t.jit_predict(s, mesh)) for t, s in members], split, mesh).scores

  scales = dr[0].config.test_scales
  single = (dr[0].config.input.image_size,)
  results = {"fcrn_dr": score([dr])}
  if lin.config.dr_dm_workdir:
    results["fcrn_dr_dm"] = score([lin.member("dr_dm", mesh)])
  results["lin"] = score([dr, dm])
  results["lin_single_scale"] = score([(t.with_overrides(test_scales=tuple(single)), s) for t, s in (dr, dm)])
  results["fcrn_dm"] = score([dm])
  names = {"fcrn_dr": "FCRN on DR", "fcrn_dm": "FCRN on DM", "fcrn_dr_dm": "FCRN on DR + DM",
           "lin": f"LIN (DR + DM FCRNs), scales {list(scales)}", "lin_single_scale": f"LIN, scale {list(single)}"}
  table3 = [(names[k], results[k]) for k in ("fcrn_dr", "fcrn_dm", "fcrn_dr_dm", "lin") if k in results]
  table4 = [(names[k], results[k]) for k in ("lin_single_scale", "lin")]
  table5 = [("without LICU", {k.replace("mean_", "x_", 1): v for k, v in results["lin"].items() if k.startswith("mean_")}),
            ("with LICU", {k.replace("licu_", "x_", 1): v for k, v in results["lin"].items() if k.startswith("licu_")})]
  v_keys = ("x_melanoma_auc", "x_melanoma_ap", "x_keratosis_auc", "x_mean_auc")
  text = (f"# Lesion Indexing Network on `{dr[0].config.input.dataset}` {selection.split_name(split)}\n\n"
          f"## Table III: FCRNs and the LIN\n\n{_table(table3, SEGMENTATION_KEYS + INDEX_KEYS)}\n"
          f"## Table IV: test scales\n\n{_table(table4, SEGMENTATION_KEYS + INDEX_KEYS)}\n"
          f"## Table V: the LICU\n\n{_table(table5, v_keys).replace('x_', '')}")
  return results, text


def _table(rows, keys) -> str:
  head = "| | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
  fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
  return head + "".join(f"| {name} | " + " | ".join(fmt(r.get(k)) for k in keys) + " |\n" for name, r in rows)
