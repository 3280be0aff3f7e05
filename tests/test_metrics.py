"""Tests for lesion_jax.eval.metrics against scikit-learn and hand-computed cases."""
import json

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from lesion_jax.eval import metrics


def _random_masks(rng, n=6, h=12, w=10, p=0.4):
  pred = rng.random((n, h, w)) < p
  target = rng.random((n, h, w)) < p
  return pred, target


# ----------------------------------------------------------------------------------------------
# Segmentation


def test_counts_hand_computed_4x4():
  target = np.zeros((1, 4, 4), bool)
  target[0, :2, :2] = True  # 4 pixels
  pred = np.zeros((1, 4, 4), bool)
  pred[0, :2, 1:3] = True  # 4 pixels, 2 overlapping
  counts = metrics.segmentation_counts(pred, target)
  assert {k: int(v[0]) for k, v in counts.items()} == {"tp": 2, "fp": 2, "fn": 2, "tn": 10}
  assert all(v.dtype == np.int64 and v.shape == (1,) for v in counts.values())
  s = metrics.per_image_segmentation_scores(pred, target)
  assert s["jaccard"][0] == pytest.approx(2 / 6)
  assert s["dice"][0] == pytest.approx(4 / 8)
  assert s["accuracy"][0] == pytest.approx(12 / 16)
  assert s["sensitivity"][0] == pytest.approx(2 / 4)
  assert s["specificity"][0] == pytest.approx(10 / 12)


def test_accepts_trailing_channel_and_uint8():
  rng = np.random.default_rng(0)
  pred, target = _random_masks(rng)
  a = metrics.segmentation_scores(pred, target)
  b = metrics.segmentation_scores(pred[..., None].astype(np.uint8) * 255,
                                  target[..., None].astype(np.float32))
  assert a == b


def test_per_image_matches_sklearn():
  rng = np.random.default_rng(1)
  pred, target = _random_masks(rng, n=8)
  s = metrics.per_image_segmentation_scores(pred, target)
  for i in range(pred.shape[0]):
    t, p = target[i].ravel(), pred[i].ravel()
    assert s["jaccard"][i] == pytest.approx(skm.jaccard_score(t, p))
    assert s["dice"][i] == pytest.approx(skm.f1_score(t, p))
    assert s["accuracy"][i] == pytest.approx(skm.accuracy_score(t, p))
    assert s["sensitivity"][i] == pytest.approx(skm.recall_score(t, p))
    assert s["specificity"][i] == pytest.approx(skm.recall_score(t, p, pos_label=0))
  summary = metrics.segmentation_scores(pred, target)
  assert summary["num_images"] == 8
  for k in ("jaccard", "dice", "accuracy", "sensitivity", "specificity"):
    assert summary[k] == pytest.approx(float(np.mean(s[k])))
    assert isinstance(summary[k], float)


def test_thresholded_jaccard_boundary():
  # Image 0: JA = 13/20 = 0.65 exactly (kept); image 1: JA = 12/20 = 0.6 (counts as 0).
  target = np.zeros((2, 4, 5), bool)
  target[:] = True  # 20 pixels each
  pred = np.zeros((2, 4, 5), bool)
  pred[0].flat[:13] = True
  pred[1].flat[:12] = True
  s = metrics.segmentation_scores(pred, target)
  assert s["jaccard"] == pytest.approx((0.65 + 0.6) / 2)
  assert s["jaccard_thresholded"] == pytest.approx(0.65 / 2)
  assert set(s) == {"jaccard", "jaccard_thresholded", "dice", "accuracy", "sensitivity",
                    "specificity", "num_images"}
  assert metrics.segmentation_scores(pred, target, threshold_ja=0.0)["jaccard_thresholded"] == (
      pytest.approx(s["jaccard"]))


