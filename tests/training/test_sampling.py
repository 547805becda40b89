"""Window samplers: uniform, probability map, CDeep3M's accept-background-with-1/4, class-balanced."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.training.sampling import (
    AcceptRejectSampler,
    ClassBalancedSampler,
    ProbabilityMapSampler,
    UniformSampler,
    make_sampler,
)


def _draw(sampler, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return [sampler.sample(rng) for _ in range(n)]


def test_uniform_windows_stay_inside_and_cover_the_range():
    labels = [np.zeros((3, 20, 30)), np.zeros((1, 20, 30))]
    s = UniformSampler().prepare(labels, (1, 8, 8))
    draws = _draw(s)
    for v, (z, y, x) in draws:
        assert 0 <= z < labels[v].shape[0] and 0 <= y <= 12 and 0 <= x <= 22
    assert {y for _, (_, y, _) in draws} == set(range(13))
    share = np.mean([v == 0 for v, _ in draws])
    assert share == pytest.approx(0.75, abs=0.04)  # volumes drawn in proportion to their window positions


def test_windows_larger_than_a_small_volume_are_centred():
    s = UniformSampler().prepare([np.zeros((1, 10, 10))], (1, 16, 16))
    assert {c for _, c in _draw(s, 20)} == {(0, -3, -3)}


def test_cdeep3m_accepts_background_centres_with_probability_one_quarter():
    labels = np.zeros((1, 100, 100), np.uint8)
    labels[0, :, :50] = 1  # half the centres are foreground
    s = AcceptRejectSampler(0.25).prepare([labels], (1, 1, 1))
    fg = np.mean([labels[0, y, x] > 0 for _, (_, y, x) in _draw(s, 4000)])
    assert fg == pytest.approx(1 / (1 + 0.25), abs=0.03)  # accepted fg : bg = 1 : 1/4


def test_probability_map_sampler_follows_the_map():
    labels = np.zeros((1, 50, 50), np.uint8)
    pmap = np.zeros((1, 50, 50))
    pmap[0, 10, 40] = 3.0
    pmap[0, 30, 5] = 1.0
    s = ProbabilityMapSampler([pmap]).prepare([labels], (1, 1, 1))
    corners = [c for _, c in _draw(s, 2000)]
    assert set(corners) == {(0, 10, 40), (0, 30, 5)}
    assert np.mean([c == (0, 10, 40) for c in corners]) == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="shapes"):
        ProbabilityMapSampler([pmap[:, :10]]).prepare([labels], (1, 1, 1))


def test_default_probability_map_favours_foreground():
    labels = np.zeros((1, 100, 100), np.uint8)
    labels[0, :10] = 1  # 10 % foreground
    s = ProbabilityMapSampler(foreground_weight=9.0).prepare([labels], (1, 1, 1))
    fg = np.mean([labels[0, y, x] for _, (_, y, x) in _draw(s)])
    assert fg == pytest.approx(0.5, abs=0.04)  # 9 * 0.1 : 0.9


def test_class_balanced_windows_contain_the_drawn_class_at_the_given_rates():
    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, 5, 5] = 1
    labels[0, 50:52, 50:52] = 2
    s = ClassBalancedSampler((0.2, 0.4, 0.4)).prepare([labels], (1, 8, 8))
    wins = [labels[0, y:y + 8, x:x + 8] for _, (_, y, x) in _draw(s)]
    has1 = np.mean([(w == 1).any() for w in wins])
    has2 = np.mean([(w == 2).any() for w in wins])
    assert has1 >= 0.37 and has2 >= 0.37  # 0.4 each, plus background windows that happen to hit them
    assert has1 < 0.5 and has2 < 0.5


def test_class_balanced_drops_absent_classes_and_make_sampler():
    labels = np.zeros((1, 8, 8), np.uint8)
    labels[0, 0, 0] = 1
    s = make_sampler("class_balanced", class_probabilities=(0.2, 0.4, 0.4)).prepare([labels], (1, 2, 2))
    assert s.classes == [0, 1]
    np.testing.assert_allclose(s.class_p, [1 / 3, 2 / 3])
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("random")
