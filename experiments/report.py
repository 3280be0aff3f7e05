r"""Writes a results table (docs/results/<page>.md) from finished runs: one row per run with its
numbers and where they come from (config file, command, date, commit, machine, wall time, from each
run's provenance.json). Pages are generated, never edited by hand: re-run this to refresh one.

  python -m experiments.report --out=docs/results/segmentation.md --title="U-Net on synthetic_lesions" \
      --runs=unet:runs/unet,unet_selflearned:runs/unet_selflearned [--metrics=test/jaccard,test/dice]

--runs: label:workdir of runs (any task or pipeline with a metrics.json, or a run scored only by
`experiments.evaluate`); label:workdir+workdir+... makes one row of several runs of one config (seeds): each
number is their mean with its range and count, "0.812 (0.801-0.823, 2 runs)", the wall time their sum (so a
workdir's path may not contain "+"). A row's numbers are its metrics.json and its evaluations: each
eval_<tag>.json that evaluate (or a pipeline scoring its stages the same way) wrote, under `<tag>/`
(eval_validation.json gives validation/jaccard, eval_validation_tta.json validation_tta/jaccard).
--metrics: the columns (default: every number of the first run's metrics.json under test/, else of
its evaluations, at most 8). A pipeline's stage (e.g. runs/sl/round_1) without a provenance.json of
its own shows its pipeline's, marked "(pipeline's)" after the wall time.

A run trained over several invocations (preempted, then resumed) has one row: its first
invocation's config file, command, date and machine (the run as started: a resume runs the same
config), "(resumed N times)" after the command, every commit it was trained from, and the wall time
of all its invocations together, what its numbers cost (provenance.summary; each invocation's own
command, date and time are in its provenance.json).
"""
import datetime
import os
import shlex

from absl import app, flags

from experiments import common
from lesion_jax import io, provenance

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "label:workdir of finished runs, one row each.")
flags.DEFINE_string("out", None, "The markdown page to write (e.g. docs/results/segmentation.md).")
flags.DEFINE_string("title", None, "The page's title (default: the file name).")
flags.DEFINE_list("metrics", None, "Columns: metrics.json keys (default: the first run's test/ numbers, at most 8).")
flags.DEFINE_string("note", "", "A paragraph under the title (what the table compares, on which data).")
flags.DEFINE_string("note_file", None, "A markdown file whose text is the note, instead of --note (the page's "
                    "command then names the file rather than repeating its text).")
for _name in ("runs", "out"):
  flags.mark_flag_as_required(_name)

PROVENANCE_COLUMNS = ("config_file", "command", "date", "commit", "machine", "wall_time_s")


def _evaluations(workdir: str) -> list[str]:
  return sorted(f for f in os.listdir(workdir) if f.startswith("eval_") and f.endswith(".json")) if os.path.isdir(workdir) else []


def parse_runs(items: list[str]) -> list[tuple[str, tuple[str, ...]]]:
  """[(label, workdirs)] of --runs (label:workdir or label:workdir+workdir+...), each workdir checked
  to hold a finished run (or its evaluations)."""
  runs = []
  for item in items:
    label, sep, joined = item.partition(":")
    workdirs = tuple(joined.split("+"))
    if not sep or not label or not all(workdirs):
      raise app.UsageError(f"--runs={item!r}: give label:workdir (or label:workdir+workdir+... for seeds)")
    for workdir in workdirs:
      if not os.path.exists(os.path.join(workdir, "metrics.json")) and not _evaluations(workdir):
        raise app.UsageError(f"--runs={item}: neither {workdir}/metrics.json nor an eval_*.json there "
                             "(not a finished run)")
    runs.append((label, workdirs))
  return runs


def run_scores(workdir: str) -> dict:
  """A run's numbers: metrics.json, and each eval_<tag>.json's under `<tag>/` (an evaluation's own
  keys start with the split it scored, which its tag begins with)."""
  path = os.path.join(workdir, "metrics.json")
  scores = dict(io.read_json(path)) if os.path.exists(path) else {}
  for name in _evaluations(workdir):
    tag = name[len("eval_"):-len(".json")]
    for key, value in io.read_json(os.path.join(workdir, name)).items():
      scores[f"{tag}/{key.split('/', 1)[-1]}"] = value
  return scores


def run_provenance(workdir: str) -> tuple[dict, bool]:
  """(provenance, whether it is the enclosing pipeline's): a pipeline's stages have none of their own."""
  own = provenance.read(workdir)
  if own:
    return own, False
  parent = provenance.read(os.path.dirname(os.path.normpath(workdir)))
  return (parent, True) if parent else ({}, False)


def lookup(scores: dict, key: str):
  """scores[key], or one entry of a dict-valued score: `test/melanoma_specificity_at_sensitivity/0.82`."""
  if key in scores:
    return scores[key]
  head, _, last = key.rpartition("/")
  value = scores.get(head)
  return value.get(last) if isinstance(value, dict) else None


