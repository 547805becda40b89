"""emzoo.export to keras / onnx / savedmodel: ONNX Runtime (and TF, and Keras) give the Keras output back.

One small entry per family goes through ONNX. Three run under ``-m slow``: EM-net and CDeep3M have no width knob
(5.4 M and 24 M parameters, 20 s and 70 s of tf2onnx on 2 cores) and ResNet50-U-Net keeps its 16 bottleneck blocks
at any width (~25 s); their custom layers (TLU, the dilated transposed convolution) are covered on tiny models in
the fast run.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

import keras  # noqa: E402

import emzoo  # noqa: E402
from emzoo.exporters import export, max_deviation, run_exported  # noqa: E402
from emzoo.exporters.formats import input_signature  # noqa: E402
from tests.export.cases import FAMILIES  # noqa: E402

TOL = 1e-4

SLOW = {"emnet", "cdeep3m", "resnet_unet"}


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_every_family_has_a_case():
    from emzoo.registry import entry_info

    assert set(FAMILIES) == {entry_info(name).family for name in emzoo.list_models()}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in FAMILIES])
def test_onnx_matches_keras(family, tmp_path):
    entry, kwargs, shape = FAMILIES[family]
    model = emzoo.build(entry, **kwargs)
    path = export(model, tmp_path / f"{entry}.onnx")
    assert max_deviation(model, path, _x(shape)) < TOL


def test_onnx_spatial_axes_are_dynamic(tmp_path):
    import onnxruntime as ort

    model = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    path = export(model, tmp_path / "unet.onnx")
    assert ort.InferenceSession(str(path)).get_inputs()[0].shape == ["batch", "y", "x", 1]
    # Another batch and tile size than the model was built for (multiples of the divisor 16), checked against the
    # same weights in a model built for any size.
    free = emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))
    free.set_weights(model.get_weights())
    assert max_deviation(free, path, _x((2, 48, 64, 1))) < TOL


def test_frames_of_a_3d_to_2d_net_stay_fixed():
    from types import SimpleNamespace

    # A stand-in with a CDeep3M 3fm net's input and output (building the real one costs 24 M parameters).
    model = SimpleNamespace(name="cdeep3m_3fm", inputs=[keras.KerasTensor((None, 3, 16, 16, 1), name="image")],
                            outputs=[keras.KerasTensor((None, 16, 16, 2))])
    assert input_signature(model)[0].shape == (None, 3, None, None, 1)


def test_axes_a_cropping_layer_fixes_keep_their_size():
    model = emzoo.build("net2d3d", input_shape=(5, 16, 16, 1), widths=(4, 8, 8, 8), pyramid_features=(4, 4))
    # z is cut by skip crops computed for 5 slices; y and x are not cropped and stay free.
    assert input_signature(model)[0].shape == (None, 5, None, None, 1)


def test_a_reshape_fixes_every_axis():
    inputs = keras.Input((3, 8, 8, 1))
    squeezed = keras.layers.Reshape((8, 8, 3))(keras.layers.Permute((2, 3, 1, 4))(inputs))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(squeezed))
    assert input_signature(model)[0].shape == (None, 3, 8, 8, 1)


def _tiny(layer_fn, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer_fn(inputs))


@pytest.mark.parametrize("case", ["tlu", "dilated_conv_transpose", "zero_mean_conv3d", "prelu", "pool_indices"])
def test_every_custom_layer_exports(case, tmp_path):
    from emzoo.layers.dilated_conv_transpose import DilatedConv2DTranspose
    from emzoo.layers.max_pool_indices import MaxPoolingWithIndices2D, MaxUnpooling2D
    from emzoo.layers.tlu import TLU
    from emzoo.layers.zero_mean_conv import ZeroMeanConv3D

    def unpool(x):
        pooled, indices = MaxPoolingWithIndices2D()(x)
        return MaxUnpooling2D()([pooled, indices])

    build = {
        "tlu": (lambda x: TLU(alpha_initializer="random_normal")(keras.layers.Conv2D(3, 3, padding="same")(x)),
                (16, 16, 1)),
        # CDeep3M's head: stride 2, dilation 2, explicit padding, as cdeep3m.apply_multiscale_head builds it.
        "dilated_conv_transpose": (lambda x: DilatedConv2DTranspose(2, 4, strides=2, dilation_rate=2, padding=2)(x),
                                   (16, 16, 1)),
        "zero_mean_conv3d": (lambda x: ZeroMeanConv3D(2, 3, padding="same")(x), (8, 8, 8, 1)),
        "prelu": (lambda x: keras.layers.PReLU(alpha_initializer="random_normal", shared_axes=(1, 2))(x),
                  (16, 16, 2)),
        "pool_indices": (unpool, (16, 16, 2)),
    }
    fn, shape = build[case]
    model = _tiny(fn, shape)
    path = export(model, tmp_path / f"{case}.onnx")
    assert max_deviation(model, path, _x((1, *shape))) < TOL


def test_pool_indices_ties_pick_the_first_position_in_onnx(tmp_path):
    from emzoo.layers.max_pool_indices import MaxPoolingWithIndices2D

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, MaxPoolingWithIndices2D()(inputs)[1])
    path = export(model, tmp_path / "indices.onnx")
    x = np.zeros((1, 4, 4, 1), "float32")  # every window is a four-way tie (with -0.0 in one of them)
    x[0, 2, 3, 0] = -0.0
    assert run_exported(path, x)[0].tolist() == np.zeros((1, 2, 2, 1), int).tolist()


@pytest.mark.parametrize("fmt,name", [("savedmodel", "unet_sm"), ("keras", "unet.keras")])
def test_savedmodel_and_keras_match(fmt, name, tmp_path):
    model = emzoo.build("prelu_net", input_shape=(32, 32, 1), widths=(4, 8, 16))
    path = export(model, tmp_path / name, format=fmt)
    assert path.exists()
    assert max_deviation(model, path, _x((1, 32, 32, 1)), format=fmt) < TOL
    if fmt == "savedmodel":  # the tile size is free there too
        assert run_exported(path, _x((1, 48, 16, 1)), format=fmt)[0].shape == (1, 48, 16, 1)


def test_savedmodels_of_a_two_output_net_keep_its_output_order(tmp_path):
    import tensorflow as tf

    from emzoo.exporters.bioimageio import _export_savedmodel_dict

    model = emzoo.build("net2d3d", input_shape=(5, 16, 16, 1), widths=(4, 8, 8, 8), pyramid_features=(4, 4))
    x = _x((1, 5, 16, 16, 1))
    want = [np.asarray(w) for w in model(x, training=False)]  # pred3d, pred2d: same shape
    assert np.max(np.abs(want[0] - want[1])) > 10 * TOL  # else a swap would go unnoticed (measured 4e-3)
    # format="savedmodel": `serve` returns a list, which a SavedModel restores in order.
    have = run_exported(export(model, tmp_path / "sm", format="savedmodel"), x, format="savedmodel")
    assert [float(np.max(np.abs(h - w))) < TOL for h, w in zip(have, want, strict=True)] == [True, True]
    # The bioimageio bundle returns a dict, restored in no fixed order: its keys must name the outputs.
    _export_savedmodel_dict(model, tmp_path / "bundle")
    loaded = tf.saved_model.load(str(tmp_path / "bundle"))
    for out in (loaded.serve(tf.constant(x)), loaded.signatures["serving_default"](tf.constant(x))):
        assert sorted(out) == ["output0", "output1"]
        assert [float(np.max(np.abs(np.asarray(out[f"output{k}"]) - w))) < TOL for k, w in enumerate(want)] == \
            [True, True]


def test_export_of_a_preset_folder_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from emzoo.cli.main import app

    model = emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))
    preset = emzoo.save_preset(model, tmp_path / "preset", entry="unet", build_kwargs={"widths": (4, 8, 16)},
                               normalization={"method": "zscore", "mean": 0.0, "std": 1.0})
    out = tmp_path / "unet.onnx"
    result = CliRunner().invoke(app, ["export", str(preset), "--format", "onnx", "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "max |export - keras|" in result.output
    deviation = float(result.output.strip().rsplit(":", 1)[1])
    assert deviation < TOL


@pytest.mark.parametrize("args,message", [
    (("net.bin",), "cannot tell the export format"),
    (("net.onnx", "tflite"), "format must be one of"),
    (("net.h5", "keras"), "must end in .keras"),
])
def test_bad_arguments_name_the_fix(args, message, tmp_path):
    model = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    path, *fmt = args
    with pytest.raises(ValueError, match=message):
        export(model, tmp_path / path, *fmt)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_not_a_model_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="keras.Model, a preset name"):
        export(42, tmp_path / "x.onnx")
