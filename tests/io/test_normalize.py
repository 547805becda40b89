"""Normalisation specs: fitting, applying, and resolving per-image statistics to fixed numbers for tiling."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from emzoo.io.normalize import fit_normalization, normalize, resolve_normalization


def test_fit_and_apply():
    spec = fit_normalization(np.array([1.0, 3.0]), "zscore")
    assert spec == {"method": "zscore", "mean": 2.0, "std": 1.0}
    np.testing.assert_allclose(normalize(np.array([1, 3]), spec), [-1.0, 1.0])
    assert normalize(np.array([2, 4], np.uint8), "minmax").tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="unknown normalisation method 'bogus'"):
        normalize(np.zeros(2), {"method": "bogus"})


@pytest.mark.parametrize("lazy", [False, True])
def test_resolve_minmax_matches_per_image(lazy):
    image = np.random.default_rng(0).normal(size=(4, 30, 30)).astype(np.float32)
    source = da.from_array(image, chunks=(1, 10, 10)) if lazy else image
    spec = resolve_normalization(source, "minmax")
    assert spec["min"] == pytest.approx(float(image.min())) and spec["max"] == pytest.approx(float(image.max()))
    # A tile normalised with the resolved spec matches the whole image normalised per image.
    np.testing.assert_allclose(normalize(image[1:2, :5], spec), normalize(image, "minmax")[1:2, :5], atol=1e-6)


def test_resolve_percentile_clips_like_per_image():
    image = np.random.default_rng(1).gamma(2.0, size=(40, 40)).astype(np.float32)
    spec = resolve_normalization(image, {"method": "percentile", "low": 2, "high": 98})
    assert spec["method"] == "minmax" and spec["clip"] is True
    np.testing.assert_allclose(normalize(image, spec), normalize(image, {"method": "percentile", "low": 2,
                                                                          "high": 98}), atol=1e-6)


def test_resolve_percentile_on_a_large_lazy_array_samples():
    big = da.random.default_rng(0).random((300, 300, 300), chunks=(50, 300, 300))  # 27M voxels > 2**24
    spec = resolve_normalization(big, "percentile")
    assert spec["min"] == pytest.approx(0.01, abs=0.005) and spec["max"] == pytest.approx(0.99, abs=0.005)


def test_fixed_specs_pass_through():
    for spec in ({"method": "zscore", "mean": 1.0, "std": 2.0}, {"method": "none"},
                 {"method": "minmax", "min": 0, "max": 255}):
        assert resolve_normalization(np.zeros(3), spec) == spec
    assert resolve_normalization(np.zeros(3), None) == {"method": "none"}