def is_ensemble(workdir: str) -> bool:
  path = os.path.join(workdir, "config.json")
  return os.path.exists(path) and io.read_json(path).get("task") == "ensemble"


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value) -> str:
  if value is None:
    return "—"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value).replace("|", "\\|")


def _seeds_cell(values: list) -> str:
  """One metric over a row's runs: the value where there is one run; the mean, range and count of the
  runs that have it where there are several (a run without it is left out of the count)."""
  if len(values) == 1 or all(v == values[0] for v in values):
    return _cell(values[0])
  numbers = [v for v in values if _number(v)]
  if not numbers:
    return "—" if all(v is None for v in values) else "; ".join(_cell(v) for v in values)
  if len(numbers) == 1:
    return f"{numbers[0]:.4g} (1 run)"
  return f"{sum(numbers) / len(numbers):.4g} ({min(numbers):.3g}-{max(numbers):.3g}, {len(numbers)} runs)"


def row_provenance(workdirs: tuple[str, ...]) -> tuple[dict, bool]:
  """A row's provenance: its run's (run_provenance); for several runs (seeds) the summary of all
  their invocations (provenance.summary: the first's config file, command, date and machine, every
  commit, the wall times summed; none where a run has no record)."""
  loaded = [run_provenance(w) for w in workdirs]
  prov, pipelines = loaded[0]
  if len(loaded) == 1 or not prov:
    return prov, pipelines
  merged = provenance.summary([i for p, _ in loaded for i in provenance.invocations(p)])
  if not all(p for p, _ in loaded):
    merged["wall_time_s"] = None
  return merged, pipelines


def render(title: str, note: str, runs: list[tuple[str, tuple[str, ...]]], metrics: list[str] | None,
           command: str) -> str:
  """The markdown page of `runs` ((label, workdirs): one row each): a table of `metrics` and each row's
  provenance."""
  loaded = [(label, [run_scores(w) for w in workdirs], *row_provenance(workdirs)) for label, workdirs in runs]
  first = loaded[0][1][0]
  columns = metrics or ([k for k, v in first.items() if k.startswith("test/") and _number(v)]
                        or [k for k, v in first.items() if _number(v)])[:8]
  header = ["run", *columns, *PROVENANCE_COLUMNS]
  lines = [f"# {title}", "",
           f"Generated by `{command}` on {datetime.date.today().isoformat()}; do not edit by hand "
           "(re-run the command to refresh it). Each row's numbers come from its run's metrics.json and "
           "eval_<tag>.json files (columns `<tag>/...`), the columns after them from its provenance.json "
           "(written by `experiments.train`; — where the run predates it).", ""]
  if note:
    lines += [note, ""]
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for (label, scores, prov, pipelines), (_, workdirs) in zip(loaded, runs):
    cells = [label, *(_seeds_cell([lookup(s, k) for s in scores]) for k in columns),
             *(f"`{prov[k]}`" if k in ("config_file", "command") and prov.get(k) else _cell(prov.get(k))
               for k in PROVENANCE_COLUMNS)]
    more = len(provenance.invocations(prov)) - 1
    command_cell = 1 + len(columns) + PROVENANCE_COLUMNS.index("command")
    if more and len(workdirs) == 1:  # a run resumed (train), or an ensemble scored on one more split per invocation
      cells[command_cell] += (f" (and {more} more: one per split)" if is_ensemble(workdirs[0])
                              else f" (resumed {more} time{'s' * (more > 1)})")
    elif len(workdirs) > 1 and prov:
      cells[command_cell] += f" (the first of {len(workdirs)} runs: {', '.join(workdirs)})"
    if pipelines:
      cells[-1] += " (pipeline's)"
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  runs = parse_runs(FLAGS.runs)
  note = FLAGS.note
  if FLAGS.note_file:
    if note:
      raise ValueError("--note and --note_file: give the note one way")
    try:
      with open(FLAGS.note_file, encoding="utf-8") as f:
        note = f.read().strip()
    except OSError as e:
      raise ValueError(f"--note_file={FLAGS.note_file}: cannot read it ({e.strerror})") from None
  command = "python -m experiments.report " + " ".join(
      f"--{name}={shlex.quote(','.join(v) if isinstance(v, list) else v)}"
      for name in ("out", "title", "runs", "metrics", "note", "note_file") if (v := FLAGS[name].value))
  text = render(FLAGS.title or os.path.splitext(os.path.basename(FLAGS.out))[0], note, runs, FLAGS.metrics,
                command)
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  io.atomic_write_bytes(FLAGS.out, text.encode())
  print(text)


if __name__ == "__main__":
  common.run(main)
