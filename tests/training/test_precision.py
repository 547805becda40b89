"""The low-precision kernel check: faults found and named, the model left as it was, finetune falls back or refuses."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

import emzoo
from emzoo.training import finetune
from emzoo.training.config import mixed_policy
from emzoo.training.precision import KernelFault, PrecisionWarning, low_precision_faults

MODULE = sys.modules["emzoo.training.finetune"]
TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the check runs on TensorFlow only")


class DoublingConv2D(keras.layers.Conv2D):
    """A convolution that is wrong (doubled) in bfloat16 only: a stand-in for a faulty low-precision kernel."""

    def convolution_op(self, inputs, kernel):
        out = super().convolution_op(inputs, kernel)
        return out * 2 if self.compute_dtype == "bfloat16" else out


def _model(layer_cls, dtype):
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", dtype=dtype, name="fine")(inputs)
    x = layer_cls(4, 3, padding="same", dtype=dtype, name="suspect")(x)
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, dtype=dtype, name="head")(x))


@TF_ONLY
def test_a_wrong_low_precision_conv_is_named_and_the_model_left_as_it_was():
    model = _model(DoublingConv2D, "mixed_bfloat16")
    before = [w.copy() for w in model.get_weights()]
    keras.utils.set_random_seed(3)
    faults = low_precision_faults(model, (20, 12, 1))
    after_probe = keras.ops.convert_to_numpy(keras.random.normal((4,)))
    keras.utils.set_random_seed(3)
    assert np.array_equal(after_probe, keras.ops.convert_to_numpy(keras.random.normal((4,))))  # no Keras RNG drawn
    assert {(f.layer, f.part) for f in faults} == {("suspect", "output"), ("suspect", "input gradient"),
                                                   ("suspect", "kernel gradient")}
    fault = faults[0]
    assert fault.input_shape == (1, 20, 12, 4) and fault.dtype == "bfloat16" and fault.error == pytest.approx(1, 0.05)
    assert str(fault).startswith("suspect (DoublingConv2D over 20x12 x 4 channels): bfloat16 output relative error 1")
    assert all(layer.dtype_policy.name == "mixed_bfloat16" for layer in model.layers[1:])  # policies restored
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@TF_ONLY
def test_a_nested_model_is_checked_at_its_own_input_shape():
    inner = _model(DoublingConv2D, "mixed_bfloat16")
    inputs = keras.Input((None, None, 1))
    x = keras.layers.MaxPooling2D(2)(inputs)
    outer = keras.Model(inputs, inner(x))
    faults = low_precision_faults(outer, (20, 12, 1))
    assert {(f.layer, f.input_shape) for f in faults} == {("suspect", (1, 10, 6, 4))}


@TF_ONLY
def test_identical_convolutions_are_run_once_and_each_named():
    inputs = keras.Input((None, None, 4))
    x = DoublingConv2D(4, 3, padding="same", dtype="mixed_bfloat16", name="first")(inputs)
    x = DoublingConv2D(4, 3, padding="same", dtype="mixed_bfloat16", name="second")(x)
    calls = []
    original = DoublingConv2D.convolution_op
    DoublingConv2D.convolution_op = lambda self, a, k: calls.append(self.name) or original(self, a, k)
    try:
        faults = low_precision_faults(keras.Model(inputs, x), (8, 8, 4))
    finally:
        DoublingConv2D.convolution_op = original
    assert [f.layer for f in faults if f.part == "output"] == ["first", "second"]
    assert set(calls) == {"first"}  # the second has the same class, config and input shape


@TF_ONLY
def test_correct_and_float32_models_have_no_faults():
    assert low_precision_faults(_model(keras.layers.Conv2D, "mixed_bfloat16"), (16, 16, 1)) == []
    assert low_precision_faults(_model(DoublingConv2D, "float32"), (16, 16, 1)) == []  # nothing in bfloat16


class ExplodingConv2D(keras.layers.Conv2D):
    """A convolution that must not be run in bfloat16."""

    def convolution_op(self, inputs, kernel):
        if self.compute_dtype == "bfloat16":
            raise AssertionError("a map smaller than the kernel was run in bfloat16")
        return super().convolution_op(inputs, kernel)


@TF_ONLY
def test_a_map_smaller_than_the_kernel_is_a_fault_without_being_run():
    inputs = keras.Input((None, None, 1))
    # The output is 1 px wide (a 1e34 kernel-gradient error when run here), then the input is
    x = ExplodingConv2D(4, 3, strides=(1, 8), padding="same", dtype="mixed_bfloat16", name="squash")(inputs)
    x = ExplodingConv2D(4, 3, strides=2, padding="same", dtype="mixed_bfloat16", name="thin")(x)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2, dtype="mixed_bfloat16", name="up")(x)  # 1 px wide: checked, run
    model = keras.Model(inputs, x)
    faults = low_precision_faults(model, (16, 8, 1))
    assert [(f.layer, f.input_shape, f.error) for f in faults] == [("squash", (1, 16, 8, 1), None),
                                                                   ("thin", (1, 16, 1, 4), None)]
    assert "not trusted (input or output smaller than the kernel" in str(faults[0])


@TF_ONLY
def test_a_3d_unet_at_16_cubed_is_refused_its_bottleneck_and_trusted_at_32():
    """A 16³ window gives unet3d_fb a 2x2x2 bottleneck under 3x3x3 kernels: the shape whose bfloat16 kernel
    gradient TensorFlow 2.21 computed wrong (benchmarks/precision_kernels.py) and that failed CI in one SGD step."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = emzoo.build("unet3d_fb", input_shape=(None, None, None, 1))
    finally:
        keras.config.set_dtype_policy(previous)
    faults = low_precision_faults(model, (16, 16, 16, 1))
    assert {(f.layer, f.input_shape[1:4]) for f in faults} == {("bottom_conv1", (2, 2, 2)), ("bottom_conv2", (2, 2, 2))}
    assert low_precision_faults(model, (32, 32, 32, 1)) == []  # a 4x4x4 bottleneck runs, and agrees with float32


