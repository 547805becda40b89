"""Thinned V_Rand / V_Info (Fiji semantics) and the scikit-image wrappers: hand-computed and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.metrics

from emzoo.metrics import (
    adapted_rand_error,
    contingency_table,
    fiji_thresholds,
    rand_info_scores,
    rand_info_thinned,
    variation_of_information,
    vinfo_thinned,
    vrand_thinned,
)
from emzoo.metrics._validate import threshold_float32
from tests.metrics import fiji_reference

# METRICS.md §4.1: smallest 8-bit value that is foreground at each of Fiji's thresholds.
K_MIN = [1, 26, 51, 77, 102, 128, 153, 179, 204, 230, 255]


def test_fiji_thresholds_are_repeated_additions():
    t = fiji_thresholds()
    assert t.tolist() == [
        0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6, 0.7, 0.7999999999999999, 0.8999999999999999,
        0.9999999999999999,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="step > 0"):
        fiji_thresholds(step=0)


def test_k_min_table_for_8bit_maps():
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    k_min = [int(np.argmax(values > threshold_float32(t))) for t in fiji_thresholds()]
    assert k_min == K_MIN
    # the float64 comparison Fiji makes gives the same table; NumPy's float32 rounding of 0.2 would not
    assert [int(np.argmax(values.astype(np.float64) > t)) for t in fiji_thresholds()] == K_MIN
    assert not values[51] > np.float32(0.2)


def test_k51_is_foreground_at_02_even_for_float64_input():
    # 51/255 rounds (as float32) above 0.2, so it is foreground at the third threshold; float64 input is cast
    # to float32 first, as Fiji reads images.
    gt = np.array([[1, 1, 1, 0, 1, 1, 1]], float)  # two objects
    pred = np.zeros((1, 7))
    pred[0, [1, 5]] = 51 / 255  # float64; one dot inside each object
    curves = rand_info_thinned(gt, pred, return_curves=True)["vrand_curve"]
    assert curves[2] == 1.0  # t = 0.2: the dots are foreground, thinning recovers both objects
    # t = 0.3: empty proposal, one segment over both objects: 2 (9 + 9) / (18 + 36)
    assert curves[3] == pytest.approx(2 / 3)


def test_scores_hand_computed():
    # one object split in two halves: ΣA = 16, ΣB = 8, ΣP = 8 -> 2·8 / 24; H(A) = 0 -> V_Info = 0
    scores = rand_info_scores(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 2, 2]]))
    assert scores["vrand"] == pytest.approx(2 / 3) and scores["vinfo"] == 0.0
    # two objects of two pixels, proposal with one line pixel (a singleton):
    # ΣA = 8, ΣB = 4 + 1 + 1, ΣP = 4 + 1 + 1 -> 12/14; H(A) = ln2, H(B) = H(A,B) = 1.5 ln2 -> V_Info = 2/2.5
    scores = rand_info_scores(np.array([[1, 1, 2, 2]]), np.array([[1, 1, 0, 2]]))
    assert scores["vrand"] == pytest.approx(6 / 7) and scores["vinfo"] == pytest.approx(0.8)
    # background of the ground truth is ignored, whatever the proposal says there
    scores = rand_info_scores(np.array([[0, 1, 1, 0, 2, 2]]), np.array([[5, 1, 1, 5, 2, 2]]))
    assert scores == {"vrand": 1.0, "vinfo": 1.0}
    empty = rand_info_scores(np.zeros((2, 2), int), np.ones((2, 2), int))
    assert math.isnan(empty["vrand"]) and math.isnan(empty["vinfo"])


def test_thinning_joins_fragments_hand_computed():
    gt = np.array([[1, 1, 1, 0, 1, 1, 1]], float)  # two objects
    pred = np.array([[0, 1, 0, 0, 0, 1, 0]], float)  # one dot inside each
    # thinned proposal [1 1 1 0 2 2 2] matches the two objects exactly
    assert vrand_thinned(gt, pred) == 1.0 and vinfo_thinned(gt, pred) == 1.0
    # a single GT object: n = 7, one line pixel: ΣA = 49, ΣB = ΣP = 9 + 9 + 1 -> 38 / 68
    gt_one = np.ones((1, 7))
    result = rand_info_thinned(gt_one, pred, return_curves=True)
    assert result["vrand"] == pytest.approx(38 / 68)
    assert result["vinfo"] == 0.0  # one GT component: H(A) = 0


def test_stack_is_the_mean_of_its_slices():
    gt = np.zeros((2, 1, 7))
    gt[0] = [1, 1, 1, 0, 1, 1, 1]
    gt[1] = 1
    pred = np.zeros((2, 1, 7))
    pred[:, 0, [1, 5]] = 0.75
    stack = rand_info_thinned(gt, pred, thresholds=[0.5], return_curves=True)
    assert stack["vrand_per_slice"].shape == (1, 2)
    assert stack["vrand"] == pytest.approx((1.0 + 38 / 68) / 2)
    singles = [rand_info_thinned(gt[z], pred[z], thresholds=[0.5])["vrand"] for z in range(2)]
    assert stack["vrand"] == pytest.approx(np.mean(singles))
    # slice order does not matter
    assert rand_info_thinned(gt[::-1], pred[::-1], thresholds=[0.5])["vrand"] == stack["vrand"]
    # above 0.75 the proposal is empty: one segment per slice, (2/3 + 1) / 2 beats the thinned dots
    swept = rand_info_thinned(gt, pred, return_curves=True)
    assert swept["vrand_curve"][:8] == pytest.approx([stack["vrand"]] * 8)
    assert swept["vrand"] == pytest.approx(5 / 6) and swept["vrand_threshold"] == 0.7999999999999999


def test_matches_reference_on_random_probability_maps():
    rng = np.random.default_rng(3)
    thresholds = [0.0, 0.25, 0.5, 0.75]
    for _ in range(10):
        shape = (2, *rng.integers(4, 16, size=2))
        from scipy import ndimage

        pred = ndimage.uniform_filter(rng.random(shape), size=(1, 3, 3)).astype(np.float32)
        gt = (ndimage.uniform_filter(rng.random(shape), size=(1, 3, 3)) > 0.5).astype(np.float32)
        result = rand_info_thinned(gt, pred, thresholds=thresholds, return_curves=True)
        expected = fiji_reference.thinned_curves(pred, gt, thresholds)
        np.testing.assert_allclose(result["vrand_curve"], expected[:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(result["vinfo_curve"], expected[:, 1], rtol=0, atol=1e-12)


def test_empty_ground_truth_thresholds_are_skipped():
    gt = np.zeros((6, 6))
    gt[1:3, 1:5] = 0.35  # foreground only below t = 0.35
    gt[4:6, 1:5] = 0.35
    pred = gt.copy()
    result = rand_info_thinned(gt, pred, return_curves=True)
    assert np.isnan(result["vrand_curve"][4:]).all() and not np.isnan(result["vrand_curve"][:4]).any()
    assert result["vrand"] == 1.0 and result["vrand_threshold"] == 0.0
    nothing = rand_info_thinned(np.zeros((4, 4)), np.zeros((4, 4)))
    assert nothing["vrand"] == 0.0 and math.isnan(nothing["vrand_threshold"])


def test_empty_prediction_and_all_foreground():
    gt = np.zeros((6, 6))
    gt[1:3, 1:5] = 1
    gt[4:6, 1:5] = 1
    # empty proposal: one segment covers both 8-pixel objects: ΣA = 128, ΣB = 256, ΣP = 128
    empty = rand_info_thinned(gt, np.zeros_like(gt))
    assert empty["vrand"] == pytest.approx(2 * 128 / (128 + 256)) and empty["vinfo"] == 0.0
    # all-foreground proposal: the same single segment
    full = rand_info_thinned(gt, np.ones_like(gt))
    assert full["vrand"] == empty["vrand"] and full["vinfo"] == 0.0
    # all-foreground ground truth: one component, V_Info = 0 by Fiji's rule
    assert vinfo_thinned(np.ones_like(gt), gt) == 0.0


def test_thresholds_returned_and_custom_thresholds():
    gt = np.array([[1, 1, 1, 0, 1, 1, 1]], float)
    pred = np.array([[0.2, 0.9, 0.2, 0.6, 0.2, 0.9, 0.2]])
    score, threshold = vrand_thinned(gt, pred, return_threshold=True)
    # float32(0.6) > 0.6, so the bridge is still foreground at t = 0.6; t = 0.7 is the first clean split
    assert score == 1.0 and threshold == 0.7
    score, threshold = vinfo_thinned(gt, pred, thresholds=[0.5, 0.8], return_threshold=True)
    assert (score, threshold) == (1.0, 0.8)
    with pytest.raises(ValueError, match="finite"):
        rand_info_thinned(gt, pred, thresholds=[0.5, float("nan")])


@pytest.mark.parametrize(
    ("prediction", "truth", "message"),
    [
        (np.full((4, 4), np.nan), np.zeros((4, 4)), "NaN/Inf"),
        (np.zeros((4, 4)), np.zeros((4, 5)), r"image_true has shape \(4, 5\).*image_test has shape \(4, 4\)"),
        (np.zeros((4, 4)), np.array([[0, 1, 2, 3]] * 4), r"integer values \[0, 1, 2, 3\].*labels > 0"),
        (np.full((4, 4), 2.0), np.zeros((4, 4)), r"outside \[0, 1\]"),
        (np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 4)), "2D or 3D"),
        (np.zeros((0, 4)), np.zeros((0, 4)), "empty"),
    ],
)
def test_clear_errors(prediction, truth, message):
    with pytest.raises(ValueError, match=message):
        rand_info_thinned(truth, prediction)


def test_uint8_map_error_names_the_conversion():
    with pytest.raises(ValueError, match=r"astype\(np.float32\) / 255"):
        vrand_thinned(np.ones((3, 3), np.uint8), np.full((3, 3), 200, np.uint8))


def test_skimage_wrappers_match_skimage_and_share_a_table():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, size=(3, 8, 8))
    test = rng.integers(0, 5, size=(3, 8, 8))
    expected = skimage.metrics.adapted_rand_error(true, test)
    assert tuple(adapted_rand_error(true, test)) == pytest.approx(expected)
    table = contingency_table(true, test, ignore_labels=(0,))
    assert tuple(adapted_rand_error(table=table)) == pytest.approx(expected)
    voi = variation_of_information(true, test)
    assert tuple(voi) == pytest.approx(skimage.metrics.variation_of_information(true, test))
    normalised = contingency_table(true, test, normalize=True)
    assert tuple(variation_of_information(table=normalised)) == pytest.approx(tuple(voi))
    assert voi.split > 0 and voi.merge > 0


def test_skimage_wrappers_hand_computed_and_errors():
    true = np.array([[1, 1, 2, 2]])
    merged = np.array([[1, 1, 1, 1]])
    assert adapted_rand_error(true, merged).error == 0.5
    assert variation_of_information(true, merged) == (0.0, 1.0)  # one bit lost by the merge
    with pytest.raises(TypeError, match="integer labels"):
        adapted_rand_error(true.astype(float), merged)
    with pytest.raises(ValueError, match="negative"):
        variation_of_information(-true, merged)
    with pytest.raises(ValueError, match="shape mismatch"):
        contingency_table(true, merged[:, :3])
    with pytest.raises(ValueError, match="table="):
        adapted_rand_error(true)


def test_small_batches_give_the_same_scores(monkeypatch):
    from emzoo.metrics import rand_info

    rng = np.random.default_rng(11)
    pred = rng.random((3, 12, 10)).astype(np.float32)
    gt = (rng.random((3, 12, 10)) > 0.4).astype(np.float32)
    whole = rand_info_thinned(gt, pred, return_curves=True)
    monkeypatch.setattr(rand_info, "BATCH_PIXELS", 300)  # two images per flood, several flushes
    batched = rand_info_thinned(gt, pred, return_curves=True)
    np.testing.assert_array_equal(whole["vrand_per_slice"], batched["vrand_per_slice"])
    np.testing.assert_array_equal(whole["vinfo_per_slice"], batched["vinfo_per_slice"])


def test_binary_proposal_scores_every_threshold_alike():
    gt = np.array([[1, 1, 1, 0, 1, 1, 1]], bool)
    pred = np.array([[0, 1, 0, 0, 0, 1, 0]], bool)
    result = rand_info_thinned(gt, pred, return_curves=True)
    assert (result["vrand_curve"] == 1.0).all() and result["vrand_threshold"] == 0.0


def test_adapted_rand_error_of_single_pixel_objects_is_nan_without_a_warning():
    """No two ground-truth pixels share an object: recall is 0/0. NaN (emzoo's rule), and no numpy warning."""
    import warnings

    from emzoo.metrics import adapted_rand_error

    true = (np.arange(64).reshape(8, 8) % 7 == 0).astype(np.uint32) * np.arange(64).reshape(8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = adapted_rand_error(true, np.ones((8, 8), np.uint32))
    assert np.isnan(result.precision) and result.recall == 0.0 and result.error == 1.0
