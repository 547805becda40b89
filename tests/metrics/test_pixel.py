"""Pixel metrics: hand-computed counts, zero division, aggregation, masks, multi-class IoU, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from emzoo.metrics import (
    ConfusionCounts,
    class_confusion_matrix,
    confusion_matrix,
    mean_iou,
    metrics_from_counts,
    per_class_iou,
    pixel_metrics,
)

KEYS = [
    "f1",
    "jaccard",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "dice",
    "iou_background",
    "iou_overall",
]


def test_hand_computed_counts_and_metrics():
    gt = np.array([[1, 1, 1, 0], [0, 0, 1, 0]], float)  # 4 positives, 4 negatives
    pred = np.array([[0.9, 0.6, 0.2, 0.7], [0.1, 0.3, 0.8, 0.5]])  # 0.5 is not > 0.5
    assert confusion_matrix(gt, pred) == ConfusionCounts(tp=3, fp=1, tn=3, fn=1)
    m = pixel_metrics(gt, pred)
    assert list(m) == KEYS
    assert m["accuracy"] == 6 / 8
    assert m["sensitivity"] == m["specificity"] == m["ppv"] == m["npv"] == 3 / 4
    assert m["f1"] == m["dice"] == 6 / 8
    assert m["jaccard"] == 3 / 5 and m["iou_background"] == 3 / 5 and m["iou_overall"] == 3 / 5


def test_threshold_is_strict_and_float32():
    gt = np.array([1, 1, 0], float)
    assert confusion_matrix(gt, np.array([0.5, 0.51, 0.0])).tp == 1
    # 51/255 is foreground at 0.2 (its float32 value is above 0.2), also when given as float64
    assert confusion_matrix(np.array([1.0]), np.array([51 / 255]), threshold=0.2).tp == 1
    assert confusion_matrix(np.array([1.0]), np.array([50 / 255]), threshold=0.2).tp == 0


def test_boolean_and_binary_integer_inputs():
    gt = np.array([True, False, True])
    pred = np.array([1, 0, 0], np.uint8)
    assert confusion_matrix(gt, pred) == ConfusionCounts(1, 0, 1, 1)


def test_empty_prediction_and_empty_ground_truth():
    zeros = np.zeros((3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warnings anywhere
        both = pixel_metrics(zeros, zeros)
        no_pred = pixel_metrics(np.eye(3, 4), zeros)
        no_gt = pixel_metrics(zeros, np.eye(3, 4))
    assert math.isnan(both["f1"]) and math.isnan(both["jaccard"]) and math.isnan(both["sensitivity"])
    assert both["accuracy"] == 1.0 and both["specificity"] == 1.0 and both["iou_background"] == 1.0
    assert both["iou_overall"] == 1.0  # the foreground IoU is undefined, so only the background counts
    assert no_pred["f1"] == 0.0 and no_pred["jaccard"] == 0.0 and math.isnan(no_pred["ppv"])
    assert no_gt["f1"] == 0.0 and math.isnan(no_gt["sensitivity"]) and no_gt["ppv"] == 0.0
    assert pixel_metrics(zeros, zeros, zero_division=1.0)["f1"] == 1.0
    assert pixel_metrics(zeros, zeros, zero_division=0.0)["jaccard"] == 0.0  # EM-stellar's Jaccard


def test_all_foreground():
    ones = np.ones((2, 3))
    m = pixel_metrics(ones, ones)
    assert m["f1"] == m["jaccard"] == m["accuracy"] == m["sensitivity"] == m["ppv"] == 1.0
    assert math.isnan(m["specificity"]) and math.isnan(m["npv"]) and math.isnan(m["iou_background"])
    assert m["iou_overall"] == 1.0


def test_pooled_versus_mean_over_slices():
    gt = np.zeros((2, 2, 2))
    pred = np.zeros((2, 2, 2))
    gt[0] = 1  # slice 0: 4 positives, 2 found
    pred[0, 0] = 1
    gt[1, 0, 0] = 1  # slice 1: 1 positive, found
    pred[1, 0, 0] = 1
    pooled = pixel_metrics(gt, pred)
    assert pooled["sensitivity"] == 3 / 5
    mean = pixel_metrics(gt, pred, aggregate="mean")
    assert mean["sensitivity"] == (2 / 4 + 1) / 2
    # slice 0 has no negatives: specificity is undefined there and skipped in the mean
    assert mean["specificity"] == 1.0
    with pytest.raises(ValueError, match="aggregate"):
        pixel_metrics(gt, pred, aggregate="micro")


def test_mask_excludes_pixels():
    gt = np.array([1, 1, 0, 0])
    pred = np.array([1, 0, 1, 0])
    assert confusion_matrix(gt, pred, mask=[1, 0, 0, 1]) == ConfusionCounts(1, 0, 1, 0)
    assert pixel_metrics(gt, pred, mask=[1, 0, 0, 1])["f1"] == 1.0


def test_metrics_from_counts_matches():
    counts = ConfusionCounts(tp=3, fp=1, tn=5, fn=1)
    m = metrics_from_counts(counts)
    assert m["f1"] == 0.75 and m["npv"] == 5 / 6 and m["iou_overall"] == (3 / 5 + 5 / 7) / 2


@pytest.mark.parametrize(
    ("truth", "prediction", "error", "message"),
    [
        (np.zeros(4), np.array([0.1, np.nan, 0.2, 0.3]), ValueError, "1 NaN/Inf"),
        (np.zeros(4), np.array([0.1, np.inf, 0.2, 0.3]), ValueError, "NaN/Inf"),
        (np.zeros((3, 4)), np.zeros((4, 3)), ValueError, r"ground_truth has shape \(3, 4\).*shape \(4, 3\)"),
        (np.array([0, 1, 2, 7]), np.zeros(4), ValueError, r"\[0, 1, 2, 7\].*labels > 0"),
        (np.zeros(4), np.array([0, 255, 0, 255], np.uint8), ValueError, r"\[0, 255\].*/ 255"),
        (np.zeros(4), np.array([-0.5, 0.5, 0, 1]), ValueError, r"outside \[0, 1\] \(min -0.5"),
        (np.zeros(0), np.zeros(0), ValueError, "empty"),
        (np.zeros(2), np.array(["a", "b"]), TypeError, "numeric"),
    ],
)
def test_clear_errors(truth, prediction, error, message):
    with pytest.raises(error, match=message):
        pixel_metrics(truth, prediction)


def test_multiclass_iou_hand_computed():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    matrix = class_confusion_matrix(truth, pred, num_classes=4)
    assert matrix.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    iou = per_class_iou(truth, pred, num_classes=4)
    np.testing.assert_allclose(iou[:3], [2 / 4, 2 / 3, 2 / 3])
    assert math.isnan(iou[3])  # absent class: undefined, not 0
    assert mean_iou(truth, pred, num_classes=4) == pytest.approx((2 / 4 + 2 / 3 + 2 / 3) / 3)
    assert mean_iou(truth, pred, num_classes=4, classes=[1, 2]) == pytest.approx(2 / 3)
    # masking: only the first row counts
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]])
    assert per_class_iou(truth, pred, num_classes=3, mask=mask).tolist()[:2] == [0.5, 2 / 3]


def test_multiclass_errors():
    with pytest.raises(ValueError, match=r"labels \[5\] outside 0..2; pass num_classes=6"):
        per_class_iou(np.array([0, 1, 5]), np.array([0, 1, 2]), num_classes=3)
    with pytest.raises(TypeError, match="integer labels"):
        mean_iou(np.array([0.0, 1.0]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="classes must be"):
        mean_iou(np.array([0, 1]), np.array([0, 1]), num_classes=2, classes=[2])
    with pytest.raises(ValueError, match="num_classes"):
        class_confusion_matrix(np.array([0]), np.array([0]), num_classes=0)