def test_empty_mask_conventions():
  empty = np.zeros((1, 4, 4), bool)
  blob = np.zeros((1, 4, 4), bool)
  blob[0, 1:3, 1:3] = True
  full = np.ones((1, 4, 4), bool)

  both = metrics.per_image_segmentation_scores(empty, empty)
  assert {k: float(v[0]) for k, v in both.items()} == {
      "jaccard": 1.0, "dice": 1.0, "accuracy": 1.0, "sensitivity": 1.0, "specificity": 1.0}

  only_target = metrics.per_image_segmentation_scores(empty, blob)  # pred empty
  assert only_target["jaccard"][0] == 0.0 and only_target["dice"][0] == 0.0
  assert only_target["sensitivity"][0] == 0.0 and only_target["specificity"][0] == 1.0

  only_pred = metrics.per_image_segmentation_scores(blob, empty)  # target empty
  assert only_pred["jaccard"][0] == 0.0 and only_pred["dice"][0] == 0.0
  assert only_pred["sensitivity"][0] == 1.0
  assert only_pred["specificity"][0] == pytest.approx(12 / 16)

  all_lesion = metrics.per_image_segmentation_scores(full, full)
  assert all_lesion["specificity"][0] == 1.0 and all_lesion["jaccard"][0] == 1.0


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
    metrics.segmentation_counts(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
  with pytest.raises(ValueError, match="shape"):
    metrics.segmentation_counts(np.zeros((4, 4)), np.zeros((4, 4)))
  with pytest.raises(ValueError, match="binarize"):
    metrics.segmentation_counts(np.full((1, 2, 2), 0.7), np.zeros((1, 2, 2)))


def test_accumulator_matches_one_shot_with_padding():
  rng = np.random.default_rng(2)
  pred, target = _random_masks(rng, n=10)
  acc = metrics.SegmentationAccumulator()
  acc.update(pred[:4], target[:4])
  # Second batch padded with 2 junk examples that must be ignored.
  junk_p = np.ones((2, 12, 10), bool)
  junk_t = np.zeros((2, 12, 10), bool)
  acc.update(np.concatenate([pred[4:], junk_p]), np.concatenate([target[4:], junk_t]),
             weights=np.array([1] * 6 + [0, 0]))
  expected = metrics.segmentation_scores(pred, target)
  result = acc.result()
  assert result.keys() == expected.keys()
  for k, v in expected.items():
    assert result[k] == pytest.approx(v)
  per_image = acc.per_image()
  one_shot = metrics.per_image_segmentation_scores(pred, target)
  for k in one_shot:
    np.testing.assert_allclose(per_image[k], one_shot[k])
  with pytest.raises(ValueError, match="weights"):
    acc.update(pred[:2], target[:2], weights=np.ones(3))


def test_accumulator_empty():
  r = metrics.SegmentationAccumulator().result()
  assert r["num_images"] == 0 and r["jaccard"] is None
  json.dumps(r)


# ----------------------------------------------------------------------------------------------
# Classification


def _random_probs(rng, n, c):
  logits = rng.normal(size=(n, c))
  p = np.exp(logits)
  return p / p.sum(axis=1, keepdims=True)


def test_multiclass_matches_sklearn():
  rng = np.random.default_rng(3)
  n, c = 60, 3
  labels = rng.integers(0, c, size=n)
  probs = _random_probs(rng, n, c)
  probs[np.arange(n), labels] += 0.3  # Better than chance.
  probs /= probs.sum(axis=1, keepdims=True)
  preds = probs.argmax(1)
  r = metrics.classification_scores(labels, probs, class_names=["mel", "nev", "sk"])
  json.dumps(r)  # Everything serializable.
  assert r["num_examples"] == n
  assert r["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
  assert r["misclassification_rate"] == pytest.approx(1 - r["accuracy"])
  p, rec, f1, sup = skm.precision_recall_fscore_support(labels, preds, zero_division=0)
  assert r["precision"] == pytest.approx(p.mean())
  assert r["recall"] == pytest.approx(rec.mean())
  assert r["f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
  for i, name in enumerate(["mel", "nev", "sk"]):
    pc = r["per_class"][name]
    assert pc["precision"] == pytest.approx(p[i]) and pc["recall"] == pytest.approx(rec[i])
    assert pc["f1"] == pytest.approx(f1[i]) and pc["support"] == sup[i]
    assert pc["roc_auc"] == pytest.approx(skm.roc_auc_score(labels == i, probs[:, i]))
    assert set(pc["specificity_at_sensitivity"]) == {"0.82", "0.89", "0.95"}
  assert r["confusion_matrix"] == skm.confusion_matrix(labels, preds).tolist()
  assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr"))
  assert r["average_precision"] == pytest.approx(
      skm.average_precision_score(label_binarize(labels, classes=range(c)), probs))
  assert r["sensitivity"] == pytest.approx(rec.mean())
  cm = np.asarray(r["confusion_matrix"])
  spec = [(n - cm[i].sum() - cm[:, i].sum() + cm[i, i]) / (n - cm[i].sum()) for i in range(c)]
  assert r["specificity"] == pytest.approx(np.mean(spec))
  # Every score is defined but ISIC 2017's keratosis AUC (and so its mean): no class is a keratosis.
  assert set(r["notes"]) == {"keratosis_roc_auc", "mean_roc_auc"} and r["keratosis_roc_auc"] is None


@pytest.mark.parametrize("as_vector", [True, False])
def test_binary_matches_sklearn(as_vector):
  rng = np.random.default_rng(4)
  n = 50
  labels = rng.integers(0, 2, size=n)
  p1 = np.clip(0.35 * labels + rng.random(n) * 0.65, 0, 1)
  probs = p1 if as_vector else np.stack([1 - p1, p1], axis=1)
  preds = (p1 > 0.5).astype(int)
  r = metrics.classification_scores(labels, probs)
  json.dumps(r)
  assert r["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
  assert r["precision"] == pytest.approx(skm.precision_score(labels, preds))
  assert r["recall"] == pytest.approx(skm.recall_score(labels, preds))
  assert r["f1"] == pytest.approx(skm.f1_score(labels, preds))
  assert r["sensitivity"] == pytest.approx(skm.recall_score(labels, preds))
  assert r["specificity"] == pytest.approx(skm.recall_score(labels, preds, pos_label=0))
  assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, p1))
  assert r["average_precision"] == pytest.approx(skm.average_precision_score(labels, p1))
  assert r["confusion_matrix"] == skm.confusion_matrix(labels, preds).tolist()
  for key, value in r["specificity_at_sensitivity"].items():
    assert value == pytest.approx(
        metrics.specificity_at_sensitivity(labels, p1, float(key)))


def test_specificity_at_sensitivity_hand_checked():
  # Positives 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2, 0.1.
  # Thresholds: >=0.9 sens 1/3 spec 1; >=0.8 sens 2/3 spec 1; >=0.7 sens 2/3 spec 3/4;
  # >=0.4 sens 1 spec 3/4; lower thresholds only lose specificity.
  labels = [1, 1, 1, 0, 0, 0, 0]
  scores = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
  f = metrics.specificity_at_sensitivity
  assert f(labels, scores, 0.5) == 1.0
  assert f(labels, scores, 2 / 3) == 1.0
  assert f(labels, scores, 0.7) == 0.75
  assert f(labels, scores, 0.82) == 0.75
  assert f(labels, scores, 1.0) == 0.75
  assert f(labels, scores, 0.0) == 1.0
  # Ties can't be split: the tied negative comes along with the positive.
  assert f([1, 0, 0], [0.5, 0.5, 0.1], 1.0) == 0.5
  # Exactly at the target: 41 of 50 positives = 0.82.
  labels = [1] * 50 + [0] * 10
  # Positive k (0-based) scores 1 - k / 98: the 41st is 0.5918, the 42nd 0.5816. One negative
  # ranks above the 41st, one between the 41st and 42nd, so reaching 0.82 costs exactly one.
  scores = list(np.linspace(1.0, 0.5, 50)) + [0.95, 0.585] + [0.0] * 8
  assert f(labels, scores, 0.82) == 0.9
  assert f(labels, scores, 0.83) == 0.8
  assert np.isnan(f([1, 1], [0.2, 0.3], 0.82))


def _specificity_at_sensitivity_brute_force(labels, scores, sensitivity):
  """Every threshold t in {scores} ∪ {+inf}, predicting positive where score >= t."""
  labels, scores = np.asarray(labels), np.asarray(scores)
  best = -1.0
  for t in [np.inf, *np.unique(scores)]:
    pred = scores >= t
    sens = np.sum(pred & (labels == 1)) / np.sum(labels == 1)
    spec = np.sum(~pred & (labels == 0)) / np.sum(labels == 0)
    if sens >= sensitivity:
      best = max(best, spec)
  return best


def test_specificity_at_sensitivity_matches_brute_force_threshold_sweep_with_ties():
  rng = np.random.default_rng(7)
  for trial in range(200):
    n = int(rng.integers(2, 60))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes present
    levels = int(rng.integers(2, 10))
    # Half the trials draw from a few levels (many ties, within and across classes).
    scores = rng.integers(0, levels, n) / (levels - 1) if trial % 2 else rng.random(n)
    num_pos = int(labels.sum())
    targets = [0.0, 0.82, 0.89, 0.95, 1.0, *(k / num_pos for k in range(num_pos + 1))]
    for target in targets:
      assert metrics.specificity_at_sensitivity(labels, scores, target) == pytest.approx(
          _specificity_at_sensitivity_brute_force(labels, scores, target), rel=1e-12, abs=0), (
              trial, target)


def test_isic2017_part3_scores_hand_computed():
  # Classes (nevus, melanoma, seborrheic_keratosis) as the isic2017 builders name `label`'s.
  names = ["nevus", "melanoma", "seborrheic_keratosis"]
  labels = [0, 0, 0, 0, 1, 1, 2, 2]
  probs = np.array([[.7, .2, .1], [.6, .3, .1], [.5, .4, .1], [.1, .6, .3],   # nevi (the 4th looks melanoma)
                    [.3, .5, .2], [.6, .3, .1],                                 # melanomas (the 2nd looks a nevus)
                    [.2, .1, .7], [.5, .25, .25]])                              # keratoses (the 2nd looks a nevus)
  # Melanoma vs rest: positives score .5 and .3, the six negatives .2 .3 .4 .6 .1 .25.
  #   .5 beats 5 negatives (not .6); .3 beats .2 .1 .25 and ties .3 (1/2): AUC = 8.5 / 12 = 17/24.
  # Keratosis vs rest: positives .7 and .25, negatives .1 .1 .1 .3 .2 .1.
  #   .7 beats all 6; .25 beats all but .3: AUC = 11 / 12 = 22/24. Mean: 39/48 = 0.8125.
  # Melanoma specificity: every target above 50 % needs both melanomas, i.e. threshold .3, which
  #   takes the negatives .3 .4 .6 along: 3/6 = 0.5; at 50 % the threshold .5 takes only .6: 5/6.
  # Predicted (argmax) 0 0 0 1 | 1 0 | 2 0: recalls 3/4, 1/2, 1/2; balanced accuracy 1.75 / 3.
  s = metrics.classification_scores(labels, probs, names, sensitivities=(0.5, 0.82, 0.89, 0.95))
  json.dumps(s)
  assert s["melanoma_roc_auc"] == pytest.approx(17 / 24)
  assert s["keratosis_roc_auc"] == pytest.approx(22 / 24)
  assert s["mean_roc_auc"] == pytest.approx(0.8125)
  assert s["melanoma_specificity_at_sensitivity"] == pytest.approx({"0.5": 5 / 6, "0.82": 0.5, "0.89": 0.5,
                                                                     "0.95": 0.5})
  assert s["balanced_accuracy"] == pytest.approx(1.75 / 3)
  assert s["accuracy"] == pytest.approx(5 / 8)
  # The same scores by scikit-learn's own functions (what the hand computation above is checked by).
  y = np.asarray(labels)
  assert s["melanoma_roc_auc"] == pytest.approx(skm.roc_auc_score(y == 1, probs[:, 1]))
  assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, probs.argmax(1)))
  assert s["notes"] == {}
  # No keratosis class (a melanoma-vs-nevus problem): the mean is undefined, and says why.
  two = metrics.classification_scores([0, 0, 1, 1], [[.8, .2], [.4, .6], [.3, .7], [.6, .4]], ["nevus", "melanoma"])
  assert two["melanoma_roc_auc"] == pytest.approx(0.75) and two["keratosis_roc_auc"] is None
  assert two["mean_roc_auc"] is None and "keratosis_roc_auc" in two["notes"] and "mean_roc_auc" in two["notes"]
  # Without a melanoma class there are no ISIC 2017 keys at all (not a row of Nones).
  other = metrics.classification_scores(labels, probs, ["a", "b", "c"])
  assert not set(metrics.ISIC2017_KEYS) & set(other)


