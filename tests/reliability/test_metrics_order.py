"""Issue 11, "no silent wrong answer": one argument order, one binarisation rule, one empty-mask rule for the metrics.

- Every public pair metric of :mod:`emzoo.metrics` takes scikit-image's ``(image_true, image_test)``; the thinned
  Fiji scores used to take ``(prediction, ground_truth)`` and are asymmetric, so a swapped call gave a plausible
  wrong number. The old keywords and the clearly old positional order still give the right number, with a
  ``DeprecationWarning``.
- :func:`emzoo.metrics.binarize` (``prob > threshold``) binarises metrics, ensemble votes and ``score``.
- Two empty masks agree perfectly: F1 = Jaccard = 1 in ``pixel_metrics``, ``score`` and ``PixelF1``.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from scipy import ndimage

import emzoo.metrics as metrics
from emzoo.metrics import (
    all_metrics,
    binarize,
    confusion_matrix,
    pixel_metrics,
    rand_info_thinned,
    vinfo_thinned,
    vrand_thinned,
)

RNG = np.random.default_rng(0)
PRED = ndimage.uniform_filter(RNG.random((2, 16, 16)), size=(1, 3, 3)).astype(np.float32)  # soft map
GT = ndimage.uniform_filter(RNG.random((2, 16, 16)), size=(1, 3, 3)) > 0.5  # binary truth

PAIR_FUNCTIONS = [
    "all_metrics", "confusion_matrix", "pixel_metrics", "class_confusion_matrix", "per_class_iou", "mean_iou",
    "rand_info_scores", "rand_info_thinned", "vrand_thinned", "vinfo_thinned", "contingency_table",
    "adapted_rand_error", "variation_of_information",
]


def _right() -> dict:
    return rand_info_thinned(image_true=GT, image_test=PRED)


@pytest.mark.parametrize("name", PAIR_FUNCTIONS)
def test_every_pair_metric_takes_image_true_then_image_test(name):
    params = list(inspect.signature(getattr(metrics, name)).parameters)
    assert params[:2] == ["image_true", "image_test"], name


def test_thinned_scores_are_asymmetric_so_the_order_matters():
    swapped = rand_info_thinned(image_true=PRED, image_test=GT)
    assert (swapped["vrand"], swapped["vinfo"]) != pytest.approx((_right()["vrand"], _right()["vinfo"]))


def test_new_positional_order_is_silent_and_right():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rand_info_thinned(GT, PRED) == _right()
        assert vrand_thinned(GT, PRED) == _right()["vrand"]
        assert vinfo_thinned(GT, PRED) == _right()["vinfo"]
        row = all_metrics(GT, PRED)
    assert row["vrand"] == _right()["vrand"] and row["vinfo"] == _right()["vinfo"]


@pytest.mark.parametrize("func, key", [(rand_info_thinned, None), (vrand_thinned, "vrand"),
                                       (vinfo_thinned, "vinfo")])
def test_old_positional_order_is_detected_swapped_and_warned(func, key):
    with pytest.warns(DeprecationWarning, match="old .prediction, ground_truth. order"):
        old = func(PRED, GT)
    assert old == (_right() if key is None else _right()[key])


@pytest.mark.parametrize("call", [
    lambda: rand_info_thinned(prediction=PRED, ground_truth=GT),
    lambda: rand_info_thinned(ground_truth=GT, prediction=PRED),
    lambda: rand_info_thinned(PRED, ground_truth=GT),  # valid before: the positional was the prediction
    lambda: rand_info_thinned(PRED, GT, thresholds=None),
])
def test_old_thinned_keywords_keep_their_meaning(call):
    with pytest.warns(DeprecationWarning):
        assert call() == _right()


def test_old_pixel_keywords_keep_their_meaning():
    right = pixel_metrics(GT, PRED)
    assert right["sensitivity"] != right["ppv"]  # asymmetric: a swap would show
    with pytest.warns(DeprecationWarning, match="image_true, image_test"):
        assert pixel_metrics(prediction=PRED, ground_truth=GT) == right
    with pytest.warns(DeprecationWarning):
        assert pixel_metrics(GT, prediction=PRED) == right
    with pytest.warns(DeprecationWarning):
        assert confusion_matrix(prediction=PRED, ground_truth=GT) == confusion_matrix(GT, PRED)
    with pytest.warns(DeprecationWarning):
        assert all_metrics(prediction=PRED, ground_truth=GT) == all_metrics(GT, PRED)
    labels_true, labels_test = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])
    with pytest.warns(DeprecationWarning):
        old = metrics.class_confusion_matrix(prediction_labels=labels_test, ground_truth=labels_true, num_classes=3)
    np.testing.assert_array_equal(old, metrics.class_confusion_matrix(labels_true, labels_test, num_classes=3))


def test_mixing_old_and_new_names_is_refused():
    with pytest.raises(TypeError, match="old .* and new"):
        rand_info_thinned(image_true=GT, prediction=PRED)
    with pytest.raises(TypeError, match="multiple values"):
        pixel_metrics(PRED, ground_truth=GT)  # the first positional is the ground truth in the old order too
    with pytest.raises(TypeError, match="missing"):
        vrand_thinned(prediction=PRED)


def test_soft_truth_with_binary_proposal_by_keyword_is_never_swapped():
    soft_truth, binary_test = PRED, GT
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = rand_info_thinned(image_true=soft_truth, image_test=binary_test)
    assert kept != _right()


def test_binarize_is_the_rule_of_metrics_votes_and_score():
    from emzoo.inference import Ensemble
    from emzoo.training.evaluate import score

    at = np.full((2, 2, 1), 0.5, np.float32)
    above = np.full((2, 2, 1), np.nextafter(np.float32(0.5), np.float32(1)), np.float32)
    assert not binarize(at).any() and binarize(above).all()
    # a member exactly at the threshold votes background, as the metrics count it (it voted foreground with >=)
    votes = Ensemble("ab", mode="majority").combine([at, above])
    np.testing.assert_allclose(votes, 0.5)
    assert Ensemble.majority_mask(votes).all()  # the vote *fraction* keeps its rule: a tie is foreground
    assert Ensemble("a", mode="majority").combine([at]).max() == 0.0
    labels = np.ones((2, 2), int)
    assert score(labels, at)["f1"] == pixel_metrics(labels, at[..., 0])["f1"] == 0.0
    assert score(labels, at, threshold=0.4)["f1"] == pixel_metrics(labels, at[..., 0], threshold=0.4)["f1"] == 1.0
    softmax = np.concatenate([1 - at, at], axis=-1)
    assert score(labels, softmax)["f1"] == 0.0 and score(labels, softmax, threshold=0.4)["f1"] == 1.0
    with pytest.raises(ValueError, match="arg-max"):
        score(labels, np.full((2, 2, 3), 1 / 3, np.float32), threshold=0.3)
    with pytest.raises(ValueError, match="NaN"):
        Ensemble("a", mode="majority").combine([np.full((2, 2, 1), np.nan, np.float32)])


def test_one_empty_rule_in_pixel_metrics_score_and_pixel_f1():
    from emzoo.training.evaluate import PixelF1, score

    stack = np.zeros((2, 4, 4))
    stack[0, 1:3, 1:3] = 1  # slice 1 is empty in both
    assert pixel_metrics(stack, stack, aggregate="mean", zero_division=0.0)["f1"] == 1.0  # was 0.5
    empty = np.zeros((3, 3), int)
    out = score(empty, np.zeros((3, 3, 1), np.float32))
    assert out["f1"] == out["jaccard"] == 1.0  # was NaN
    metric = PixelF1()
    metric.update_state(np.zeros((4, 1), "float32"), np.zeros((4, 1), "float32"))
    assert float(metric.result()) == 1.0  # was 0
    metric.update_state(np.ones((4, 1), "float32"), np.zeros((4, 1), "float32"))
    assert float(metric.result()) == 0.0
