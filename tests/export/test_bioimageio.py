"""emzoo.export(..., format="bioimageio"): a spec 0.5 package that bioimageio.core's test_model passes offline.

Every test here runs with sockets refused, so a package that only validates online fails. ``-m slow`` packages one
small entry per family and runs test_model on each (all weight formats, its default tolerance).
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")
pytest.importorskip("tf2onnx")

import emzoo  # noqa: E402
from emzoo.exporters.bioimageio import export_bioimageio, preprocessing_steps  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("tests/export: network access is not allowed")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(tmp_path)  # bioimageio.core unzips the SavedModel bundle into the working directory


def _preset(tmp_path, entry="unet", normalization=None, **kwargs):
    kwargs = kwargs or {"input_shape": (None, None, 1), "widths": (4, 8, 16)}
    model = emzoo.build(entry, **kwargs)
    build_kwargs = {k: v for k, v in kwargs.items() if k != "input_shape"}
    return emzoo.save_preset(model, tmp_path / f"{entry}_preset", entry=entry, build_kwargs=build_kwargs,
                             normalization=normalization or {"method": "zscore", "mean": 120.0, "std": 40.0},
                             license="MIT", training_data={"name": "synthetic-noise", "sha256": "0" * 64},
                             description=f"tiny {entry} for the export tests")


@pytest.mark.parametrize("norm,ids", [
    ({"method": "zscore", "mean": 1.0, "std": 2.0}, ["ensure_dtype", "fixed_zero_mean_unit_variance"]),
    ({"method": "minmax", "min": 0, "max": 255}, ["ensure_dtype", "scale_linear"]),
    ({"method": "minmax", "min": 10, "max": 20, "clip": True}, ["ensure_dtype", "scale_linear", "clip"]),
    ({"method": "minmax"}, ["ensure_dtype", "scale_range"]),
    ({"method": "percentile", "low": 2, "high": 98}, ["ensure_dtype", "scale_range", "clip"]),
    ("none", ["ensure_dtype"]),
])
def test_normalisation_becomes_preprocessing(norm, ids):
    steps = preprocessing_steps(norm, ["y", "x"])
    assert [s.id for s in steps] == ids
    if ids[-1] == "scale_linear":  # (x - min) / (max - min) as gain and offset
        gain, offset = steps[-1].kwargs.gain, steps[-1].kwargs.offset
        assert gain * norm["max"] + offset == pytest.approx(1.0) and gain * norm["min"] + offset == pytest.approx(0)
    if norm == {"method": "percentile", "low": 2, "high": 98}:
        assert (steps[1].kwargs.min_percentile, steps[1].kwargs.max_percentile) == (2.0, 98.0)
        assert (steps[2].kwargs.min, steps[2].kwargs.max) == (0.0, 1.0)


def test_package_of_a_tiny_preset_passes_test_model(tmp_path):
    from bioimageio.core import test_model
    from bioimageio.spec import load_model_description

    preset = _preset(tmp_path)
    path = emzoo.export(preset, tmp_path / "unet.zip", format="bioimageio")
    summary = test_model(path)
    assert summary.status == "passed", summary.format()
    tested = {d.name for d in summary.details if d.status == "passed"}
    for fmt in ("keras_v3", "onnx", "tensorflow_saved_model_bundle"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in tested

    descr = load_model_description(path, perform_io_checks=False)
    assert descr.weights.keras_v3.parent is None
    assert descr.weights.onnx.parent == descr.weights.tensorflow_saved_model_bundle.parent == "keras_v3"
    (raw,), (prob,) = descr.inputs, descr.outputs
    assert [str(a.id) for a in raw.axes] == ["batch", "y", "x", "channel"]
    assert raw.axes[1].size.step == 4  # the preset's divisor (two poolings), not the registry's 16
    # (the spec appends a last ensure_dtype of its own)
    assert [p.id for p in raw.preprocessing][:2] == ["ensure_dtype", "fixed_zero_mean_unit_variance"]
    assert prob.axes[1].halo == 27 and str(prob.axes[1].size.axis_id) == "y"  # the receptive margin
    assert str(descr.license) == "MIT" and descr.cite[0].doi is not None and descr.covers
    assert descr.training_data.name == "synthetic-noise"
    # The test output is the preset's own prediction on the raw test input.
    model = emzoo.load(preset)
    from emzoo.io.normalize import normalize

    x = np.load(raw.test_tensor.get_reader())
    y = np.load(prob.test_tensor.get_reader())
    expected = np.asarray(model(normalize(x, model.emzoo_metadata["normalization"])))
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_a_model_without_a_preset_is_refused(tmp_path):
    model = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    with pytest.raises(ValueError, match="needs a preset"):
        export_bioimageio(model, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_a_licence_that_is_not_spdx_names_the_fix(tmp_path):
    model = emzoo.load(_preset(tmp_path))
    model.emzoo_metadata["license"] = "see the paper"
    with pytest.raises(ValueError, match="license='MIT'"):
        export_bioimageio(model, tmp_path / "x.zip", weight_formats=("keras_v3",))


def test_a_two_output_package_refuses_savedmodel_weights(tmp_path):
    kwargs = {"input_shape": (5, 16, 16, 1), "widths": (4, 8, 8, 8), "pyramid_features": (4, 4)}
    with pytest.raises(ValueError, match="weight_formats cannot hold 'tensorflow_saved_model_bundle'.*2 outputs"):
        export_bioimageio(_preset(tmp_path, "net2d3d", **kwargs), tmp_path / "x.zip",
                          weight_formats=("keras_v3", "tensorflow_saved_model_bundle"))
    assert not (tmp_path / "x.zip").exists()


# One small entry per family, with any spatial size so the package's parameterised axes are real.
FAMILIES = {
    "unet": ("prelu_net", {"input_shape": (None, None, 1), "widths": (4, 8, 16)}),
    "segnet": ("segnet_indices", {"input_shape": (None, None, 1), "encoder": ((4,), (4,), (8,), (8,), (8,)),
                                  "decoder": ((8,), (8,), (4,), (4,), (4,))}),
    "highres3dnet": ("highres3dzmnet", {"input_shape": (None, None, None, 1), "stages": ((4, 1), (4, 2)),
                                        "stem_features": 4, "extra_features": 8}),
    # Built for one size (its skip crops need it): every axis is fixed; two outputs (pred3d, pred2d).
    "net2d3d": ("net2d3d", {"input_shape": (5, 16, 16, 1), "widths": (4, 8, 8, 8), "pyramid_features": (4, 4)}),
    "stable_unet": ("attention_unet2d_fb", {"input_shape": (None, None, 1), "widths": (4, 8, 8),
                                            "dropout": (0.1, 0.1, 0.1)}),
    "resnet_unet": ("resnet50_unet", {"input_shape": (None, None, 1), "base_filters": 2}),
    "vgg_unet": ("vgg16_unet", {"input_shape": (None, None, 1), "encoder": ((4,), (4,), (8,), (8,), (8,)),
                                "decoder": (8, 8, 4, 4, 4)}),
    "emnet": ("emnet_v1_bn", {"input_shape": (None, None, 1)}),
    # Multi-frame CDeep3M squeezes z with a Reshape: built (and exported) for one tile size.
    "cdeep3m": ("cdeep3m_3fm", {"input_shape": (3, 32, 32, 1)}),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_packages_and_passes_test_model(family, tmp_path):
    from bioimageio.core import test_model

    entry, kwargs = FAMILIES[family]
    path = emzoo.export(_preset(tmp_path, entry, **kwargs), tmp_path / f"{entry}.zip", format="bioimageio")
    if family == "net2d3d":
        # Two outputs: no SavedModel (bioimageio.core reads its output dict in an order that changes between
        # processes; tests/export/test_formats.py checks emzoo's own SavedModels of this net by value).
        from bioimageio.spec import load_model_description

        weights = load_model_description(path).weights
        assert weights.tensorflow_saved_model_bundle is None and None not in (weights.keras_v3, weights.onnx)
    summary = test_model(path)  # every weight format in the package
    assert summary.status == "passed", summary.format()
