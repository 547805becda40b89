"""Franco-Barranco stable U-Nets: one builder for 2D/3D, variant wiring, dropout order, SE placement, counts."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import emzoo
from emzoo.flops import count_flops
from emzoo.models.stable_unet import build_stable_unet

_2D = dict(input_shape=(32, 32, 1), ndim=2)
_3D = dict(input_shape=(16, 16, 16, 1), ndim=3, widths=(28, 36, 48, 64), dropout=(0.1,) * 4)


def _inputs_of(model, layer_name):
    return [t.name for t in model.get_layer(layer_name).input]


def _out(model, layer_name):
    return model.get_layer(layer_name).output.name


@pytest.mark.parametrize("variant, params_2d, params_3d", [
    ("unet", 1_940_817, 788_817),
    ("attention", 1_940_817 + 44_244, 797_924),
    ("se", 1_940_817 + 10_880, 790_769),
])
def test_one_builder_for_2d_and_3d(variant, params_2d, params_3d):
    m2 = build_stable_unet(variant=variant, **_2D)
    m3 = build_stable_unet(variant=variant, **_3D)
    assert (m2.count_params(), m3.count_params()) == (params_2d, params_3d)
    assert m2.output_shape == (None, 32, 32, 1) and m3.output_shape == (None, 16, 16, 16, 1)
    assert all(not isinstance(layer, keras.layers.BatchNormalization) for layer in m2.layers + m3.layers)


def test_gflops_at_512_are_four_times_256():
    # ARCHITECTURES.md §1: 24.11 / 25.46 / 25.20 GFLOPs at 512².
    for name, gflops in (("unet2d_fb", 24.11), ("resunet2d_fb", 25.46), ("attention_unet2d_fb", 25.20)):
        assert count_flops(name, input_shape=(512, 512, 1)).gflops == pytest.approx(gflops, abs=0.006)


def test_plain_block_order_elu_dropout_and_he_init():
    model = emzoo.build("unet2d_fb", input_shape=(32, 32, 1))
    names = [layer.name for layer in model.layers]
    assert names[1:6] == ["enc0_conv1", "enc0_act1", "enc0_drop", "enc0_conv2", "enc0_act2"]
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    assert rates == {"enc0_drop": 0.1, "enc1_drop": 0.1, "enc2_drop": 0.2, "enc3_drop": 0.2, "bottom_drop": 0.3,
                     "dec3_drop": 0.2, "dec2_drop": 0.2, "dec1_drop": 0.1, "dec0_drop": 0.1}
    assert model.get_layer("enc0_act1").activation.__name__ == "elu"
    assert isinstance(model.get_layer("enc0_conv1").kernel_initializer, keras.initializers.HeNormal)
    up = model.get_layer("dec0_up")
    assert isinstance(up, keras.layers.Conv2DTranspose) and up.strides == (2, 2) and up.use_bias
    assert _inputs_of(model, "dec0_concat") == [_out(model, "dec0_up"), _out(model, "enc0_act2")]
    assert model.get_layer("head_out").activation.__name__ == "sigmoid"


def test_residual_blocks_concat_order_and_reversed_dropout():
    m2 = emzoo.build("resunet2d_fb", input_shape=(32, 32, 1))
    names = {layer.name for layer in m2.layers}
    assert "enc0_act0" not in names and "enc1_act0" in names  # no pre-activation in the very first block
    assert "enc0_shortcut" in names and m2.get_layer("enc0_shortcut").kernel_size == (1, 1)
    assert _inputs_of(m2, "dec0_concat") == [_out(m2, "enc0_add"), _out(m2, "dec0_up")]  # 2D: [skip, up]
    assert m2.get_layer("enc0_drop").rate == 0.3 and m2.get_layer("bottom_drop").rate == 0.1  # reversed list
    # The head reads the un-activated residual sum.
    assert m2.get_layer("head_out").input.name == _out(m2, "dec0_add")
    m3 = emzoo.build("resunet3d_fb", input_shape=(16, 16, 16, 1))
    assert _inputs_of(m3, "dec0_concat") == [_out(m3, "dec0_up"), _out(m3, "enc0_add")]  # 3D: [up, skip]
    assert m3.get_layer("dec3_up").strides == (2, 2, 2)


def test_attention_gate_multiplies_the_decoder_tensor_unless_gate_skip():
    faithful = build_stable_unet(variant="attention", **_2D)
    textbook = build_stable_unet(variant="attention", gate_skip=True, **_2D)
    assert faithful.count_params() == textbook.count_params()
    for model, gated in ((faithful, "dec1_up"), (textbook, "enc1_act2")):
        assert _inputs_of(model, "dec1_att_gate") == [_out(model, gated), _out(model, "dec1_att_psi")]
        assert _inputs_of(model, "dec1_concat") == [_out(model, "dec1_up"), _out(model, "dec1_att_gate")]
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 1)).astype("float32")
    textbook.set_weights(faithful.get_weights())
    assert not np.allclose(np.asarray(faithful(x)), np.asarray(textbook(x)))


def test_se_placement():
    model = emzoo.build("se_unet2d_fb", input_shape=(32, 32, 1))
    se = [layer.name for layer in model.layers if layer.name.endswith("_scale")]
    assert len(se) == 16 and not any(n.startswith("bottom") for n in se)
    assert model.get_layer("enc0_drop").input.name == _out(model, "enc0_se1_scale")  # dropout after the 1st SE
    assert model.get_layer("enc3_se2_reduce").units == 128 // 16


def test_anisotropic_3d_and_softmax_head():
    model = build_stable_unet(input_shape=(4, 32, 32, 1), ndim=3, widths=(28, 36, 48), dropout=(0.1,) * 3,
                              z_down=1, num_classes=3)
    assert model.output_shape == (None, 4, 32, 32, 3)
    assert model.get_layer("enc0_pool").pool_size == (1, 2, 2)
    x = np.random.default_rng(1).normal(size=(1, 4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_shape=(40, 40, 1)), "multiple of"),
    (dict(input_shape=(32, 32, 1), variant="dense"), "variant must be one of"),
    (dict(input_shape=(32, 32, 1), gate_skip=True), "gate_skip=True only applies"),
    (dict(input_shape=(32, 32, 1), dropout=(0.1,)), "one dropout rate per width"),
    (dict(input_shape=(32, 32, 1), ndim=3), "4 axes"),
])
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_stable_unet(**kwargs)
