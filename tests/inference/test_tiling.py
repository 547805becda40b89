"""Tiled prediction equals whole-image prediction (halo >= receptive margin, blend='none') for 2D, 3D, valid,
fixed-size and multi-frame nets; layouts, normalisation and bad inputs."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from emzoo.inference import foreground, predict
from emzoo.inference.predict import make_runner
from emzoo.inference.tiling import make_plan, reflect_indices
from emzoo.io import Volume
from tests.inference import toys

RNG = np.random.default_rng(0)
IMAGE = RNG.random((150, 130)).astype(np.float32)


@pytest.fixture(scope="module")
def unet():
    return toys.tiny_unet()


@pytest.fixture(scope="module")
def dilated3d():
    return toys.tiny_dilated_3d()


def _bare(model, image, halo, divisor):
    """The model run once on the mirror-padded image (padded up to the divisor), cropped back."""
    pads = [(halo, halo + (-(n + 2 * halo) % divisor)) for n in image.shape]
    padded = np.pad(image, pads, mode="reflect")
    out = model.predict_on_batch(padded[None, ..., None])[0]
    return out[tuple(slice(halo, halo + n) for n in image.shape)]


def test_tiled_equals_whole_image_unet(unet):
    halo = make_runner(unet).margin[1]
    assert halo == 27
    whole = predict(unet, IMAGE, tile=10_000, halo=halo, blend="none", progress=False)
    tiled = predict(unet, IMAGE, tile=64, halo=halo, blend="none", progress=False)
    assert whole.shape == (150, 130, 1) and whole.dtype == np.float32
    assert np.abs(tiled - whole).max() <= 1e-4
    # ... and "whole" is the bare model on the mirror-padded image.
    np.testing.assert_allclose(whole, _bare(unet, IMAGE, halo, 4), atol=1e-5)


def test_default_tile_and_halo_are_exact(unet):
    auto = predict(unet, IMAGE, blend="none", progress=False)  # halo: the margin 27 rounded up to the divisor 4
    np.testing.assert_allclose(auto, _bare(unet, IMAGE, 28, 4), atol=1e-4)


def test_small_halo_differs_in_every_blend_mode(unet):
    # Blending cross-fades only the trustworthy parts of the windows (at least a halo inside them): it cannot
    # turn a halo below the receptive field into an exact one, it only no longer makes an exact one inexact.
    whole = predict(unet, IMAGE, tile=10_000, blend="none", progress=False)
    for blend in ("none", "spline", "linear"):
        seams = predict(unet, IMAGE, tile=32, halo=4, blend=blend, progress=False)
        assert np.abs(seams - whole).max() > 1e-3


@pytest.mark.parametrize("blend", ["spline", "linear"])
def test_blended_tiles_equal_whole_image(unet, blend):
    # Issue 11: blending used to average in the halo rim of each window, so the default (blended) prediction
    # differed from the whole image although the halo covered the receptive field.
    whole = predict(unet, IMAGE, tile=10_000, blend="none", progress=False)
    tiled = predict(unet, IMAGE, tile=64, blend=blend, progress=False)
    assert np.abs(tiled - whole).max() <= 1e-4


def test_tiled_equals_whole_dilated_3d(dilated3d):
    vol = RNG.random((12, 22, 20)).astype(np.float32)
    halo = make_runner(dilated3d).margin
    assert halo == (7, 7, 7)
    whole = predict(dilated3d, vol, tile=100, halo=7, blend="none", progress=False)
    tiled = predict(dilated3d, vol, tile=(16, 18, 18), halo=7, blend="none", progress=False)
    assert whole.shape == (12, 22, 20, 2)
    assert np.abs(tiled - whole).max() <= 1e-4


def test_valid_convolution_net():
    model = toys.valid_net()
    runner = make_runner(model)
    assert runner.margin == (0, 2, 2) and runner.output_window((1, 40, 40)) == ((1, 36, 36), (0, 2, 2))
    whole = predict(model, IMAGE, tile=10_000, blend="none", progress=False)
    tiled = predict(model, IMAGE, tile=24, blend="none", progress=False)
    assert whole.shape == (150, 130, 2)
    assert np.abs(tiled - whole).max() <= 1e-5
    padded = np.pad(IMAGE, 2, mode="reflect")
    np.testing.assert_allclose(whole, model.predict_on_batch(padded[None, ..., None])[0], atol=1e-5)


def test_fixed_size_3d_net_with_crops_and_two_outputs():
    free = toys.cropped_3d((None, None, None, 1))
    fixed = toys.cropped_3d((3, 36, 36, 1))
    fixed.set_weights(free.get_weights())
    runner = make_runner(fixed)
    assert runner.kind == "3d" and runner.fixed == (3, 36, 36) and runner.divisor == (1, 2, 2)
    vol = RNG.random((5, 50, 44)).astype(np.float32)
    reference = predict(free, vol, tile=(5, 200, 200), blend="none", progress=False)
    tiled = predict(fixed, vol, blend="none", progress=False)  # windows forced to 3 x 36 x 36
    assert tiled.shape == (5, 50, 44, 3)
    assert np.abs(tiled - reference).max() <= 1e-5


def test_multi_frame_net_uses_mirrored_z_context():
    model = toys.frames_net(3)
    runner = make_runner(model)
    assert runner.kind == "multiframe" and runner.margin == (1, 3, 3)
    vol = RNG.random((4, 30, 26)).astype(np.float32)
    out = predict(model, vol, tile=16, blend="none", progress=False)
    assert out.shape == (4, 30, 26, 2)
    for z in range(4):
        context = np.pad(vol[reflect_indices(z - 1, z + 2, 4)], ((0, 0), (3, 3), (3, 3)), mode="reflect")
        ref = model.predict_on_batch(context[None, ..., None])[0][3:-3, 3:-3]
        np.testing.assert_allclose(out[z], ref, atol=1e-5)


def test_stack_is_predicted_slice_by_slice(unet):
    stack = RNG.random((3, 40, 36)).astype(np.float32)
    out = predict(unet, stack, blend="none", progress=False)
    assert out.shape == (3, 40, 36, 1)
    np.testing.assert_allclose(out[1], predict(unet, stack[1], blend="none", progress=False), atol=1e-6)


def test_lazy_input_volume_and_out(unet):
    stack = (RNG.random((3, 40, 36)) * 255).astype(np.uint8)
    eager = predict(unet, stack, normalization={"method": "minmax"}, progress=False)
    lazy = predict(unet, da.from_array(stack, chunks=(1, 20, 20)), normalization="minmax", progress=False)
    np.testing.assert_allclose(lazy, eager, atol=1e-6)
    out = np.zeros((3, 40, 36, 1), np.float32)
    result = predict(unet, Volume(stack, None, "ZYX", "mem"), normalization="minmax", out=out, progress=False)
    assert result is out
    np.testing.assert_allclose(out, eager, atol=1e-6)


def test_normalization_from_preset_metadata(unet):
    stack = (RNG.random((30, 36)) * 255).astype(np.uint8)
    object.__setattr__(unet, "emzoo_metadata", {"normalization": {"method": "minmax", "min": 0, "max": 255}})
    try:
        auto = predict(unet, stack, progress=False)
    finally:
        object.__setattr__(unet, "emzoo_metadata", {})
    np.testing.assert_allclose(auto, predict(unet, stack / np.float32(255), progress=False), atol=1e-6)


def test_reflect_indices_match_numpy_pad():
    base = np.arange(5)
    for pad in (1, 4, 9):
        np.testing.assert_array_equal(base[reflect_indices(-pad, 5 + pad, 5)], np.pad(base, pad, mode="reflect"))
    assert reflect_indices(-3, 3, 1).tolist() == [0] * 6


def test_plan_geometry(unet):
    plan = make_plan(make_runner(unet), (1, 150, 130), tile=64, halo=27, blend="none")
    y = plan.axes[1]
    assert (y.n_in, y.trim, y.step, y.count) == (64, 27, 8, 19)
    # x (130 px): the last window ends where the one-window pass over the mirror-padded data would (157), not a
    # whole step further, which saves one column of windows.
    x = plan.axes[2]
    assert (x.end, x.count, x.in_start(x.count - 1)) == (157, 16, 93)
    assert plan.n_tiles == 19 * 16


def test_plan_errors_and_clamping(unet):
    with pytest.raises(ValueError, match="tile 32 along y leaves no core inside a halo of 28.*at least 60"):
        make_plan(make_runner(unet), (1, 100, 100), tile=32, blend="none")
    fixed = toys.cropped_3d((3, 12, 12, 1))
    runner = make_runner(fixed)
    with pytest.warns(UserWarning) as record:
        plan = make_plan(runner, (3, 40, 40), halo=10, blend="none")
    assert any("halo along y reduced from 10" in str(w.message) for w in record)
    assert plan.axes[1].step >= 2
    with pytest.raises(ValueError, match="blend must be one of"):
        make_plan(runner, (3, 40, 40), blend="cubic")


def test_foreground():
    assert foreground(np.zeros((2, 3, 1))).shape == (2, 3)
    np.testing.assert_array_equal(foreground(np.array([[0.2, 0.8]])), [0.8])
    with pytest.raises(ValueError, match="3 classes; pick the foreground with channel="):
        foreground(np.zeros((2, 3)))
    assert foreground(np.zeros((2, 3)), channel=2).shape == (2,)


# ------------------------------------------------------------------------------------------------ bad inputs


def test_wrong_ndim_for_the_model(unet, dilated3d):
    with pytest.raises(ValueError, match=r"wrong number of dimensions for a 3D model.*\(Z, Y, X\) volumes"):
        predict(dilated3d, IMAGE, progress=False)
    with pytest.raises(ValueError, match="wrong number of dimensions for a 2D model"):
        predict(unet, np.zeros((2, 2, 8, 8, 1), np.float32), progress=False)
    with pytest.raises(ValueError, match=r"takes 1 input channel\(s\) but the array"):
        predict(unet, np.zeros((2, 8, 8, 3), np.float32), progress=False)


def test_nan_inf_empty_and_non_numeric(unet):
    bad = np.ones((20, 20), np.float32)
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match=r"NaN/Inf value\(s\) \(first inf at index \(3, 4\)\)"):
        predict(unet, bad, progress=False)
    lazy = da.from_array(np.where(np.arange(400).reshape(20, 20) == 77, np.nan, 1.0), chunks=10)
    with pytest.raises(ValueError, match=r"NaN/Inf.*at index \(0, 3, 17"):
        predict(unet, lazy, progress=False)
    with pytest.raises(ValueError, match="is empty"):
        predict(unet, np.zeros((0, 8), np.float32), progress=False)
    with pytest.raises(ValueError, match="non-numeric dtype"):
        predict(unet, np.array([["a"]]), progress=False)
    with pytest.raises(TypeError, match="expected a keras.Model"):
        predict(42, IMAGE, progress=False)
