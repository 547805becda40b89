"""``emzoo.viz``: where the overlay's colours land, the PNG sizes, lazy mid-sections, the shared cover picture."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from emzoo.viz import (
    COLOURS,
    cover_image,
    grey,
    overlay_rgb,
    preview_sections,
    write_contact_sheet,
    write_image,
    write_overlay,
    write_preview,
)


@pytest.fixture
def case():
    """A 12x12 image: truth is a 6x6 square, the prediction the same square shifted 3 px right."""
    raw = np.linspace(0, 1000, 144, dtype=np.float32).reshape(12, 12)
    truth = np.zeros((12, 12), np.uint8)
    truth[3:9, 2:8] = 1
    prob = np.zeros((12, 12), np.float32)
    prob[3:9, 5:11] = 0.8
    return raw, prob, truth


def _colour_of(rgb, where):
    return {tuple(int(c) for c in rgb[y, x]) for y, x in zip(*np.nonzero(where), strict=True)}


def test_errors_are_coloured_where_they_are(case):
    raw, prob, truth = case
    rgb = overlay_rgb(raw, prob, truth, alpha=1.0, contour_width=1)
    pred = prob > 0.5
    inner = np.zeros_like(pred)
    inner[4:8, 3:7] = True  # the truth square without its one-pixel outline
    assert _colour_of(rgb, pred & (truth == 0)) == {COLOURS["false_positive"]}
    assert _colour_of(rgb, inner & ~pred) == {COLOURS["false_negative"]}
    outline = (truth > 0) & ~inner
    assert _colour_of(rgb, outline) == {COLOURS["truth"]}
    # True positives inside the outline and true negatives keep the grey of the raw image.
    g = grey(raw)
    for where in (inner & pred, (truth == 0) & ~pred):
        ys, xs = np.nonzero(where)
        assert np.array_equal(rgb[ys, xs], np.stack([g[ys, xs]] * 3, axis=-1))


def test_without_labels_the_prediction_is_filled_and_outlined(case):
    raw, prob, _ = case
    rgb = overlay_rgb(raw, prob, contour_width=1)
    assert _colour_of(rgb, np.pad(np.ones((6, 1), bool), ((3, 3), (5, 6)))) == {COLOURS["prediction"]}
    inside = rgb[5, 7].astype(int)
    assert not np.array_equal(inside, [grey(raw)[5, 7]] * 3)  # tinted
    assert tuple(rgb[0, 0]) == (0, 0, 0)  # the darkest raw pixel outside stays black


def test_masks_labels_and_bad_input(case):
    raw, prob, truth = case
    assert np.array_equal(overlay_rgb(raw, prob > 0.5, truth), overlay_rgb(raw, prob, truth))
    assert np.array_equal(overlay_rgb(raw, (prob > 0.5) * 7, truth), overlay_rgb(raw, prob, truth))  # labels
    with pytest.raises(ValueError, match="prob_or_mask has shape"):
        overlay_rgb(raw, prob[:5], truth)
    with pytest.raises(ValueError, match="one 2D image"):
        overlay_rgb(raw[None], prob, truth)
    with pytest.raises(ValueError, match="prob_or_mask"):
        overlay_rgb(raw, prob * 3, truth)


def test_grey_is_robust_to_outliers():
    image = np.full((50, 50), 100.0)
    image[:25] = 200.0
    image[0, 0] = 1e9  # one hot pixel must not wash the image out
    g = grey(image)
    assert g[30, 30] == 0 and g[10, 10] == 255


def test_overlay_png_has_the_image_size_and_the_scores(case, tmp_path):
    raw, prob, truth = case
    big = [np.kron(a, np.ones((20, 20), a.dtype)) for a in case]  # 240 x 240
    path = write_overlay(tmp_path / "a.png", *big, scores={"f1": 0.5, "jaccard": 1 / 3}, title="toy | slice_0")
    image = imread(path)
    assert image.shape[:2] == (240, 240)
    # The text box darkens the top-left corner; the bottom-right corner is the raw image's brightest pixel.
    assert image[3:12, 3:60, :3].mean() < 0.5 and image[-1, -1, :3].min() > 0.9
    no_text = imread(write_overlay(tmp_path / "b.png", *big))
    assert not np.allclose(image, no_text)
    small = imread(write_overlay(tmp_path / "c.png", *big, max_side=100))
    assert small.shape[:2] == (80, 80)  # every 3rd pixel of 240


def test_contact_sheet_and_image(case, tmp_path):
    raw, prob, truth = case
    paths = [write_image(tmp_path / f"{i}.png", overlay_rgb(raw, prob, truth)) for i in range(3)]
    assert imread(paths[0]).shape[:2] == (12, 12)
    sheet = imread(write_contact_sheet(paths, tmp_path / "sheet.png", titles=["a", "b", "c"], ncols=3))
    assert sheet.shape[1] == 900 and sheet.shape[0] < 400  # one row of three 3-inch panels at 100 dpi
    with pytest.raises(ValueError, match="one title per image"):
        write_contact_sheet(paths, tmp_path / "x.png", titles=["a"])
    assert not (tmp_path / "x.png").exists()


class _Guarded:
    """An array-like that records what is read and refuses a read of the whole volume."""

    def __init__(self, data):
        self.data, self.shape, self.reads = data, data.shape, []

    def __getitem__(self, key):
        if sum(isinstance(k, int) for k in key) != 1:
            raise AssertionError(f"read {key}, not a section")
        self.reads.append(key)
        return self.data[key]


def test_preview_sections_read_only_the_three_sections():
    volume = _Guarded(np.random.default_rng(0).random((6, 10, 8)))
    prob = _Guarded(np.zeros((6, 10, 8)))
    sections = preview_sections(volume, prob, voxel_size=(50.0, 5.0, 4.0))
    assert [(s.name, s.index, s.raw.shape) for s in sections] == [
        ("XY", "z=3", (10, 8)), ("XZ", "y=5", (6, 8)), ("YZ", "x=4", (6, 10))]
    assert [s.aspect for s in sections] == [1.25, 12.5, 10.0]
    assert len(volume.reads) == 3 and len(prob.reads) == 3
    with pytest.raises(ValueError, match="prob has shape"):
        preview_sections(np.zeros((6, 10, 8)), np.zeros((6, 10, 7)))


def test_preview_png_2d_and_3d(tmp_path):
    rng = np.random.default_rng(1)
    two = imread(write_preview(tmp_path / "2d.png", rng.random((40, 30)), rng.random((40, 30))))
    three = imread(write_preview(tmp_path / "3d.png", rng.random((8, 40, 30)), rng.random((8, 40, 30)),
                                 voxel_size=(40, 4, 4)))
    assert two.ndim == 3 and three.ndim == 3
    assert three.shape[1] > two.shape[1]  # three panels side by side


def test_bioimageio_cover_is_cover_image(tmp_path):
    from emzoo.exporters.bioimageio import _cover

    rng = np.random.default_rng(2)
    x = rng.random((1, 16, 16, 1)).astype(np.float32)
    y = rng.random((1, 16, 16, 2)).astype(np.float32)  # a 2-class softmax: class 1 is the foreground
    _cover(x, y, tmp_path / "cover.png")
    written = (imread(tmp_path / "cover.png")[..., :3] * 255).round().astype(np.uint8)
    assert np.array_equal(written, cover_image(x[0, ..., 0], y[0, ..., 1]))
    assert written.shape == (16, 32, 3)
