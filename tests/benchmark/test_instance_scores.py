"""The leaderboard's instance columns: object F1 at IoU 0.5, mean matched IoU, adapted Rand error, VI split/merge."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from emzoo.benchmark import Dataset, Split, benchmark
from emzoo.benchmark.instance_scores import INSTANCE_COLUMNS, score_instances, truth_instances
from emzoo.benchmark.report import to_markdown


def _labels() -> np.ndarray:
    labels = np.zeros((2, 24, 24), np.uint8)
    labels[0, 2:8, 2:8] = 1
    labels[0, 12:20, 4:10] = 1
    labels[1, 3:9, 14:22] = 1
    return labels


def _dataset(labels: np.ndarray) -> Dataset:
    raw = np.zeros(labels.shape, np.float32)
    return Dataset(name="tiny", test=Split(raw, labels, "raw", "labels"))


def test_columns_match_direct_metric_calls():
    from emzoo.inference.instances import instances
    from emzoo.metrics import adapted_rand_error, matching_scores, variation_of_information

    labels = _labels()
    prob = labels * 0.9
    prob[0, 12:20, 7] = 0.2  # cuts the second object in two
    prob[1, 20:23, 1:4] = 0.8  # a false object
    board = benchmark([], _dataset(labels), predictions={"p": (prob, "x"), "gt": (labels * 1.0, "gt")},
                      progress=False)
    rows = board.set_index("model")
    assert list(INSTANCE_COLUMNS) == ["inst_f1", "inst_iou", "are", "vi_split", "vi_merge"]
    assert rows.loc["gt", list(INSTANCE_COLUMNS)].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    true = np.stack([instances(s) for s in labels])
    test = np.stack([instances(s) for s in prob])
    test[1][test[1] > 0] += test[0].max()  # slices labelled apart, ids kept unique
    true[1][true[1] > 0] += true[0].max()
    match = matching_scores(true, test)
    assert rows.loc["p", "inst_f1"] == pytest.approx(match.f1)
    assert rows.loc["p", "inst_f1"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 1))  # 2 matched, 3 FP pieces, 1 FN
    assert rows.loc["p", "inst_iou"] == pytest.approx(match.mean_matched_iou)
    assert rows.loc["p", "are"] == pytest.approx(adapted_rand_error(true, test).error)
    vi = variation_of_information(true, test)
    assert (rows.loc["p", "vi_split"], rows.loc["p", "vi_merge"]) == pytest.approx((vi.split, vi.merge))
    table = to_markdown(board)
    assert "F1@0.5 (obj)" in table and "ARE" in table and "VI merge" in table


def test_empty_ground_truth_gives_documented_values_without_warnings():
    empty = np.zeros((2, 16, 16), np.uint8)
    some = np.zeros((2, 16, 16), np.float32)
    some[0, 2:6, 2:6] = 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning (division by zero) may escape
        board = benchmark([], _dataset(empty), predictions={"none": (0 * some, "x"), "some": (some, "x")},
                          progress=False)
    rows = board.set_index("model")
    assert rows.loc["none", "inst_f1"] == 1.0 and rows.loc["some", "inst_f1"] == 0.0
    for label in ("none", "some"):
        assert math.isnan(rows.loc[label, "inst_iou"]) and math.isnan(rows.loc[label, "are"])
        assert rows.loc[label, "vi_merge"] == 0.0
    assert rows.loc["none", "vi_split"] == 0.0 and rows.loc["some", "vi_split"] > 0


def test_instance_ground_truth_is_used_as_is_and_stacks_are_labelled_per_slice():
    touching = np.zeros((1, 8, 8), np.uint16)
    touching[0, 1:7, 1:4] = 5
    touching[0, 1:7, 4:7] = 9  # two touching objects: connected components would merge them
    assert np.array_equal(truth_instances(touching), touching)
    assert score_instances(touching, (touching > 0) * 0.9)["inst_f1"] == 0.0  # cc merges the pair: no match
    column = np.zeros((2, 8, 8), np.uint8)
    column[:, 2:6, 2:6] = 1
    assert truth_instances(column).max() == 2 and truth_instances(column, volume=True).max() == 1
    assert score_instances(column, column * 0.9, volume=True)["inst_f1"] == 1.0


def test_method_option():
    labels = _labels()
    board = benchmark([], _dataset(labels), predictions={"p": (labels * 0.9, "x")}, progress=False,
                      instances="distance_ws")
    assert board.iloc[0]["inst_f1"] == 1.0
    off = benchmark([], _dataset(labels), predictions={"p": (labels * 0.9, "x")}, progress=False, instances=None)
    assert math.isnan(off.iloc[0]["inst_f1"])
    with pytest.raises(ValueError, match="method must be one of"):
        benchmark([], _dataset(labels), predictions={"p": (labels * 0.9, "x")}, progress=False, instances="ws")


def test_min_size_drops_predicted_specks_before_matching():
    gt = np.zeros((16, 16), np.uint8)
    gt[1:5, 1:5] = 1
    gt[8:14, 8:14] = 1
    prob = gt * 0.9
    prob[0, 15] = prob[15, 0] = prob[7, 2] = 0.9  # three one-pixel specks
    from emzoo.benchmark.instance_scores import score_instances

    assert score_instances(gt, prob)["inst_f1"] < 0.6  # 2 matches, 3 false objects
    assert score_instances(gt, prob, min_size=2)["inst_f1"] == 1.0
