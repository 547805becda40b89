"""Guay 2D-3D net: in/out size relation, crops, ReLU'd logits feeding the pyramid, outputs, ablation readings."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import emzoo
from emzoo.models.net2d3d import build_net2d3d, net2d3d_output_window


@pytest.mark.parametrize("size, out", [(8, 8), (13, 8), (20, 16), (31, 24), (256, 256), (300, 296)])
def test_output_size_relation(size, out):
    assert net2d3d_output_window(size) == ((size - out) // 2, out)
    model = build_net2d3d(input_shape=(3, size, size + 8, 1), pyramid=size < 200)
    for shape in model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]:
        assert shape == (None, 3, out, out + 8, 7)


def test_skip_crops_at_the_reference_input():
    model = emzoo.build("net2d3d")
    crops = {name: model.get_layer(name).cropping for name in ("dec2_crop", "dec1_crop", "dec0_crop", "pyr1_crop")}
    assert crops["dec2_crop"] == ((0, 0), (0, 1), (0, 1))  # 75 -> 74
    assert crops["dec1_crop"] == ((0, 0), (1, 1), (1, 1))  # 150 -> 148
    assert crops["dec0_crop"] == ((0, 0), (2, 2), (2, 2))  # 300 -> 296
    assert crops["pyr1_crop"] == ((2, 3), (0, 0), (0, 0))  # z 10 -> 5, slices 2..6
    assert model.get_layer("enc2_pool").output.shape[2] == 37  # 'valid' pooling of 75


@pytest.mark.parametrize("shape, message", [((5, 7, 300, 1), ">= 8"), ((5, None, 64, 1), "fully known"),
                                            ((300, 300, 1), "4 axes")])
def test_invalid_sizes_are_clear_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        emzoo.build("net2d3d", input_shape=shape)


def test_outputs_order_names_and_probabilities():
    model = emzoo.build("net2d3d", input_shape=(5, 20, 20, 1))
    assert model.output_names == ["pred3d", "pred2d"]
    assert emzoo.info("net2d3d").output_names == ("pred3d", "pred2d")
    # The pyramid reads the ReLU'd 2D logits (not the softmax) next to the 2D features.
    concat = model.get_layer("pyr_concat")
    assert [t.name for t in concat.input] == [model.get_layer("dec0_conv2").output.name,
                                             model.get_layer("pred2d_logits").output.name]
    assert concat.output.shape[-1] == 64 + 7
    probe = keras.Model(model.input, [model.get_layer(n).output for n in
                                      ("pred3d_logits", "pred2d_logits", "pred3d", "pred2d")])
    x = np.random.default_rng(0).normal(size=(1, 5, 20, 20, 1)).astype("float32")
    logits3, logits2, prob3, prob2 = (np.asarray(t) for t in probe(x))
    assert logits3.min() >= 0 and logits2.min() >= 0  # genenet's ReLU on the logits
    for logits, prob in ((logits3, prob3), (logits2, prob2)):
        e = np.exp(logits - logits.max(-1, keepdims=True))
        np.testing.assert_allclose(prob, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_kernels_of_inserted_convs_and_up_widths():
    model = emzoo.build("net2d3d", input_shape=(5, 16, 16, 1))
    kernels = {layer.name: layer.kernel_size for layer in model.layers if type(layer) is keras.layers.Conv3D}
    inserted = ("enc0_conv0", "enc1_conv0", "dec1_conv0", "dec0_conv0")
    assert all(kernels[n] == (3, 3, 3) for n in inserted)
    assert "enc2_conv0" not in kernels and "bottom_conv0" not in kernels
    assert kernels["enc2_conv1"] == (1, 3, 3) and kernels["pyr1_conv6"] == (1, 1, 1)
    assert [model.get_layer(f"dec{s}_up").filters for s in (2, 1, 0)] == [256, 64, 32]
    assert model.get_layer("pyr1_up").kernel_size == (2, 2, 2)
    no3 = emzoo.build("net2d3d_no3x3x3", input_shape=(5, 16, 16, 1))
    assert all(no3.get_layer(n).kernel_size == (1, 3, 3) for n in inserted)


@pytest.mark.parametrize("kwargs, params", [
    ({}, 10_283_406),
    ({"pyramid_up": (1, 2, 2)}, 10_267_022),
    ({"inserted_convs": "1x3x3"}, 9_932_622),
    ({"inserted_convs": "none"}, 9_923_502),
    ({"pyramid": False}, 7_882_311),
])
def test_param_counts_of_the_readings(kwargs, params):
    # ARCHITECTURES.md §10.3-10.4; params do not depend on the input size.
    assert build_net2d3d(input_shape=(5, 16, 16, 1), **kwargs).count_params() == params


def test_nopyramid_is_single_output_and_option_errors():
    model = emzoo.build("net2d3d_nopyramid", input_shape=(3, 16, 16, 1))
    assert model.output_names == ["pred2d"] and model.output_shape == (None, 3, 16, 16, 7)
    with pytest.raises(ValueError, match="relu_logits=False"):
        build_net2d3d(input_shape=(5, 16, 16, 1), num_classes=1)
    with pytest.raises(ValueError, match="inserted_convs must be one of"):
        build_net2d3d(input_shape=(5, 16, 16, 1), inserted_convs="2d")
    assert build_net2d3d(input_shape=(5, 16, 16, 1), num_classes=1, relu_logits=False).output_shape[0][-1] == 1