def test_single_class_labels_do_not_crash():
  rng = np.random.default_rng(5)
  r = metrics.classification_scores(np.zeros(10, int), rng.random(10))
  json.dumps(r)
  assert r["roc_auc"] is None and "roc_auc" in r["notes"]
  assert r["sensitivity"] is None and r["specificity"] is not None
  assert r["specificity_at_sensitivity"]["0.82"] is None
  assert r["average_precision"] is None
  multi = metrics.classification_scores(np.full(8, 2), _random_probs(rng, 8, 3))
  json.dumps(multi)
  assert multi["roc_auc"] is None and multi["accuracy"] >= 0.0
  fpr, tpr, thresholds = metrics.roc_curve_points(np.ones(5, int), rng.random(5))
  assert fpr.shape == tpr.shape == thresholds.shape


def test_classification_validation():
  with pytest.raises(ValueError, match="labels shape"):
    metrics.classification_scores([0, 1, 1], np.full((2, 2), 0.5))
  with pytest.raises(ValueError, match="labels must be in"):
    metrics.classification_scores([0, 3], np.full((2, 3), 1 / 3))
  with pytest.raises(ValueError, match="class names"):
    metrics.classification_scores([0, 1], np.full((2, 2), 0.5), class_names=["a"])


def test_roc_curve_points_matches_sklearn():
  rng = np.random.default_rng(6)
  labels = rng.integers(0, 2, 30)
  scores = rng.random(30)
  for ours, ref in zip(metrics.roc_curve_points(labels, scores), skm.roc_curve(labels, scores)):
    np.testing.assert_allclose(ours, ref)


# ----------------------------------------------------------------------------------------------
# Package layout


def test_metrics_package_reexports_each_family_and_imports_no_cycle():
  import ast, importlib, inspect  # pylint: disable=g-import-not-at-top,multiple-imports
  package = "lesion_jax.eval.metrics"
  layers = {"masks": set(), "boundary": {"masks"}, "segmentation": {"boundary", "masks"},
            "calibration": set(), "classification": {"calibration"}}  # the GAN's FD / KID: lesion_jax/pipelines/gan/metrics.py
  for name, expected in layers.items():
    module = importlib.import_module(f"{package}.{name}")
    tree = ast.parse(inspect.getsource(module))
    imports = {n.module[len(package) + 1:] for n in ast.walk(tree)
               if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(package + ".")}
    assert imports == expected, name
    if name == "masks":
      continue
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    defined += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
    for attr in defined:
      if not attr.startswith("_"):
        assert getattr(metrics, attr) is getattr(module, attr), f"{name}.{attr}"
