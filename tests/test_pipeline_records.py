"""Multi-run pipelines as registered records (base.Pipeline): the LIN (DR + DM FCRNs, their maps
summed) run, loaded back from its workdir and predicting on photos as its evaluation scores; the
two-stage and self-learning records (including ones written before OptimizerConfig's step_decay
fields) loading and resuming; predictors refused with the reason while no stage has finished."""
import dataclasses
import json
import os

import numpy as np
import pytest

from lesion_jax import config as config_lib
from lesion_jax.artifacts import stage
from lesion_jax.config import RunConfig
from lesion_jax.data import pipeline
from lesion_jax.pipelines.lesion_index import feature_network
from lesion_jax.pipelines.lesion_index import network
from lesion_jax.pipelines.lesion_index import task as lesion_index
from lesion_jax.pipelines.self_learning import self_learning, two_stage
from lesion_jax.tasks import base, runner, segmentation
from lesion_jax.train import sharding
from lesion_jax.train.state import OptimizerConfig


def _photos():
  rng = np.random.default_rng(11)
  photos = []
  for h, w in ((44, 60), (36, 36), (66, 48)):
    yy, xx = np.mgrid[:h, :w]
    image = np.full((h, w, 3), (210, 170, 150), np.uint8)
    image[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2] = (90, 55, 45)
    photos.append(np.clip(image + rng.integers(0, 8, image.shape), 0, 255).astype(np.uint8))
  return photos


@pytest.fixture(scope="module")
def members(tiny_data_dir, tiny_dataset, tmp_path_factory):
  """Two tiny FCRN runs whose configs differ (augmentation, test scales, batch size)."""
  dirs = {}
  for name, augmentation, scales, batch in (("dr", "dr", (32, 48), 8), ("dm", "dm", (40,), 4)):
    config = lesion_index.LesionIndexConfig(
        input=pipeline.InputConfig(dataset=tiny_dataset, data_dir=tiny_data_dir, image_size=32, batch_size=batch),
        augmentation=augmentation, test_scales=scales, run=RunConfig(num_steps=6, eval_every=6, log_every=6, val_split=""),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=2))
    dirs[name] = str(tmp_path_factory.mktemp(f"fcrn_{name}"))
    runner.run(lesion_index.LesionIndexTask(config), dirs[name], "test")
  return dirs


@pytest.fixture(scope="module")
def lin(members, tmp_path_factory):
  config = network.LesionIndexNetworkConfig(dr_workdir=members["dr"], dm_workdir=members["dm"])
  workdir = str(tmp_path_factory.mktemp("lin"))
  return config, workdir, network.LesionIndexNetwork(config).run(workdir)


