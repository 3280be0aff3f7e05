"""README's Quickstart runs as written in a fresh clone: each `python -m experiments.<verb>` line of
its bash block is run in order, in a folder laid out as a clone's root (its `experiments/`, the
photos the predict line globs), with optional `[...]` parts dropped and only overrides appended
that make it tiny (the tiny synthetic set, a 4-feature U-Net, 2 steps); each must exit 0 and
write what the README says it writes."""
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu",
           PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))


def quickstart_commands() -> list[list[str]]:
  """The argv of each command in README's Quickstart block, as a user would type it (comments and
  optional `[...]` parts left out), joined over `\\` line continuations."""
  readme = open(os.path.join(REPO, "README.md")).read()
  section = readme.split("## Quickstart", 1)[1]
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
  commands = []
  for line in block.splitlines():
    line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).strip()
    if line:
      commands.append(shlex.split(line))
  return commands


def _tiny_overrides(data_dir: str, dataset: str, root: str) -> dict[str, list[str]]:
  """What each verb appends to run in seconds: the tiny data, a 4-feature 2-level U-Net trained 2
  steps; the artifact store in the clone folder, not in the shared data dir."""
  data = [f"--config.input.dataset={dataset}", f"--config.input.data_dir={data_dir}"]
  return {
      "experiments.train": [*data, "--config.input.image_size=32", "--config.input.batch_size=8",
                            "--config.model.features=4", "--config.model.levels=2", "--config.run.num_steps=2",
                            "--config.run.eval_every=2", "--config.run.log_every=2", "--config.summary_images=0"],
      "experiments.evaluate": [],
      "experiments.predict": [],
      "experiments.report": [],
      "experiments.artifacts": [*data, f"--config.input.artifact_dir={os.path.join(root, 'artifacts')}",
                                "--splits=test"],
  }


def _photos(folder: str) -> list[str]:
  """Two small dermoscopy-like JPEGs: a dark blob on skin tone."""
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  os.makedirs(folder)
  paths = []
  for name, centre in (("a.jpg", (30, 24)), ("b.jpg", (40, 30))):
    image = np.full((48, 64, 3), (150, 170, 220), np.uint8)  # BGR skin tone
    cv2.circle(image, centre, 12, (40, 50, 90), -1)
    paths.append(os.path.join(folder, name))
    cv2.imwrite(paths[-1], image)
  return paths


@pytest.fixture(scope="module")
def clone(tiny_data_dir, tiny_dataset, tmp_path_factory):
  """(the clone folder, {verb module: its finished process}) after running every Quickstart command."""
  root = str(tmp_path_factory.mktemp("clone"))
  os.symlink(os.path.join(REPO, "experiments"), os.path.join(root, "experiments"))
  _photos(os.path.join(root, "photos"))
  tiny = _tiny_overrides(tiny_data_dir, tiny_dataset, root)
  done = {}
  for argv in quickstart_commands():
    assert argv[:2] == ["python", "-m"], f"not a verb command: {shlex.join(argv)}"
    module = argv[2]
    assert module in tiny, f"README's Quickstart runs {module}: say here how to make it tiny"
    proc = subprocess.run([sys.executable, *argv[1:], *tiny[module]], cwd=root, env=ENV, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stderr[-3000:]}"
    done[module] = proc
  return root, done


def test_the_quickstart_block_holds_the_five_verbs_in_order():
  assert [argv[2] for argv in quickstart_commands()] == [
      "experiments.train", "experiments.evaluate", "experiments.predict", "experiments.report", "experiments.artifacts"]
  # Bracketed options are optional, so they are left out: what remains must be a whole command.
  assert all("[" not in a and "]" not in a for argv in quickstart_commands() for a in argv)


def test_every_quickstart_command_writes_what_the_readme_says(clone):
  root, done = clone
  run = os.path.join(root, "runs", "unet")
  for name in ("config.json", "metrics.json", "provenance.json"):
    assert os.path.isfile(os.path.join(run, name)), name
  assert os.path.isfile(os.path.join(run, "eval_test.json"))  # evaluate's default split
  table = open(os.path.join(root, "predictions", "predictions.csv")).read().splitlines()
  assert len(table) == 3 and all(",ok," in row for row in table[1:]), table
  assert os.path.isfile(os.path.join(root, "predictions", "a.png"))
  page = open(os.path.join(root, "docs", "results", "my_unet.md")).read()
  assert "| unet" in page and "experiments/configs/segmentation/unet.py" in page
  assert "test: 16 images (16 computed" in done["experiments.artifacts"].stdout
