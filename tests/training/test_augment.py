"""Augmentation: exact dihedral ops, raw/label alignment under warps, z flips only when asked, seeded draws."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.training.augment import (
    Augment,
    Transform,
    adjust_intensity,
    read_window,
    sample_transform,
    window_coordinates,
)


def _read(volume, start, shape, transform, order=0):
    z, yx = window_coordinates(start, shape, transform)
    return read_window(volume, z, yx, order=order, integer=transform.integer)


def test_identity_reads_the_plain_slice_and_mirrors_borders():
    vol = np.arange(3 * 10 * 12).reshape(3, 10, 12)
    got = _read(vol, (1, 2, 3), (1, 4, 5), Transform(matrix=np.eye(2)))
    np.testing.assert_array_equal(got, vol[1:2, 2:6, 3:8])
    edge = _read(vol, (0, -2, 0), (1, 3, 2), Transform(matrix=np.eye(2)))
    np.testing.assert_array_equal(edge[0, :, 0], vol[0, [2, 1, 0], 0])  # scipy "mirror" (edge not repeated)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_flips_and_rot90_are_exact_numpy_ops(k, flip):
    vol = np.random.default_rng(0).random((1, 8, 8)).astype("float32")
    m = np.diag([1.0, -1.0]) if flip else np.eye(2)
    m = np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), k) @ m
    t = Transform(matrix=m)
    assert t.integer
    got = _read(vol, (0, 0, 0), (1, 8, 8), t)[0]
    base = vol[0][:, ::-1] if flip else vol[0]
    # the output pixel d samples source M d: a signed permutation of the window about its centre
    candidates = [np.rot90(base, r) for r in range(4)] + [np.rot90(base.T, r) for r in range(4)]
    assert any(np.array_equal(got, c) for c in candidates)
    assert sorted(got.ravel()) == sorted(vol.ravel())


def test_raw_and_labels_stay_aligned_under_rotation_zoom_and_elastic():
    rng = np.random.default_rng(1)
    labels = np.zeros((1, 96, 96), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    for cy, cx, r in rng.integers(8, 88, size=(12, 3)):
        labels[0][(yy - cy) ** 2 + (xx - cx) ** 2 < (r % 9 + 3) ** 2] = 1
    raw = labels.astype(np.float32)  # raw identical to labels: any misalignment shows up
    aug = Augment(flip=True, rot90=True, rotation=180, zoom=0.2, zoom_independent=True, elastic=3.0)
    for seed in range(10):
        t = sample_transform(aug, np.random.default_rng(seed))
        z, yx = window_coordinates((0, 16, 16), (1, 64, 64), t)
        r = read_window(raw, z, yx, order=1, integer=t.integer)
        lab = read_window(labels, z, yx[:, 8:56, 8:56], order=0, integer=t.integer)
        agree = np.mean((r[0, 8:56, 8:56] > 0.5) == (lab[0] > 0))
        assert agree > 0.98


def test_z_flip_only_when_switched_on():
    vol = np.arange(5)[:, None, None] * np.ones((5, 4, 4))
    never = [sample_transform(Augment(), np.random.default_rng(s)).z_scale for s in range(20)]
    assert set(never) == {1.0}
    both = {sample_transform(Augment(flip_z=True), np.random.default_rng(s)).z_scale for s in range(20)}
    assert both == {1.0, -1.0}
    t = Transform(matrix=np.eye(2), z_scale=-1.0)
    got = _read(vol, (1, 0, 0), (3, 4, 4), t)
    np.testing.assert_array_equal(got[:, 0, 0], [3, 2, 1])


def test_isotropic_zoom_scales_z_too():
    t = sample_transform(Augment(flip=False, rot90=False, zoom=0.1, zoom_z=True), np.random.default_rng(3))
    assert t.z_scale == pytest.approx(t.matrix[0, 0]) and t.z_scale != 1.0
    vol = np.random.default_rng(0).random((8, 8, 8)).astype("float32")
    assert _read(vol, (2, 2, 2), (4, 4, 4), t, order=1).shape == (4, 4, 4)


def test_draws_are_seeded_and_intensity_changes_raw_only():
    aug = Augment(rotation=30, elastic=2.0, brightness=0.1, contrast=0.2)
    a = sample_transform(aug, np.random.default_rng(7))
    b = sample_transform(aug, np.random.default_rng(7))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.elastic, b.elastic)
    assert (a.brightness, a.contrast) == (b.brightness, b.contrast)
    x = np.array([0.0, 1.0, 2.0], "float32")
    out = adjust_intensity(x, a, 2.0)
    np.testing.assert_allclose(out, (x - 1.0) * a.contrast + 1.0 + a.brightness * 2.0, rtol=1e-6)


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="zoom"):
        Augment(zoom=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        Augment(rotation=-1)
