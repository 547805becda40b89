"""``emzoo.instances``: cc / distance_ws / boundary_ws on synthetic maps, min_size, dtype, argument checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import emzoo
from emzoo.inference.instances import instances


def _touching_discs(shape=(48, 64), radius=11, gap=18) -> np.ndarray:
    """Two discs whose centres are ``gap`` px apart (< 2 * radius): one blob with a neck, as probabilities."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = shape[0] // 2, shape[1] // 2
    left = (yy - cy) ** 2 + (xx - (cx - gap / 2)) ** 2 < radius**2
    right = (yy - cy) ** 2 + (xx - (cx + gap / 2)) ** 2 < radius**2
    return np.where(left | right, 0.9, 0.1).astype(np.float32)


def _membranes_2d(shape=(64, 64), cells=(3, 4)) -> np.ndarray:
    """A grid of ``cells`` rectangles separated by 2-px membranes (boundary probability 0.95 on, 0.05 off)."""
    prob = np.full(shape, 0.05, np.float32)
    for y in np.linspace(0, shape[0], cells[0] + 1)[1:-1].astype(int):
        prob[y - 1 : y + 1] = 0.95
    for x in np.linspace(0, shape[1], cells[1] + 1)[1:-1].astype(int):
        prob[:, x - 1 : x + 1] = 0.95
    return prob


def test_touching_discs_split_by_distance_ws_merged_by_cc():
    prob = _touching_discs()
    cc = instances(prob, "cc")
    ws = instances(prob, "distance_ws")
    assert cc.max() == 1
    assert ws.max() == 2
    assert np.array_equal(ws > 0, prob > 0.5)  # the watershed splits, it neither grows nor shrinks the foreground
    left, right = ws[24, 20], ws[24, 44]  # the two centres land in different objects
    assert left != right and left > 0 and right > 0


def test_distance_ws_keeps_one_object_per_ridge_and_small_objects():
    prob = np.zeros((40, 64), np.float32)
    prob[5:11, 4:60] = 1.0  # an elongated "mitochondrion": a flat ridge of equal distance
    prob[20, 10] = 1.0  # a one-pixel object, shallower than h: it has no h-maximum but must survive
    prob[30:33, 30:33] = 1.0
    labels = instances(prob, "distance_ws")
    assert labels.max() == 3
    assert len(np.unique(labels[5:11, 4:60])) == 1 and labels[20, 10] > 0


def test_distance_ws_h_controls_splitting():
    prob = _touching_discs(radius=11, gap=18)
    assert instances(prob, "distance_ws", h=2).max() == 2
    assert instances(prob, "distance_ws", h=30).max() == 1  # deeper than the neck: one seed


def test_distance_ws_3d_with_sampling():
    prob = np.stack([_touching_discs((32, 48), radius=9, gap=14)] * 6)
    assert instances(prob, "distance_ws").max() == 2
    assert instances(prob, "distance_ws", sampling=(3, 1, 1)).max() == 2
    assert instances(prob, "cc").max() == 1


def test_boundary_ws_recovers_cells_2d():
    prob = _membranes_2d(cells=(3, 4))
    labels = instances(prob, "boundary_ws")
    assert labels.max() == 12
    assert labels.min() == 1  # a partition: membranes are given to the neighbouring cells
    # each cell interior is one object
    assert len(np.unique(labels[2:18, 2:14])) == 1


def test_boundary_ws_gap_in_membrane_and_seed_threshold():
    prob = _membranes_2d(cells=(1, 2))
    prob[30:34, 31:33] = 0.4  # a weak spot in the membrane between the two cells
    assert instances(prob, "boundary_ws", threshold=0.5).max() == 1  # seeds leak through the gap: merged
    assert instances(prob, "boundary_ws", threshold=0.3).max() == 2  # stricter seeds: the watershed splits


