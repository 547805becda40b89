"""Issue 14: the preset's measured halo is the default (exact otherwise), windows sized to a memory budget,
bfloat16 inference, halo measurement."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.inference import predict
from emzoo.inference.budget import activation_bytes, memory_budget
from emzoo.inference.effective import RECORD, auto_precision, measure_halo, preset_halo, weights_digest
from emzoo.inference.predict import make_runner
from emzoo.inference.runner import ModelRunner
from emzoo.inference.tiling import make_plan
from tests.inference import toys

IMAGE = np.random.default_rng(3).random((150, 130)).astype(np.float32)


@pytest.fixture()
def unet():
    return toys.tiny_unet()


def _with_record(model, halo, digest=None, bf16=False):
    record = {"weights_digest": digest or weights_digest(model), "bfloat16": {"use": bf16}}
    object.__setattr__(model, "emzoo_metadata", {"halo": halo, RECORD: record})
    return model


def test_measured_halo_is_the_default_and_exact_keeps_the_margin(unet):
    _with_record(unet, 12)
    runner = make_runner(unet)
    assert make_plan(runner, (1, 150, 130)).halo == (0, 12, 12)
    assert make_plan(runner, (1, 150, 130), halo="exact").halo == (0, 28, 28)  # margin 27 -> divisor 4
    assert make_plan(runner, (1, 150, 130), halo=5).halo == (0, 5, 5)


def test_halo_exact_is_unchanged(unet):
    # "exact" (and the default of a model without a measured halo) equals the whole mirror-padded image.
    whole = predict(unet, IMAGE, tile=10_000, halo=28, blend="none", progress=False)
    for kwargs in ({"halo": "exact"}, {}):
        tiled = predict(unet, IMAGE, tile=96, progress=False, **kwargs)
        assert np.abs(tiled - whole).max() <= 1e-4


def test_record_for_other_weights_falls_back_to_exact(unet):
    _with_record(unet, 12, digest="0" * 64, bf16=True)
    with pytest.warns(UserWarning, match="other weights"):
        assert preset_halo(unet) is None
    assert auto_precision(unet) == "float32"
    assert make_plan(make_runner(unet), (1, 150, 130)).halo == (0, 28, 28)


def test_random_weights_and_hand_written_halo(unet):
    assert preset_halo(unet) is None and auto_precision(unet) == "float32"
    object.__setattr__(unet, "emzoo_metadata", {"halo": 8})  # an author's halo without a measurement: used
    assert make_plan(make_runner(unet), (1, 150, 130)).halo == (0, 8, 8)


@pytest.mark.parametrize("bad", ["auto", -1, 1.5, (4, -2), "32"])
def test_bad_halo_is_refused(unet, bad):
    with pytest.raises(ValueError, match="halo"):
        predict(unet, IMAGE, halo=bad, progress=False)


def test_bad_precision_is_refused(unet):
    with pytest.raises(ValueError, match="precision must be"):
        predict(unet, IMAGE, precision="fp16", progress=False)


def test_window_from_memory_budget(unet, monkeypatch):
    runner = make_runner(unet)
    assert runner.voxel_bytes == activation_bytes(unet, (256, 256)) > 0
    # A big budget: one window over the whole padded image.
    assert make_plan(runner, (1, 150, 130), halo="exact", budget=1 << 30).n_in == (1, 208, 188)
    # A small one: smaller windows (never below the halo plus a 64-px core), shrunk from 160 to the smallest side
    # that needs no more windows (6 x 5 here), so they share the data evenly; the same result.
    small = make_plan(runner, (1, 600, 500), halo="exact", budget=int(runner.voxel_bytes * 160 * 160))
    assert small.n_in == (1, 156, 156) and [a.count for a in small.axes] == [1, 6, 5]
    monkeypatch.setenv("EMZOO_INFERENCE_MEMORY", f"{int(runner.voxel_bytes * 130 * 130)}")
    assert memory_budget() == int(runner.voxel_bytes * 130 * 130)
    whole = predict(unet, IMAGE, tile=10_000, progress=False)
    assert np.abs(predict(unet, IMAGE, progress=False) - whole).max() <= 1e-4
    monkeypatch.setenv("EMZOO_INFERENCE_MEMORY", "lots")
    with pytest.raises(ValueError, match="EMZOO_INFERENCE_MEMORY"):
        memory_budget()


def test_bfloat16_runner(unet):
    fp32 = predict(unet, IMAGE[:64, :64], precision="float32", progress=False)
    bf16 = predict(unet, IMAGE[:64, :64], precision="bfloat16", progress=False)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert 0 < np.abs(bf16 - fp32).max() < 0.05  # bfloat16 keeps 8 mantissa bits
    runner = ModelRunner(unet, precision="bfloat16")
    assert runner.model.layers[-1].dtype_policy.name == "float32"  # the output layer stays float32
    with pytest.raises(ValueError, match="precision must be"):
        ModelRunner(unet, precision="half")


def test_measure_halo_finds_a_halo_within_tolerance(unet):
    images = [IMAGE[:96, :96]]
    report = measure_halo(unet, images, tolerance=1e-2, core=32)
    assert report.exact == 28 and report.halo <= 28 and report.halo % 4 == 0
    assert report.deviation[report.halo] <= 1e-2
    below = report.halo - 4
    if below >= 0:
        assert report.deviation[below] > 1e-2
    tiled = predict(unet, images[0], tile=report.halo * 2 + 32, halo=report.halo, progress=False)
    exact = predict(unet, images[0], tile=10_000, halo="exact", progress=False)
    assert np.abs(tiled - exact).max() <= 1e-2
    with pytest.raises(ValueError, match="images is empty"):
        measure_halo(unet, [])


def test_measured_halo_mode_equals_model_predict_on_the_image(unet, tmp_path):
    # With a measured halo the data's edges get the model's own padding, as in the one-window pass the preset was
    # scored with: tiled == bare model.predict on the image (here the "measured" halo is the full margin).
    from emzoo.inference import predict_blockwise

    _with_record(unet, 28)
    image = IMAGE[:148, :128]  # multiples of the divisor 4
    bare = np.asarray(unet.predict_on_batch(image[None, ..., None]))[0]
    for tile in (10_000, 64, 92):
        for blend in ("none", "spline"):
            out = predict(unet, image, tile=tile, blend=blend, progress=False)
            assert np.abs(out - bare).max() <= 1e-4, (tile, blend)
    blocks = predict_blockwise(unet, image, tmp_path / "out.zarr", block=32, progress=False)
    assert np.abs(blocks[...] - bare).max() <= 1e-4
    small = IMAGE[:40, :36]  # smaller than twice the halo: one window, no core grid
    out = predict(unet, small, progress=False)
    assert np.abs(out - np.asarray(unet.predict_on_batch(small[None, ..., None]))[0]).max() <= 1e-4
