r"""An ensemble of finished classifier runs: their saved class probabilities on one split, averaged
(or stacked by a learned combiner, --combine=logistic).

  python -m experiments.ensemble --workdir=runs/ensemble --split=test \
      --members=lenet:runs/lenet,crops:runs/lenet_crops,abcd:runs/abcd,tta:runs/resnet@validation_tta

Members are train_classifier runs (not cross-validated) or abcd_classifier runs: anything whose
predictions.json holds `<split>/_predictions`; name:workdir@<tag> reads the predictions
experiments.evaluate saved with that tag instead (eval_<tag>_predictions.json: --tta, another split),
or predictions.json's `<tag>` ones (an abcd_classifier's out-of-fold @cv). Members are joined by image id
(images missing from some are left out and counted), so a network's selection split (@selection) and a
baseline's out-of-fold Training predictions (@cv) meet on the selection images. One workdir keeps
the scores of one invocation per --split (e.g. --split=selection, then --split=test), merged.
Averaging probabilities selects nothing, so the score on the reported split stays honest as long as
each member's own selection was. Writes
config.json, metrics.json (the ensemble's scores as train_classifier's, and each member's ROC AUC
on the same images), predictions.json, provenance.json (for experiments.report) and
figures/<split>_roc.png (every member and the ensemble, two classes).

--combine=logistic learns the combination instead: a multinomial logistic regression on the
members' log-probabilities (inference.stack_predictions), fitted on --fit_members, the same members
(same names, same order) on the selection split, e.g. `--fit_members=a:runs/a@selection_tta,...`.
Scored on the selection split itself (--members the same images), its probabilities are out of fold
(5-fold stratified cross-validation inside that split; `<split>/out_of_fold`), so the selection
split's score stays comparable with the averages'; on Validation, it is fitted on all of the
selection split first.
"""
import os
import time

from absl import flags, logging
import numpy as np

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io, provenance
from lesion_jax.eval import figures, inference, metrics

FLAGS = flags.FLAGS
common.define_workdir_flag()
flags.DEFINE_list("members", None, "name:workdir of finished classifier runs (train_classifier, abcd_classifier).")
flags.DEFINE_string("split", "test", "Prefix of the saved predictions to average (test, train, ...).")
flags.DEFINE_enum("combine", "mean", ["mean", "logistic"],
                  "mean: the members' probabilities averaged; logistic: a logistic regression on their "
                  "log-probabilities, fitted on --fit_members.")
flags.DEFINE_list("fit_members", None, "With --combine=logistic: name:workdir[@tag] of the same members on the "
                  "selection split, which the combiner is fitted on.")
flags.mark_flag_as_required("members")


def member_predictions(item: str, split: str) -> tuple[str, dict, list[str]]:
  """(name, predictions, class names) of one --members entry: name:workdir (its `split` predictions), or
  name:workdir@<tag>: the predictions experiments.evaluate saved with that tag (eval_<tag>_predictions.json,
  e.g. @validation_tta), else predictions.json's `<tag>` ones (e.g. an abcd_classifier's @cv)."""
  name, sep, where = item.partition(":")
  workdir, at, tag = where.rpartition("@") if "@" in where else (where, "", "")
  if not sep or not name or not workdir or (at and not tag):
    raise config_lib.ConfigError(f"--members={item!r}: give name:workdir or name:workdir@<tag>")
  key = f"{tag or split}/_predictions"
  evaluated = os.path.join(workdir, f"eval_{tag}_predictions.json")
  path = evaluated if tag and os.path.exists(evaluated) else os.path.join(workdir, "predictions.json")
  if not os.path.exists(path):
    raise config_lib.ConfigError(f"--members={item}: {path} not found (not a finished classifier run; a "
                                 "cross-validated run keeps its predictions per fold, in fold_i/)")
  saved = io.read_json(path)
  if key not in saved:
    hint = f"; for {evaluated}, run experiments.evaluate on {workdir} with the options that make that tag" if tag else ""
    raise config_lib.ConfigError(f"--members={item}: {path} has no {tag or split!r} predictions "
                                 f"(it has {sorted(k.split('/')[0] for k in saved)}){hint}")
  scores = io.read_json(os.path.join(workdir, f"eval_{tag}.json" if path == evaluated else "metrics.json"))
  names = scores.get(f"{split}/class_names") or next((v for k, v in scores.items() if k.endswith("/class_names")), None)
  return name, saved[key], names


def merged(path: str, split: str, new: dict) -> dict:
  """`new` over what `path` holds for other splits (one workdir keeps an ensemble's scores on several
  splits, one invocation each, e.g. the selection split and Validation)."""
  old = io.read_json(path) if os.path.exists(path) else {}
  return {k: v for k, v in old.items() if not k.startswith(f"{split}/")} | new