def test_boundary_ws_recovers_cells_3d():
    # 2 x 2 x 2 cells in a 32 x 32 x 32 volume: membranes on the mid planes of each axis
    prob = np.full((32, 32, 32), 0.05, np.float32)
    prob[15:17] = 0.95
    prob[:, 15:17] = 0.95
    prob[:, :, 15:17] = 0.95
    labels = instances(prob[..., None], "boundary_ws")  # trailing channel accepted
    assert labels.shape == (32, 32, 32) and labels.max() == 8
    assert len({labels[z, y, x] for z in (4, 28) for y in (4, 28) for x in (4, 28)}) == 8


def test_min_size_dtype_and_consecutive_ids():
    prob = np.zeros((32, 32), np.float32)
    prob[1:4, 1:4] = 0.9  # 9 px
    prob[10, 10] = 0.9  # 1 px
    prob[20:22, 20:22] = 0.9  # 4 px
    prob[28:31, 5:8] = 0.9  # 9 px
    for method in ("cc", "distance_ws"):
        all_ = instances(prob, method)
        assert all_.dtype == np.uint32 and all_.max() == 4
        kept = instances(prob, method, min_size=5)
        assert kept.dtype == np.uint32
        assert sorted(np.unique(kept)) == [0, 1, 2]  # consecutive after removing the 1-px and 4-px objects
        assert kept[10, 10] == 0 and kept[20, 20] == 0
        assert instances(prob, method, min_size=4).max() == 3  # objects of exactly min_size pixels stay
    assert instances(np.zeros((8, 8)), "cc").dtype == np.uint32  # nothing to label: all background


def test_single_object_min_size_does_not_warn():
    prob = np.zeros((16, 16), np.float32)
    prob[2:6, 2:6] = 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert instances(prob, min_size=3).max() == 1


def test_threshold_is_strict_like_binarize():
    prob = np.array([[0.5, 0.5, 0.0, 0.6]], np.float32)
    assert instances(prob, "cc").tolist() == [[0, 0, 0, 1]]


def test_public_api_and_binary_mask_input():
    mask = np.zeros((16, 16), bool)
    mask[2:5, 2:5] = True
    assert emzoo.instances(mask).max() == 1


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(method="watershed"), "method must be one of 'cc', 'distance_ws', 'boundary_ws'"),
        (dict(method="distance-ws"), "did you mean 'distance_ws'"),
        (dict(threshold=1.0), "threshold must be a number strictly between 0 and 1"),
        (dict(threshold=0), "threshold must be"),
        (dict(min_size=-1), "min_size must be an integer >= 0"),
        (dict(min_size=2.5), "min_size must be an integer >= 0"),
        (dict(h=0), "h must be a positive number"),
        (dict(connectivity=3), "connectivity must be an integer from 1 to 2"),
        (dict(sampling=(1, 2, 3)), "sampling must be a positive number or 2 of them"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        instances(np.full((8, 8), 0.2, np.float32), **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("prob", "fragment"),
    [
        (np.full((4, 4), np.nan, np.float32), "prob holds 16 NaN/Inf"),
        (np.zeros(8, np.float32), "prob must be 2D (Y, X) or 3D (Z, Y, X)"),
        (np.zeros((2, 4, 4, 4, 1), np.float32), "prob must be 2D (Y, X) or 3D (Z, Y, X)"),
        (np.zeros((4, 8, 8, 2), np.float32), "foreground(prob)"),
        (np.full((4, 4), 2.0, np.float32), "outside [0, 1]"),
    ],
)
def test_bad_prob(prob, fragment):
    with pytest.raises(ValueError) as info:
        instances(prob)
    assert fragment in str(info.value)


def test_no_seeds_gives_background():
    all_boundary = np.full((8, 8), 0.9, np.float32)
    assert instances(all_boundary, "boundary_ws").max() == 0
    assert instances(np.zeros((4, 8, 8, 1), np.float32), "distance_ws").shape == (4, 8, 8)
