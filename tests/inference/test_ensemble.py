"""Ensembles: averaging, majority voting (ties count as foreground), top-k by score, mixed heads, and predict."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.inference import Ensemble, foreground, predict
from tests.inference import toys


def _maps(*values, channels=1):
    return [np.full((2, 3, channels), v, np.float32) for v in values]


def test_average():
    out = Ensemble("abc").combine(_maps(0.2, 0.4, 0.9))
    np.testing.assert_allclose(out, 0.5)


def test_majority_odd_and_tie():
    odd = Ensemble("abc", mode="majority").combine(_maps(0.2, 0.6, 0.8))
    np.testing.assert_allclose(odd, 2 / 3)
    tie = Ensemble("ab", mode="majority").combine(_maps(0.4, 0.7))
    np.testing.assert_allclose(tie, 0.5)
    assert (foreground(tie) >= 0.5).all()  # a tie counts as foreground (TRAINING.md §1.4)
    strict = Ensemble("abc", mode="majority", threshold=0.65).combine(_maps(0.2, 0.6, 0.8))
    np.testing.assert_allclose(strict, 1 / 3)


def test_majority_multiclass_is_argmax_votes():
    a = np.array([[[0.7, 0.2, 0.1]]], np.float32)
    b = np.array([[[0.1, 0.5, 0.4]]], np.float32)
    c = np.array([[[0.2, 0.3, 0.5]]], np.float32)
    np.testing.assert_allclose(Ensemble("abc", mode="majority").combine([a, b, c]), [[[1 / 3, 1 / 3, 1 / 3]]])
    np.testing.assert_allclose(Ensemble("abc", mode="majority").combine([a, b, b]), [[[1 / 3, 2 / 3, 0]]])


def test_topk_selects_by_score():
    ens = Ensemble("abcd", mode="topk", k=2, scores=[0.5, 0.9, 0.7, 0.9])
    assert ens.selected == [1, 3]
    assert Ensemble("abc", mode="topk", k=2, scores=[0.8, 0.8, 0.8]).selected == [0, 1]  # ties keep order
    with pytest.raises(ValueError, match="pass scores="):
        Ensemble("ab", mode="topk", k=1)
    with pytest.raises(ValueError, match="needs k between 1 and 2"):
        Ensemble("ab", mode="topk", k=3, scores=[1, 2])


def test_mixed_sigmoid_and_softmax_members():
    sig = _maps(0.8)[0]
    soft = np.concatenate([1 - _maps(0.4)[0], _maps(0.4)[0]], axis=-1)
    out = Ensemble("ab").combine([sig, soft])
    assert out.shape == (2, 3, 2)
    np.testing.assert_allclose(foreground(out), 0.6)
    with pytest.raises(ValueError, match="disagree on the classes"):
        Ensemble("ab").combine([sig, np.zeros((2, 3, 3), np.float32)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    with pytest.raises(ValueError, match="mode must be one of"):
        Ensemble("a", mode="median")
    with pytest.raises(ValueError, match="one per member"):
        Ensemble("ab", scores=[1.0])


def test_predict_ensemble_equals_mean_of_members():
    a, b = toys.tiny_unet(0), toys.tiny_unet(7)
    image = np.random.default_rng(0).random((40, 44)).astype(np.float32)
    pa, pb = (predict(m, image, progress=False) for m in (a, b))
    np.testing.assert_allclose(predict(Ensemble([a, b]), image, progress=False), (pa + pb) / 2, atol=1e-6)
    votes = predict(Ensemble([a, b, a], mode="majority"), image, progress=False)
    np.testing.assert_allclose(votes, Ensemble("xyz", mode="majority").combine([pa, pb, pa]))
    top = predict(Ensemble([a, b], mode="topk", k=1, scores=[0.1, 0.2]), image, progress=False)
    np.testing.assert_allclose(top, pb, atol=1e-6)