def test_the_lin_writes_its_report_and_loads_back_as_its_pipeline(lin, members):
  config, workdir, metrics = lin
  for name in ("config.json", "report.md", "report.json", "metrics.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert json.load(open(os.path.join(workdir, "metrics.json"))) == json.loads(json.dumps(metrics))
  assert metrics["split"] == "test" and 0.0 <= metrics["lin/jaccard"] <= 1.0
  rows = {k.split("/")[0] for k in metrics if "/" in k}
  assert rows == {"fcrn_dr", "fcrn_dm", "lin", "lin_single_scale", "test"}
  assert metrics["test/mean_roc_auc"] == metrics["lin/mean_roc_auc"] and metrics["test/split"] == "test"
  report = json.load(open(os.path.join(workdir, "report.json")))
  assert report["results"]["lin"]["jaccard"] == metrics["lin/jaccard"]
  assert "## Table V: the LICU" in open(os.path.join(workdir, "report.md")).read()
  loaded = runner.load(workdir)
  assert isinstance(loaded, network.LesionIndexNetwork) and loaded.config == config
  assert loaded.stages(workdir) == {"dr": members["dr"], "dm": members["dm"]}
  assert all(os.path.exists(os.path.join(d, "metrics.json")) for d in loaded.stages(workdir).values())
  # The members are where the LIN reads them (location fields): a moved member still resumes the
  # record; another split is another report.
  moved = dataclasses.replace(config, dr_workdir=members["dr"] + "_moved")
  runner.write_config(workdir, network.LesionIndexNetwork(moved).describe(), moved)
  other = dataclasses.replace(config, split="validation")
  with pytest.raises(ValueError, match="other flags"):
    runner.write_config(workdir, network.LesionIndexNetwork(other).describe(), other)
  runner.write_config(workdir, loaded.describe(), config)


def test_the_lin_predictor_sums_its_members_maps_as_its_evaluation_does(lin):
  config, workdir, metrics = lin
  task, states = runner.load(workdir).predictor(workdir)
  assert isinstance(task, network.LesionIndexNetworkTask) and len(states) == 2
  assert [m.config.test_scales for m in task.members] == [(32, 48), (40,)]
  assert task.predicts == {"mask", "probabilities"} and task.class_names == task.members[0].class_names
  scores, evaluation = runner.evaluate(task, states, "test")  # the report's LIN row
  assert scores["test/jaccard"] == pytest.approx(metrics["lin/jaccard"])
  assert scores["test/licu_melanoma_auc"] == pytest.approx(metrics["lin/licu_melanoma_auc"])
  photos = _photos()
  records = task.predict_images(states, photos)
  for photo, record in zip(photos, records):
    assert record["mask"].dtype == bool and record["mask"].shape == photo.shape[:2]
    assert record["probabilities"].shape == (len(task.class_names),)
    assert record["probabilities"].sum() == pytest.approx(1.0)
  # The sum of the members' maps, not one member's: each member alone predicts other indices.
  alone = [m.predict_images(s, photos) for m, s in zip(task.members, states)]
  summed = [a + b for a, b in zip(*(m.image_maps(s, photos) for m, s in zip(task.members, states)))]
  for j, record in enumerate(records):
    expected = lesion_index.index_records([summed[j]])[0]
    np.testing.assert_array_equal(record["mask"], expected["mask"])
    np.testing.assert_allclose(record["probabilities"], expected["probabilities"])
  assert any(not np.allclose(r["probabilities"], a[j]["probabilities"]) for a in alone
             for j, r in enumerate(records))
  # The test split's images: what evaluate_members scored for each of them.
  row = {image_id: j for j, image_id in enumerate(evaluation.ids)}
  examples = list(stage.read_examples(task.members[0].builder, "test", features=("image",)))[:4]
  for ex, record in zip(examples, task.predict_images(states, [ex["image"] for ex in examples])):
    np.testing.assert_allclose(record["probabilities"], evaluation.per_example["licu"][row[ex["id"]]], atol=1e-5)


def test_a_lin_without_both_members_is_refused_before_anything_is_written(members, tmp_path):
  workdir = str(tmp_path / "lin")
  with pytest.raises(config_lib.ConfigError, match="`dm_workdir`"):
    network.LesionIndexNetwork(network.LesionIndexNetworkConfig(dr_workdir=members["dr"])).run(workdir)
  with pytest.raises(config_lib.ConfigError, match="`split`"):
    network.LesionIndexNetwork(network.LesionIndexNetworkConfig(
        dr_workdir=members["dr"], dm_workdir=members["dm"], split="nope")).run(workdir)
  assert not os.path.exists(os.path.join(workdir, "config.json"))


def _without_step_decay_fields(record):
  """A record as written before OptimizerConfig had decay_every / decay_factor."""
  if isinstance(record, dict):
    return {k: _without_step_decay_fields(v) for k, v in record.items()
            if not (k in ("decay_every", "decay_factor") and v is None)}
  if isinstance(record, list):
    return [_without_step_decay_fields(v) for v in record]
  return record


@pytest.mark.parametrize("name", ["two_stage", "self_learning", "feature_network"])
def test_older_records_load_and_resume(name, tmp_path):
  if name == "two_stage":
    config = two_stage.TwoStageConfig(data_dir="/data/a")
    record = two_stage.describe(config)
  elif name == "self_learning":
    config = self_learning.SelfLearningConfig(segmenter=segmentation.SegmenterConfig())
    record = self_learning.SelfLearningPipeline(config).describe()
  else:  # the LFN's own decay_every / decay_factor stay where its records have them
    config = feature_network.FeatureNetworkConfig()
    record = feature_network.FeatureNetworkTask(config).describe()
    assert record["config"]["decay_every"] == 1000
  old = _without_step_decay_fields(record)
  assert old != record and old["task"] == name
  workdir = str(tmp_path)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(old, f)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:  # a run that did something
    json.dump({}, f)
  loaded = runner.load(workdir)
  assert type(loaded) is base.get(name) and loaded.config == config
  # Resuming with the same config is accepted (fields added since take their defaults).
  runner.write_config(workdir, loaded if isinstance(loaded, base.Task) else loaded.describe(), config)


def test_predictors_say_why_while_no_stage_has_finished(tmp_path):
  seg = segmentation.SegmenterConfig()
  for pipeline_ in (two_stage.TwoStagePipeline(two_stage.TwoStageConfig()),
                    two_stage.TwoStagePipeline(two_stage.TwoStageConfig(classifiers=two_stage.DEFAULT_CLASSIFIERS[:1])),
                    self_learning.SelfLearningPipeline(self_learning.SelfLearningConfig(segmenter=seg))):
    workdir = str(tmp_path / pipeline_.name / str(len(getattr(pipeline_.config, "classifiers", ()))))
    os.makedirs(workdir)
    runner.write_config(workdir, pipeline_.describe(), pipeline_.config)
    loaded = runner.load(workdir)
    assert type(loaded) is type(pipeline_)
    with pytest.raises(base.PredictionUnsupported, match="finished|checkpoint"):
      loaded.predictor(workdir)
    # Another checkpoint than the stages' own is refused by name, not ignored, before anything is restored.
    with pytest.raises(base.PredictionUnsupported, match=r"checkpoint 'latest': a '.*' pipeline predicts with") as refused:
      runner.predictor(workdir, "latest")
    assert os.path.join(workdir, "segmenter" if pipeline_.name == "two_stage" else "round_0") in str(refused.value)
  # A two-stage config without crop classifiers predicts with its U-Net.
  assert "U-Net" in str(pytest.raises(base.PredictionUnsupported, two_stage.TwoStagePipeline(
      two_stage.TwoStageConfig(classifiers=two_stage.DEFAULT_CLASSIFIERS[:1])).predictor, str(tmp_path)).value)


def test_the_lin_predictor_refuses_an_ensemble_of_states(lin):
  _, workdir, _ = lin
  task, states = runner.load(workdir).predictor(workdir)
  with pytest.raises(ValueError, match="sums"):
    task.jit_predict(states, sharding.make_mesh(), ensemble=True)
