"""ISIC 2017 Task 3 rows of pipelines 3, 4 and 5 on a tiny fake Part 3-only archive (three diagnoses,
no lesion masks, as isic2017/part3_512 is): each pipeline's classifier, from its Task 3 config file
made tiny, trains three-way, selects on a stratified fifth of Training (`run.holdout`) and scores
Validation with the challenge's scores; the lesion masks pipelines 4 and 5 need come from a
self-learned U-Net run (K-means pseudo-masks) on the same archive.
"""
import dataclasses
import os
import shutil

import pytest

from experiments import common
from lesion_jax import config as config_lib
from lesion_jax import io
from lesion_jax.data.builders import isic2017
from lesion_jax.pipelines.lesion_index import network
from lesion_jax.pipelines.lesion_index import task as lesion_index
from lesion_jax.pipelines.purification import task as purification
from lesion_jax.tasks import base, runner
from lesion_jax.train import sharding
from tests import test_builders as fake

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs")
TASK3_KEYS = ("melanoma_roc_auc", "keratosis_roc_auc", "mean_roc_auc")
# Skewed as the real archive is (nevi the most), so the GAN has scarce classes to fill; a stratified
# fifth of Training holds one image of each diagnosis.
_TRAIN = {f"ISIC_00001{k:02d}": (d, (36 + k, 44 - k)) for k, d in enumerate(
    ["nevus"] * 7 + ["melanoma"] * 4 + ["seborrheic_keratosis"] * 4)}
