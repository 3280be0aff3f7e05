r"""Scores a trained model from its workdir, on any split, with the task's figures.

  python -m experiments.evaluate --workdir=runs/unet [--split=test] [--checkpoint=best] [--tta] \
      [--tta_scales=128,160] [--fallback] [--refine=superpixel] [--config.<field>=<value>]

--config.<field>=<value> changes one of the run's evaluation-time fields (its task's
`evaluation_overrides`: post-processing, test scales, what it reads at test time; never what it
learnt), e.g. --config.threshold=0.4 or --config.test_scales=64,96; other fields are refused by name.

Works for every task's workdir (segmenter, classifier, ...): the task and its config come from
the run's config.json, so the scores equal those in metrics.json. Writes eval_<split>.json and
figures/eval_<split>_*.png; a classifier's per-image probabilities go to eval_<split>_predictions.json (what
experiments.ensemble averages). With --tta, a segmenter's probabilities are averaged over the four
flips of each image, at each of --tta_scales (files end in _tta[_s<scales>]), a classifier's over the eight
flips and quarter turns. With --fallback,
catastrophic masks (empty, or the whole field of view) are replaced (files end in _fallback). With --refine=superpixel (segmentation), each map is
refined on SLIC superpixels first (eval/superpixel_refine.py; files end in _superpixel; the
superpixels of the split are computed and stored on first use). With --ensemble_with
(segmentation), the maps of other runs of the same configuration (other --seed) are averaged with
this run's before any post-processing (a classifier's: its probabilities), and the scores are the
ensemble's (files end in _ens<N>).
"""
import os

from absl import app, flags

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.artifacts import stage
from lesion_jax.tasks import base, runner

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a training run (any task).")
flags.mark_flag_as_required("workdir")
flags.DEFINE_string("split", "test", "Split to score (train, validation, test, a TFDS slice, or selection: the "
                    "split the run picked its checkpoint on, e.g. its --holdout part).")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
common.define_tta_flags()
flags.DEFINE_enum("refine", None, ["none", "superpixel"],
                  "Segmentation: post-processing before scoring (default: the run's own --refine).")
flags.DEFINE_list("ensemble_with", [], "Segmentation or classification: workdirs of other runs of this run's configuration (only "
                  "--seed differs); their probability maps are averaged with this run's, each at --checkpoint.")


def _without_seed(task) -> dict:
  record = config_lib.to_dict(task.config)
  record["input"] = {k: v for k, v in record["input"].items() if k != "seed"}
  return record


def ensemble_states(recorded, state, workdirs: list[str], which) -> tuple:
  """(state, *the states of `workdirs`): runs whose recorded config is `recorded`'s (this run's
  task as its config.json gives it, before this command's overrides) but for the seed."""
  if not recorded.averages_outputs:
    raise config_lib.ConfigError(f"--ensemble_with: a {recorded.name!r} run's predictions cannot be averaged "
                                 "(probabilities can: segmenters', classifiers'; saved predictions of any runs: experiments.ensemble)")
  ours = _without_seed(recorded)
  states = [state]
  for workdir in workdirs:
    member = runner.load(workdir)
    if member.name != recorded.name:
      raise config_lib.ConfigError(f"--ensemble_with={workdir}: a {member.name!r} run, not {recorded.name!r}")
    theirs = _without_seed(member)
    if theirs != ours:
      differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
      raise config_lib.ConfigError(f"--ensemble_with={workdir}: not a run of the configuration of {FLAGS.workdir} "
                                   f"(it differs in {differ}; only --seed may)")
    states.append(runner.restore(member, workdir, which))
  return tuple(states)


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_library_logs()
  task = recorded = runner.load(FLAGS.workdir)
  common.register_command_config(task.config)  # --config.<field> sets its evaluation-time fields
  if isinstance(task, base.Pipeline):
    raise app.UsageError(f"--workdir={FLAGS.workdir} holds a {task.name!r} pipeline: evaluate one of its runs "
                         f"({', '.join(task.stages(FLAGS.workdir).values())})")
  if FLAGS.refine is not None:
    task = task.with_overrides(refine=FLAGS.refine)
  task = common.with_segmentation_overrides(task, FLAGS.tta_scales, FLAGS.fallback)
  if common.CONFIG_OVERRIDES:  # --config.<field>=<value>: the run's evaluation-time fields
    try:
      task = task.with_overrides(**{k: config_lib.parse_text(v, config_lib.field_type(type(task.config), k), k)
                                    for k, v in common.CONFIG_OVERRIDES.items()})
    except config_lib.ConfigError as e:
      raise app.UsageError(str(e)) from None
  which = common.checkpoint_flag_value(FLAGS.checkpoint)
  state = runner.restore(task, FLAGS.workdir, which)
  if FLAGS.ensemble_with:
    state = ensemble_states(recorded, state, FLAGS.ensemble_with, which)
  else:  # what the run fitted after training (a classifier's temperature) is this run's, not an ensemble's
    task = task.with_post_hoc(FLAGS.workdir, which, "tta" if FLAGS.tta else "predict")
  split, name = FLAGS.split, FLAGS.split
  if split == "selection":
    split = task.val_split
    if not split:
      raise app.UsageError(f"--split=selection: the run in {FLAGS.workdir} selected on no split (--val_split=)")
  tag = name.replace("[", "_").replace("]", "").replace(":", "-").replace("%", "pct")
  tag = tag if len(tag) <= 48 else stage.split_tag(name)
  tag += "_tta" if FLAGS.tta else ""
  tag += "_s" + "-".join(str(x) for x in task.config.tta_scales) if FLAGS.tta and getattr(task.config, "tta_scales", ()) else ""
  tag += "_fallback" if getattr(task.config, "fallback", False) else ""
  tag += "_superpixel" if getattr(task.config, "refine", "none") == "superpixel" else ""
  tag += f"_ens{len(state)}" if FLAGS.ensemble_with else ""
  scores, result = runner.evaluate(task, state, split, workdir=FLAGS.workdir, prefix=f"eval_{tag}",
                                   predict="tta" if FLAGS.tta else "predict", ensemble=bool(FLAGS.ensemble_with))
  if result.predictions:  # per-image probabilities, for experiments.ensemble (--members=name:workdir@<tag>)
    io.write_json(os.path.join(FLAGS.workdir, f"eval_{tag}_predictions.json"), {f"{tag}/_predictions": result.predictions})
  scores = {k.replace(f"eval_{tag}/", f"{name}/"): v for k, v in scores.items()}
  scores["split"] = split
  if split == task.val_split:  # as runner.run labels it
    scores[f"{name}/used_for_selection"] = True
  scores["checkpoint"] = FLAGS.checkpoint
  scores["tta"] = FLAGS.tta
  scores["tta_scales"] = list(getattr(task.config, "tta_scales", ())) if FLAGS.tta else []
  scores["fallback"] = getattr(task.config, "fallback", None)
  scores["refine"] = getattr(task.config, "refine", None)
  scores["ensemble_with"] = list(FLAGS.ensemble_with)
  io.write_json(os.path.join(FLAGS.workdir, f"eval_{tag}.json"), scores)
  common.print_scores(scores)


if __name__ == "__main__":
  common.run_verb(main)
