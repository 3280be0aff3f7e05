"""The verbs over config files: every config in experiments/configs loads and takes dotted
overrides (unknown fields refused by name); `train` on tiny data records provenance.json (every
invocation of a resumed run); `report` renders a docs/results page from it; every
`experiments.train --config=...` command in README and docs names a config that exists and
overrides that apply; library errors name fields, which the verbs spell as the options typed."""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from lesion_jax import config as config_lib
from lesion_jax.tasks import base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "experiments", "configs", "*", "*.py")))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")


def _load(path):
  from experiments import common  # pylint: disable=g-import-not-at-top
  return common.load_config_file(path)


def _run_field(config) -> str | None:
  """The dotted path of a config's num_steps (a task's run, or a pipeline's first stage's)."""
  for path in ("run.num_steps", "segmenter.run.num_steps"):
    try:
      config_lib.field_type(type(config), path)
      return path
    except config_lib.ConfigError:
      pass
  return None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "experiments", "configs")))
def test_every_config_file_loads_and_takes_overrides(path):
  config = _load(path)
  run = base.for_config(config)
  assert run.config is config
  doc = open(path).read()
  assert "python -m experiments.train --config=experiments/configs/" in doc and "Wall time" in doc and "docs/results/" in doc
  steps = _run_field(config)
  if steps:
    changed = config_lib.override(config, {steps: "3"})
    node = changed
    for part in steps.split("."):
      node = getattr(node, part)
    assert node == 3
  with pytest.raises(config_lib.ConfigError, match="no_such_field"):
    config_lib.override(config, {"no_such_field": "1"})


def _commands_in_docs():
  files = [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True),
           *CONFIGS]
  found = []
  for name in files:
    text = open(name).read().replace("\\\n", " ")
    for line in text.splitlines():
      if "python -m experiments.train " in line and "--config=" in line:
        start = line.index("python -m experiments.train")
        command = line[start:]
        if start and line[start - 1] == "`":  # inline code (a table cell): the command ends at its backquote
          command = command.split("`")[0]
        found.append((os.path.relpath(name, REPO), command.strip(" `")))
  return found


def test_every_documented_train_command_names_a_config_and_applies_its_overrides():
  commands = _commands_in_docs()
  assert len(commands) >= len(CONFIGS)  # every config documents its own command
  for where, command in commands:
    args = shlex.split(re.sub(r"\[|\]", " ", command.split("#")[0]))
    config_arg = next(a for a in args if a.startswith("--config="))
    if "<" in config_arg:  # a template (docs/adding_a_pipeline.md), not a command to run
      continue
    path = os.path.join(REPO, config_arg.split("=", 1)[1])
    assert os.path.exists(path), (where, command)
    overrides = dict(a[len("--config."):].split("=", 1) for a in args if a.startswith("--config."))
    config_lib.override(_load(path), overrides)  # raises on a field that does not exist


def _train_tiny_unet(workdir, data_dir, dataset, *more):
  """The train verb on unet.py, made tiny (2 steps of a 4-feature U-Net on the tiny set), plus `more` overrides."""
  args = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/segmentation/unet.py",
          f"--workdir={workdir}", f"--config.input.dataset={dataset}", f"--config.input.data_dir={data_dir}",
          "--config.input.image_size=32", "--config.input.batch_size=8", "--config.model.features=4",
          "--config.model.levels=2", "--config.run.num_steps=2", "--config.run.eval_every=2", "--config.run.log_every=2",
          "--config.summary_images=0", *more]
  proc = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tiny_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("unet"))
  _train_tiny_unet(workdir, tiny_data_dir, tiny_dataset)
  return workdir


def test_train_records_where_its_numbers_come_from(trained):
  record = json.load(open(os.path.join(trained, "config.json")))
  assert record["task"] == "segmentation" and record["config"]["run"]["num_steps"] == 2
  prov = json.load(open(os.path.join(trained, "provenance.json")))
  assert prov["config_file"] == "experiments/configs/segmentation/unet.py"
  assert prov["overrides"]["run.num_steps"] == "2" and prov["wall_time_s"] > 0
  assert prov["commit"] and prov["machine"] and "experiments.train" in prov["command"]


