"""``emzoo.metrics.matching_scores``: one-to-one IoU matching on known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emzoo.inference.instances import instances
from emzoo.metrics import MatchingScores, matching_scores


def _three_objects() -> np.ndarray:
    labels = np.zeros((32, 32), np.uint16)
    labels[2:10, 2:10] = 1
    labels[2:10, 20:30] = 2
    labels[20:30, 5:15] = 3
    return labels


def test_perfect_match_ignores_ids():
    true = _three_objects()
    test = np.choose(true, [0, 7, 3, 42]).astype(np.uint32)  # same objects, other (non-consecutive) ids
    scores = matching_scores(true, test)
    assert isinstance(scores, MatchingScores)
    assert scores == (1.0, 1.0, 1.0, 1.0, 3, 0, 0)


def test_one_missed_object():
    true = _three_objects()
    test = true.copy()
    test[test == 3] = 0
    scores = matching_scores(true, test)
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 1)
    assert scores.precision == 1.0 and scores.recall == pytest.approx(2 / 3) and scores.f1 == pytest.approx(0.8)
    assert scores.mean_matched_iou == 1.0


def test_one_split_object():
    true = _three_objects()
    test = true.copy()
    test[2:10, 2:4] = 4  # object 1 (8 x 8) split into 8 x 2 and 8 x 6: IoU 0.25 and 0.75
    scores = matching_scores(true, test)
    assert (scores.tp, scores.fp, scores.fn) == (3, 1, 0)
    assert scores.precision == 0.75 and scores.recall == 1.0 and scores.f1 == pytest.approx(6 / 7)
    assert scores.mean_matched_iou == pytest.approx((0.75 + 1 + 1) / 3)
    # split in halves: neither half passes IoU > 0.5, so the true object is missed and both halves are FP
    test[2:10, 2:6] = 4
    test[2:10, 6:10] = 1
    assert matching_scores(true, test)[4:] == (2, 2, 1)


def test_low_threshold_uses_one_to_one_assignment():
    true = np.array([[1, 1, 1, 1, 2, 2]])
    test = np.array([[3, 3, 4, 4, 4, 4]])
    # IoU(1,3) = 0.5, IoU(1,4) = 2/6, IoU(2,4) = 0.5: each object matches once, maximising the total IoU
    scores = matching_scores(true, test, iou_threshold=0.1)
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 0)
    assert scores.mean_matched_iou == pytest.approx(0.5)
    assert matching_scores(true, test).tp == 0  # IoU must exceed the threshold


def test_empty_images():
    empty = np.zeros((8, 8), np.uint8)
    both = matching_scores(empty, empty)
    assert both.f1 == 1.0 and math.isnan(both.precision) and math.isnan(both.recall)
    assert math.isnan(both.mean_matched_iou)
    none_found = matching_scores(_three_objects(), np.zeros((32, 32), np.uint8))
    assert none_found.f1 == 0.0 and none_found.recall == 0.0 and math.isnan(none_found.precision)


def test_3d_and_against_instances():
    true = np.zeros((4, 16, 16), np.uint32)
    true[:, 2:7, 2:7] = 1
    true[:, 9:14, 9:14] = 2
    prob = np.where(true > 0, 0.9, 0.1).astype(np.float32)
    assert matching_scores(true, instances(prob, "cc")).f1 == 1.0


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "fragment"),
    [
        ((np.zeros((4, 4), int), np.zeros((4, 5), int)), {}, ValueError, "shape mismatch"),
        ((np.zeros((4, 4), int), np.zeros((4, 4)) + 0.5), {}, TypeError, "image_test must hold integer labels"),
        ((np.zeros((4, 4), int), -np.ones((4, 4), int)), {}, ValueError, "negative labels"),
        ((np.zeros((4, 4), int), np.zeros((4, 4), int)), {"iou_threshold": 1.0}, ValueError, "iou_threshold must"),
        ((np.zeros((4, 4), int), np.zeros((4, 4), int)), {"iou_threshold": -0.1}, ValueError, "in [0, 1)"),
    ],
)
def test_bad_arguments(args, kwargs, error, fragment):
    with pytest.raises(error) as info:
        matching_scores(*args, **kwargs)
    assert fragment in str(info.value)