_VALID = {f"ISIC_00002{k:02d}": (d, (40, 40 + k)) for k, d in enumerate(
    ["nevus", "melanoma", "seborrheic_keratosis"] * 2)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
  """{input.data_dir, input.manual_dir} overrides of a prepared Part 3-only archive."""
  manual = fake.make_isic2017(tmp_path_factory.mktemp("task3_manual"), splits=(("Training", _TRAIN), ("Validation", _VALID)))
  for part in ("Training", "Validation"):
    shutil.rmtree(manual / f"ISIC-2017_{part}_Part1_GroundTruth")
  data_dir = tmp_path_factory.mktemp("task3_tfds")
  builder = fake.prepare(isic2017.Isic2017, manual, data_dir, config="part3_512")
  assert "mask" not in builder.info.features
  return {"input.data_dir": str(data_dir), "input.manual_dir": str(manual)}


def _config(path: str, **overrides):
  """The config file under experiments/configs with --config.<field> overrides (texts), as train reads it."""
  return common.config_from_file(os.path.join(CONFIGS, path), {k: str(v) for k, v in overrides.items()})


def _run(config, workdir) -> dict:
  return runner.run(base.for_config(config), str(workdir))


def _check_task3_scores(scores: dict) -> None:
  assert scores["test/split"] == "validation"
  for key in TASK3_KEYS:
    assert 0.0 <= scores[f"test/{key}"] <= 1.0, key


@pytest.fixture(scope="module")
def self_learned_unet(archive, tmp_path_factory):
  """The self-learned U-Net (segmentation/unet_selflearned_isic2017.py, tiny): K-means pseudo-masks only."""
  config = _config("segmentation/unet_selflearned_isic2017.py", **archive, **{
      "input.image_size": 32, "input.batch_size": 4, "model.features": 4, "model.levels": 2, "run.num_steps": 2,
      "run.eval_every": 2, "run.holdout": 0.2, "tta_scales": 32, "summary_images": 0,
      "drop_uncertain": False})  # the fake images are noise: K-means flags every mask uncertain
  workdir = tmp_path_factory.mktemp("unet_sl")
  _run(config, workdir)
  return str(workdir)


def _tiny_classifier(path: str, archive, **overrides):
  return _config(path, **archive, **{"input.image_size": 32, "input.batch_size": 8, "model.width": 0.125,
                                     "run.num_steps": 2, "run.eval_every": 2, **overrides})


def _check_selection(workdir: str) -> None:
  """Selected and calibrated on a part of Training; Validation picked nothing."""
  recorded = runner.load(workdir).config
  assert recorded.run.val_split.startswith("train[") and recorded.run.test_split == "validation"
  assert io.read_json(os.path.join(workdir, "calibration.json"))["split"] == recorded.run.val_split


# --- pipeline 3 ------------------------------------------------------------------------------------


def test_pipeline3_purified_resnet_scores_task3(archive, tmp_path_factory):
  inpainter = _config("purification/pconv_inpainter.py", **archive, **{
      "input.dataset": "isic2017/part3_512", "target_key": "image", "eval_holes": "random", "run.holdout": 0.2,
      "run.test_split": "", "input.image_size": 32, "input.batch_size": 4, "model.features": 8,
      "model.levels": 3, "run.num_steps": 2, "run.eval_every": 2, "finetune_steps": 0})
  inpainter_dir = str(tmp_path_factory.mktemp("inpainter_isic"))
  purification.train_two_phase(inpainter, inpainter_dir)  # as experiments.train runs an inpainter config
  workdir = str(tmp_path_factory.mktemp("task3_purified"))
  scores = _run(_tiny_classifier("classification/resnet_purified_isic2017_task3.py", archive,
                                 **{"purify.inpainter_workdir": inpainter_dir}), workdir)
  _check_task3_scores(scores)
  _check_selection(workdir)
  assert runner.load(workdir).source == "purified"


def test_pipeline3_gan_balanced_resnet_scores_task3(archive, tmp_path_factory):
  gan = _config("gan/dcgan.py", **archive, **{
      "input.dataset": "isic2017/part3_512", "run.holdout": 0.2, "input.image_size": 16, "input.batch_size": 4,
      "model.generator_features": 4, "model.discriminator_features": 4, "run.num_steps": 2, "run.eval_every": 2,
      "sample_every": 100,
      # The fake images are noise, far apart: the default near-copy threshold (the closest two training
      # images' MSE) would flag every sample of an untrained generator and leave nothing to balance with.
      "duplicate_threshold": 1e-6})
  gan_dir = str(tmp_path_factory.mktemp("gan_isic"))
  _run(gan, gan_dir)
  # The GANs trained on the classifier's training part: the same fifth of Training held out.
  classifier = _tiny_classifier("classification/resnet_gan_balanced_isic2017_task3.py", archive, generated=gan_dir)
  assert runner.load(gan_dir).config.run.train_split == runner.with_holdout(base.for_config(classifier)).config.run.train_split
  workdir = str(tmp_path_factory.mktemp("task3_gan"))
  scores = _run(classifier, workdir)
  _check_task3_scores(scores)
  _check_selection(workdir)
  plan = runner.load(workdir).generated_examples[1]["classes"]
  assert plan["nevus"]["used"] == 0  # the largest class
  for name in ("melanoma", "seborrheic_keratosis"):  # the scarce ones, filled up to it with generated images
    assert plan[name]["used"] == plan[name]["wanted"] > 0


# --- pipeline 4 ------------------------------------------------------------------------------------


def test_pipeline4_alexnet_on_self_learned_masks_scores_task3(archive, self_learned_unet, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("task3_alexnet"))
  scores = _run(_tiny_classifier("classification/alexnet_crops_isic2017_task3.py", archive,
                                 **{"crop.segmenter_workdir": self_learned_unet}), workdir)
  _check_task3_scores(scores)
  _check_selection(workdir)
  recorded = runner.load(workdir)
  assert recorded.config.model.name == "alexnet" and recorded.source == "crops"
  assert "lesion_crop" in recorded.config.image_artifacts


# --- pipeline 5 ------------------------------------------------------------------------------------


def test_pipeline5_needs_masks_from_a_segmenter_on_a_maskless_archive(archive):
  config = _config("lesion_index/fcrn_isic2017_task3.py", **archive, segmenter_workdir="none")
  with pytest.raises(config_lib.ConfigError, match=r"`input.dataset`='isic2017/part3_512' has no lesion masks.*`segmenter_workdir`"):
    lesion_index.LesionIndexTask(config).check(sharding.make_mesh())


def test_pipeline5_fcrn_and_lin_on_self_learned_masks_score_task3(archive, self_learned_unet, tmp_path_factory):
  config = _config("lesion_index/fcrn_isic2017_task3.py", **archive, **{
      "segmenter_workdir": self_learned_unet, "input.image_size": 32, "input.batch_size": 4, "test_scales": "32",
      "run.num_steps": 2, "run.eval_every": 2})
  workdir = str(tmp_path_factory.mktemp("task3_fcrn_dr"))
  scores = _run(config, workdir)
  _check_task3_scores(scores)
  assert scores["test/mean_roc_auc"] == scores["test/licu_mean_auc"]  # the LICU index's, by a classifier's name
  assert scores["test/masks_from"] == self_learned_unet  # its mask scores compare with the U-Net's masks
  recorded = runner.load(workdir).config
  assert recorded.run.val_split.startswith("train[") and "segmenter_mask" in recorded.mask_artifacts
  for image_id in _VALID:  # the U-Net's masks of every split the run read, stored once
    assert os.path.exists(os.path.join(recorded.mask_artifacts, f"{image_id}.png"))
  # The LIN on Validation (lesion_index/lin.py); the DR run stands in for DM too (the DM config differs
  # only by --config.augmentation=dm), which keeps this test short.
  lin = _config("lesion_index/lin.py", dr_workdir=workdir, dm_workdir=workdir, split="validation")
  metrics = network.LesionIndexNetwork(lin).run(str(tmp_path_factory.mktemp("task3_lin")))
  _check_task3_scores(metrics)
  assert metrics["test/mean_roc_auc"] == metrics["lin/mean_roc_auc"]
  # `split=selection` scores the FCRNs' own selection split (the fifth of Training they held out),
  # resolved from the runs rather than spelled out as hundreds of index ranges.
  on_selection = network.LesionIndexNetwork(dataclasses.replace(lin, split="selection"))
  assert on_selection.scored_split() == recorded.run.val_split
  scored = on_selection.run(str(tmp_path_factory.mktemp("task3_lin_sel")))
  assert scored["selection/split"] == recorded.run.val_split and "test/mean_roc_auc" not in scored
  assert scored["selection/mean_roc_auc"] == scored["lin/mean_roc_auc"]
  other = str(tmp_path_factory.mktemp("task3_fcrn_other"))
  _run(dataclasses.replace(config, run=dataclasses.replace(config.run, holdout=0.0, val_split="validation")), other)
  with pytest.raises(config_lib.ConfigError, match=r"`split`=selection: .*dr: train\[.*dm: validation"):
    network.LesionIndexNetwork(dataclasses.replace(lin, dm_workdir=other, split="selection")).check()