def test_a_resumed_run_keeps_every_invocation_and_report_shows_the_first_and_the_total(
    trained, tiny_data_dir, tiny_dataset, tmp_path):
  from lesion_jax import provenance  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "unet")
  shutil.copytree(trained, workdir)
  first = json.load(open(os.path.join(workdir, "provenance.json")))
  _train_tiny_unet(workdir, tiny_data_dir, tiny_dataset, "--config.run.num_steps=4")  # resumes at step 2
  prov = json.load(open(os.path.join(workdir, "provenance.json")))
  runs = prov["invocations"]
  assert [r["overrides"]["run.num_steps"] for r in runs] == ["2", "4"] and all(r["finished"] for r in runs)
  assert runs[0] == first["invocations"][0]  # the first invocation is kept as it was recorded
  assert (prov["command"], prov["overrides"], prov["date"]) == (runs[0]["command"], runs[0]["overrides"], runs[0]["date"])
  assert prov["wall_time_s"] == round(runs[0]["wall_time_s"] + runs[1]["wall_time_s"], 1) > runs[1]["wall_time_s"]
  out = tmp_path / "page.md"
  proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--runs=resumed:{workdir}", f"--out={out}",
                         "--metrics=test/jaccard"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = next(line for line in out.read_text().splitlines() if line.startswith("| resumed"))
  assert f"`{runs[0]['command']}` (resumed 1 time)" in row and f"| {prov['wall_time_s']:.4g} |" in row
  # A record written before invocations were kept is its own first invocation, and is kept.
  older = tmp_path / "older"
  older.mkdir()
  flat = {k: first["invocations"][0][k] for k in ("config_file", "overrides", "command", "date", "commit", "machine",
                                                  "wall_time_s")}
  (older / "provenance.json").write_text(json.dumps(flat))
  again = provenance.record(str(older), flat["config_file"], {}, 5.0, command=["python", "-m", "experiments.train"],
                            code="abc123", finished=False)
  assert [r["command"] for r in again["invocations"]] == [flat["command"], "python -m experiments.train"]
  assert again["commit"] == f"{flat['commit']}, abc123" and again["wall_time_s"] == round(flat["wall_time_s"] + 5.0, 1)
  assert [r["finished"] for r in again["invocations"]] == [True, False]


def test_a_mistyped_override_is_refused_by_name_before_anything_is_written(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.train", "--config=experiments/configs/segmentation/unet.py",
                         f"--workdir={tmp_path / 'run'}", "--config.model.featurs=4"], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode != 0 and "model.featurs" in proc.stderr and "did you mean --config.model.features?" in proc.stderr
  assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "run")


def test_overriding_the_optimizer_brings_its_own_defaults_unless_they_are_overridden_too():
  from experiments import common  # pylint: disable=g-import-not-at-top
  lenet = os.path.join(REPO, "experiments", "configs", "classification", "lenet.py")
  adam = common.config_from_file(lenet, {}).optimizer
  assert adam.name == "adam" and adam.learning_rate == 1e-3
  sgd = common.config_from_file(lenet, {"optimizer.name": "sgd"}).optimizer  # AlexNet's recipe, as train_classifier
  assert (sgd.name, sgd.learning_rate, sgd.momentum, sgd.weight_decay) == ("sgd", 1e-2, 0.9, 5e-4)
  assert sgd.warmup_steps == adam.warmup_steps  # a field SGD has no default of its own for keeps the file's
  given = common.config_from_file(lenet, {"optimizer.name": "sgd", "optimizer.learning_rate": "0.001"}).optimizer
  assert (given.learning_rate, given.weight_decay) == (1e-3, 5e-4)  # an override wins over the default
  unet = os.path.join(REPO, "experiments", "configs", "segmentation", "unet.py")
  assert common.config_from_file(unet, {"optimizer.name": "sgd"}).optimizer.learning_rate == (
      common.config_from_file(unet, {}).optimizer.learning_rate)  # a task without such defaults is as overridden


def test_a_library_error_names_the_field_and_a_verb_names_the_option_typed(tmp_path, monkeypatch):
  from experiments import common  # pylint: disable=g-import-not-at-top
  from lesion_jax.pipelines.self_learning import two_stage  # pylint: disable=g-import-not-at-top
  from lesion_jax.tasks import segmentation  # pylint: disable=g-import-not-at-top
  config = config_lib.override(segmentation.SegmenterConfig(), {"model.name": "unet", "input.image_size": "50"})
  with pytest.raises(config_lib.ConfigError) as refused:
    segmentation.SegmentationTask(config).check(None)  # refused before the data or the mesh are read
  message = str(refused.value)
  assert message.startswith("`input.image_size`=50: a U-Net with `model.levels`=4 needs a multiple of 16")
  assert "--" not in message
  assert [m.group(1) for m in config_lib.FIELD_NAME.finditer(message)] == ["input.image_size", "model.levels"]
  # In a verb: fields of the command's config become --config.<field>; a misspelt key the user
  # typed stays as typed; a name the command's config has not (a pipeline stage's own field) and
  # that is no option of the program keeps the library's spelling.
  monkeypatch.setattr(common, "_COMMAND_CONFIG", [two_stage.TwoStageConfig()])
  monkeypatch.setattr(common, "CONFIG_OVERRIDES", {"segmenter.run.num_stepz": "3"})
  assert common.as_options("`segmenter.input.image_size`=50: x; `segmenter.run.num_stepz`: no such config key; "
                           "`input.image_size`=50") == ("--config.segmenter.input.image_size=50: x; "
                                                        "--config.segmenter.run.num_stepz: no such config key; "
                                                        "`input.image_size`=50")
  # Through the command line, end to end: one line naming the options, nothing written.
  proc = subprocess.run([sys.executable, "-m", "experiments.train", "--config=experiments/configs/segmentation/unet.py",
                         f"--workdir={tmp_path / 'run'}", "--config.input.image_size=50"], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode != 0, proc.stderr[-2000:]
  assert "--config.input.image_size=50: a U-Net with --config.model.levels=4 needs a multiple of 16" in proc.stderr
  assert "`" not in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "run")


