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
    # the empty rule: two empty masks agree perfectly (F1 = Dice = Jaccard = 1); recall and precision are undefined
    assert both["f1"] == both["dice"] == both["jaccard"] == 1.0
    assert math.isnan(both["sensitivity"]) and math.isnan(both["ppv"])
    assert both["accuracy"] == 1.0 and both["specificity"] == 1.0 and both["iou_background"] == 1.0
    assert both["iou_overall"] == 1.0
    assert no_pred["f1"] == 0.0 and no_pred["jaccard"] == 0.0 and math.isnan(no_pred["ppv"])
    assert no_gt["f1"] == 0.0 and math.isnan(no_gt["sensitivity"]) and no_gt["ppv"] == 0.0
    # zero_division is for undefined ratios only, never for the F1 / Jaccard of two empty masks
    for value in (0.0, 1.0, np.nan):
        m = pixel_metrics(zeros, zeros, zero_division=value)
        assert m["f1"] == m["jaccard"] == 1.0
        assert m["sensitivity"] == value or (math.isnan(value) and math.isnan(m["sensitivity"]))


def test_all_foreground():
    ones = np.ones((2, 3))
    m = pixel_metrics(ones, ones)
    assert m["f1"] == m["jaccard"] == m["accuracy"] == m["sensitivity"] == m["ppv"] == 1.0
    assert math.isnan(m["specificity"]) and math.isnan(m["npv"])
    assert m["iou_background"] == 1.0  # neither mask has background: they agree on it perfectly
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
        (np.zeros((3, 4)), np.zeros((4, 3)), ValueError, r"image_true has shape \(3, 4\).*shape \(4, 3\)"),
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


def test_empty_slice_rule_with_mean_aggregate():
    """Issue 11: an empty slice (in both stacks) counts as F1 = 1, and an undefined ratio is never averaged as 0."""
    gt = np.zeros((2, 4, 4))
    gt[0, 1:3, 1:3] = 1  # slice 1 is empty in both stacks
    for zero_division in (np.nan, 0.0, 1.0):
        mean = pixel_metrics(gt, gt, aggregate="mean", zero_division=zero_division)
        assert mean["f1"] == mean["jaccard"] == mean["dice"] == 1.0  # was 0.5 with zero_division=0.0
        assert mean["sensitivity"] == 1.0 and mean["ppv"] == 1.0  # slice 1 undefined: skipped, not 0
    pred = gt.copy()
    pred[1, 0, 0] = 1  # a false positive on the empty slice
    mean = pixel_metrics(gt, pred, aggregate="mean")
    assert mean["f1"] == 0.5 and mean["sensitivity"] == 1.0 and mean["ppv"] == 0.5
    # no slice defines sensitivity: zero_division is the result, not the average of anything
    empty = np.zeros((2, 3, 3))
    assert pixel_metrics(empty, empty, aggregate="mean", zero_division=0.0)["sensitivity"] == 0.0
    assert math.isnan(pixel_metrics(empty, empty, aggregate="mean")["sensitivity"])


def test_fully_masked_item_is_undefined_not_perfect():
    gt = np.zeros((2, 3))
    gt[0, 0] = 1
    mask = np.array([[1, 1, 1], [0, 0, 0]])  # item 1 has no evaluated pixel
    mean = pixel_metrics(gt, gt, mask=mask, aggregate="mean")
    assert mean["f1"] == 1.0 and mean["accuracy"] == 1.0
    assert math.isnan(pixel_metrics(gt, gt, mask=np.zeros((2, 3)))["f1"])


def test_binarize_is_strict_and_float32_like_the_metrics():
    from emzoo.metrics import binarize

    prob = np.array([0.0, 0.5, np.nextafter(np.float32(0.5), np.float32(1)), 1.0], np.float32)
    assert binarize(prob).tolist() == [False, False, True, True]
    assert binarize(prob, threshold=0.0).tolist() == [False, True, True, True]
    # the metrics binarise with it: a prediction exactly at the threshold is background
    assert confusion_matrix(np.array([1, 0]), np.array([0.5, 0.5])) == ConfusionCounts(0, 0, 1, 1)
    # 51/255 in float32 lies above 0.2 in float64 (Fiji's comparison)
    assert binarize(np.array([51 / 255], np.float32), 0.2).tolist() == [True]
    assert binarize(np.array([True, False])).tolist() == [True, False]
    assert binarize(np.array([0, 1], np.uint8)).dtype == bool
    with pytest.raises(ValueError, match="NaN"):
        binarize(np.array([np.nan, 0.2]))
    with pytest.raises(ValueError, match="outside"):
        binarize(np.array([1.5]))
    with pytest.raises(ValueError, match="finite"):
        binarize(np.array([0.2]), threshold=float("nan"))