def read_members(items: list[str], flag: str) -> tuple[dict, dict]:
  """({name: predictions}, {name: class names}) of a --members-style list."""
  members, class_names = {}, {}
  for item in items:
    name, predictions, names = member_predictions(item, FLAGS.split)
    if name in members:
      raise config_lib.ConfigError(f"--{flag}: the name {name!r} is given twice")
    members[name], class_names[name] = predictions, names
  if len({tuple(n) for n in class_names.values() if n}) > 1:
    raise config_lib.ConfigError(f"--{flag} predict different classes: {class_names}")
  return members, class_names


def main(argv):
  del argv
  started = time.perf_counter()
  members, class_names = read_members(FLAGS.members, "members")
  if (FLAGS.combine == "logistic") != bool(FLAGS.fit_members):
    raise config_lib.ConfigError("--fit_members goes with --combine=logistic (the split the combiner is fitted on), "
                                 f"and only with it: got --combine={FLAGS.combine} and --fit_members={FLAGS.fit_members}")
  out_of_fold = None
  try:
    if FLAGS.combine == "logistic":
      untagged = [item for item in FLAGS.fit_members if "@" not in item]
      if untagged:  # an untagged member reads --split's predictions: the combiner would be fitted on the scored split
        raise config_lib.ConfigError(f"--fit_members={','.join(untagged)}: give each as name:workdir@<tag>, the "
                                     "tag of its selection-split predictions (e.g. @selection_tta, a baseline's @cv)")
      fit_members, _ = read_members(FLAGS.fit_members, "fit_members")
      ensemble, dropped, out_of_fold = inference.stack_predictions(fit_members, members)
    else:
      ensemble, dropped = inference.average_predictions(members)
  except ValueError as e:
    raise config_lib.ConfigError(f"--members / --fit_members: {e}") from e
  if dropped:
    logging.warning("%d images are missing from some member and left out: %s", len(dropped), dropped[:10])
  names = next((n for n in class_names.values() if n), None)
  labels, probs = np.asarray(ensemble["labels"]), np.asarray(ensemble["probs"])
  common.run_directory(FLAGS.workdir)
  config_path = os.path.join(FLAGS.workdir, "config.json")
  recorded = io.read_json(config_path).get("config", {}) if os.path.exists(config_path) else {}
  if recorded and recorded.get("combine", "mean") != FLAGS.combine:  # one workdir, one way of combining, on every split
    raise config_lib.ConfigError(f"--workdir={FLAGS.workdir} holds a --combine={recorded.get('combine', 'mean')} "
                                 f"ensemble, not --combine={FLAGS.combine}: give this one another workdir")
  by_split = recorded.get("members_by_split", {}) | {FLAGS.split: FLAGS.members}
  fit_by_split = recorded.get("fit_members_by_split", {}) | ({FLAGS.split: FLAGS.fit_members} if FLAGS.fit_members else {})
  io.write_json(config_path, {"task": "ensemble", "config": {"members": FLAGS.members, "split": FLAGS.split,
                                                             "members_by_split": by_split, "combine": FLAGS.combine,
                                                             **({"fit_members_by_split": fit_by_split} if fit_by_split else {})}})
  out = {f"{FLAGS.split}/{k}": v for k, v in metrics.classification_scores(labels, probs, names).items()}
  out[f"{FLAGS.split}/left_out"] = len(dropped)
  if out_of_fold is not None:
    out[f"{FLAGS.split}/out_of_fold"] = out_of_fold
  kept = set(ensemble["ids"])
  curves = {}
  for name, p in members.items():
    rows = [k for k, i in enumerate(p["ids"]) if i in kept]
    member_labels, member_probs = np.asarray(p["labels"])[rows], np.asarray(p["probs"])[rows]
    out[f"{FLAGS.split}/member_roc_auc/{name}"] = metrics.classification_scores(member_labels, member_probs, names)["roc_auc"]
    if probs.shape[1] == 2:
      curves[name] = (member_labels, member_probs[:, 1])
  for file_name, new in (("predictions.json", {f"{FLAGS.split}/_predictions": ensemble}), ("metrics.json", out)):
    path = os.path.join(FLAGS.workdir, file_name)
    io.write_json(path, merged(path, FLAGS.split, new))
  if probs.shape[1] == 2:
    curves["ensemble"] = (labels, probs[:, 1])
    os.makedirs(os.path.join(FLAGS.workdir, "figures"), exist_ok=True)
    figures.save_roc_curve(os.path.join(FLAGS.workdir, "figures", f"{FLAGS.split}_roc.png"), curves)
  provenance.record(FLAGS.workdir, None, {}, time.perf_counter() - started)
  common.print_scores({k: v for k, v in out.items() if isinstance(v, float)})


if __name__ == "__main__":
  common.run(main)