def test_report_renders_a_results_page_from_runs(trained, tmp_path):
  out = tmp_path / "docs" / "results" / "tiny.md"
  note = tmp_path / "note.md"
  note.write_text("Both rows are **tiny**.\n")
  proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--runs=tiny unet:{trained}", f"--out={out}",
                         "--title=Tiny U-Net", "--metrics=test/jaccard,test/dice", f"--note_file={note}"], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  page = out.read_text()
  metrics = json.load(open(os.path.join(trained, "metrics.json")))
  row = next(line for line in page.splitlines() if line.startswith("| tiny unet"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1] == f"{metrics['test/jaccard']:.4g}" and cells[2] == f"{metrics['test/dice']:.4g}"
  assert "`experiments/configs/segmentation/unet.py`" in row and "do not edit by hand" in page
  assert "python -m experiments.report" in page
  # The note's text is under the title once; the command names its file.
  assert page.count("Both rows are **tiny**.") == 1 and f"--note_file={note}" in page


def test_the_artifacts_verb_computes_once_and_resumes(tiny_data_dir, tiny_dataset, tmp_path):
  args = [sys.executable, "-m", "experiments.artifacts", "--kind=kmeans", "--splits=test",
          f"--config.input.dataset={tiny_dataset}", f"--config.input.data_dir={tiny_data_dir}",
          f"--config.input.artifact_dir={tmp_path}", "--config.kmeans.k=3"]
  first = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "test: 16 images (16 computed" in first.stdout and str(tmp_path) in first.stdout
  again = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)
  assert "test: 16 images (0 computed" in again.stdout and "16 reused" in again.stdout
  bad = subprocess.run(args[:4] + ["--config.kmeans.kk=3"], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300, check=False)
  assert bad.returncode != 0 and "kmeans.kk" in bad.stderr and "Traceback" not in bad.stderr


def test_report_reads_evaluations_and_a_stage_shows_its_pipelines_provenance(tmp_path):
  pipeline_dir = tmp_path / "sl"
  stage = pipeline_dir / "round_1"
  stage.mkdir(parents=True)
  provenance_record = {"config_file": "experiments/configs/pipelines/self_learning_isic2017.py",
                       "command": "python -m experiments.train --config=x", "wall_time_s": 12.5}
  (pipeline_dir / "provenance.json").write_text(json.dumps(provenance_record))
  # A stage scored only by evaluations (as evaluate, or the self-learning pipeline's scored_on, writes them).
  (stage / "eval_validation.json").write_text(json.dumps({"validation/jaccard": 0.7, "split": "validation"}))
  (stage / "eval_validation_tta.json").write_text(json.dumps({"validation/jaccard": 0.72, "split": "validation",
                                                               "validation/at": {"0.82": 0.5}}))
  out = tmp_path / "page.md"
  proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--runs=round 1:{stage}", f"--out={out}",
                         "--metrics=validation/jaccard,validation_tta/jaccard,validation_tta/at/0.82,validation_tta/at/0.9"],
                        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = next(line for line in out.read_text().splitlines() if line.startswith("| round 1"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1:5] == ["0.7", "0.72", "0.5", "—"]  # one entry of a dict-valued score; — where it has none
  assert "self_learning_isic2017.py" in row and cells[-1] == "12.5 (pipeline's)"
  empty = tmp_path / "empty"
  empty.mkdir()
  bad = subprocess.run([sys.executable, "-m", "experiments.report", f"--runs=x:{empty}", f"--out={out}"], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=300, check=False)
  assert bad.returncode != 0 and "not a finished run" in bad.stderr