def _blobs():
    rng = np.random.default_rng(0)
    labels = (rng.random((3, 32, 32)) > 0.7).astype(np.uint8)
    return (80 + 100 * labels + rng.normal(0, 20, labels.shape)).astype(np.float32), labels


def _fake_faults(model, input_shape):
    """A fault in every bfloat16 model (the real check is tested above)."""
    if all(layer.compute_dtype != "bfloat16" for layer in model.layers):
        return []
    return [KernelFault("enc1_conv1", "Conv2D", (1, *input_shape), "bfloat16", "kernel gradient", 0.9)]


@TF_ONLY
@pytest.mark.filterwarnings("ignore:.*collapsed")  # one step of a tiny net: the precision is what is tested
def test_finetune_falls_back_to_float32_on_auto_and_refuses_an_explicit_policy(monkeypatch):
    monkeypatch.setattr(MODULE, "low_precision_faults", _fake_faults)
    kw = dict(steps=1, batch_size=2, patch_size=32, build_kwargs={"widths": (4, 8, 16)}, progress=False, workers=1)
    refused = (r"bfloat16 is wrong or untrusted on this machine for 1 convolution\(s\) at the 1x32x32 training "
               r"window.*Train in float32 \(mixed_precision=False\)")
    with pytest.raises(ValueError, match=refused):
        finetune("unet", _blobs(), mixed_precision="mixed_bfloat16", **kw)
    if mixed_policy("auto") is None:
        pytest.skip("'auto' trains in float32 on this machine: no low-precision model to fall back from")
    with pytest.warns(PrecisionWarning, match="training in float32 instead"):
        model, history = finetune("unet", _blobs(), **kw)
    assert model.dtype_policy.name == "float32" and history["recipe"]["precision"] == "float32"
    reference, ref_history = finetune("unet", _blobs(), mixed_precision=False, **kw)
    assert history["loss"] == ref_history["loss"]  # the fallback is the float32 run, from the same start
