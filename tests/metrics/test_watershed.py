"""Fiji's FIFO-watershed thinning: the vectorised flood equals a literal pixel-by-pixel flood."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emzoo.metrics import thinned_labels
from emzoo.metrics.watershed import flood_stack
from tests.metrics import fiji_reference


def same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    """Equal up to a renaming of the positive labels; label 0 (lines) must match exactly."""
    if not np.array_equal(first == 0, second == 0):
        return False
    inside = first > 0
    pairs = np.unique(np.stack([first[inside], second[inside]]), axis=1)
    return pairs.shape[1] == np.unique(first[inside]).size == np.unique(second[inside]).size


def random_masks(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    masks = []
    for _ in range(count):
        height, width = rng.integers(1, 24, size=2)
        noise = rng.random((height, width))
        if rng.random() < 0.5:
            mask = noise < rng.random() * 0.5  # scattered dots: many ties and provisional lines
        else:
            mask = ndimage.binary_opening(noise < 0.55)  # blobs, closer to real proposals
        masks.append(mask)
    return masks


def test_matches_literal_fifo_on_random_masks():
    rng = np.random.default_rng(7)
    for mask in random_masks(rng, 150):
        assert same_partition(thinned_labels(mask), fiji_reference.fifo_flood(mask)), mask.astype(int)


def test_stack_is_flooded_slice_by_slice():
    rng = np.random.default_rng(8)
    stack = rng.random((5, 17, 13)) < 0.15
    stack[2] = False  # an empty slice becomes one segment
    labels = thinned_labels(stack)
    for z in range(stack.shape[0]):
        assert same_partition(labels[z], fiji_reference.fifo_flood(stack[z]))
    # labels are unique across slices
    per_slice = [set(np.unique(labels[z][labels[z] > 0])) for z in range(stack.shape[0])]
    assert all(per_slice[i].isdisjoint(per_slice[j]) for i in range(5) for j in range(i))
    assert np.unique(labels[2]).size == 1 and labels[2, 0, 0] > 0


def test_needed_pixels_get_their_final_labels():
    # Stopping the flood once the needed pixels are labelled must not change those labels.
    rng = np.random.default_rng(9)
    for _ in range(40):
        stack = rng.random((3, 19, 21)) < 0.12
        needed = rng.random(stack.shape) < 0.2
        full = thinned_labels(stack)
        early = flood_stack(stack, needed)
        for z in range(3):
            keep = needed[z] | stack[z]
            assert same_partition(full[z][keep], early[z][keep])


def test_two_dots_split_by_a_line():
    fg = np.zeros((1, 7), bool)
    fg[0, [1, 5]] = True
    assert thinned_labels(fg).tolist() == [[1, 1, 1, 0, 2, 2, 2]]


def test_all_foreground_and_empty():
    assert np.unique(thinned_labels(np.ones((4, 5), bool))).tolist() == [1]
    assert np.unique(thinned_labels(np.zeros((4, 5), bool))).tolist() == [1]


def test_tie_breaking_follows_column_major_queue():
    # An even gap between two foreground columns: the two middle columns are at the same distance from both;
    # the earlier-popped one (left, by the column-major scan) keeps its label and the later one becomes the
    # line.
    fg = np.zeros((3, 6), bool)
    fg[:, 0] = fg[:, 5] = True
    labels = thinned_labels(fg)
    assert same_partition(labels, fiji_reference.fifo_flood(fg))
    assert (labels[:, 3] == 0).all() and (labels[:, 2] == labels[0, 0]).all()


@pytest.mark.data
def test_matches_literal_fifo_on_fixture_crops(shared_data):
    tifffile = pytest.importorskip("tifffile")
    folder = shared_data / "cardiac_mito" / "emstellar_outputs"
    prob = tifffile.imread(folder / "VGG.tif")[:, :96, :96].astype(np.float32) / 255
    for z, t in ((0, 0.0), (1, 0.30000000000000004), (3, 0.9999999999999999)):
        mask = prob[z].astype(np.float64) > t
        assert same_partition(thinned_labels(mask), fiji_reference.fifo_flood(mask))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="2D or 3D"):
        thinned_labels(np.zeros((2, 2, 2, 2), bool))
    with pytest.raises(ValueError, match="empty"):
        thinned_labels(np.zeros((0, 3), bool))


def test_batches_keep_labels_unique(monkeypatch):
    from emzoo.metrics import watershed

    rng = np.random.default_rng(10)
    stack = rng.random((4, 9, 11)) < 0.2
    whole = thinned_labels(stack)
    monkeypatch.setattr(watershed, "BATCH_PIXELS", 150)  # one slice per flood
    batched = thinned_labels(stack)
    assert same_partition(whole, batched)
