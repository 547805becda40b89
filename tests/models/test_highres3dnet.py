"""HighRes3DNet / HighRes3DZMNet: §9.2 counts for both layouts, dilations, zero-padded shortcuts, ZM invariance."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import emzoo
from emzoo.flops import count_flops
from emzoo.layers.channel_pad import ChannelPad
from emzoo.layers.zero_mean_conv import ZeroMeanConv3D
from emzoo.models.highres3dnet import build_highres3dnet


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# ARCHITECTURES.md §9.2: (classes, extra_1x1) -> (total, trainable, MACs per voxel)
@pytest.mark.parametrize(
    "classes, extra_1x1, total, trainable, macs_per_voxel",
    [
        (2, True, 810_392, 808_948, 807_504),
        (3, True, 810_476, 809_030, 807_584),
        (160, True, 823_664, 821_904, 820_144),
        (2, False, 804_920, 803_636, 802_352),
        (160, False, 815_664, 814_064, 812_464),
    ],
)
def test_counts_of_both_layouts(classes, extra_1x1, total, trainable, macs_per_voxel):
    model = build_highres3dnet(input_shape=(8, 8, 8, 1), num_classes=classes, extra_1x1=extra_1x1)
    assert model.count_params() == total
    assert _trainable(model) == trainable
    assert count_flops(model).macs == macs_per_voxel * 8**3
    assert ("conv_1" in [layer.name for layer in model.layers]) is extra_1x1


def test_zmnet_counts_equal_the_plain_net():
    zm = build_highres3dnet(input_shape=(8, 8, 8, 1), num_classes=3, zero_mean_first=True)
    assert zm.count_params() == 810_476 and _trainable(zm) == 809_030
    assert type(zm.get_layer("conv_0")) is ZeroMeanConv3D
    assert [type(layer) for layer in zm.layers if isinstance(layer, ZeroMeanConv3D)] == [ZeroMeanConv3D]


def test_layout_dilations_bn_and_same_size_output():
    model = emzoo.build("highres3dnet", input_shape=(12, 20, 16, 1))
    assert model.output_shape == (None, 12, 20, 16, 2)
    dilations = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):
            assert layer.use_bias is False and layer.padding == "same"
            dilations[layer.name] = layer.dilation_rate[0]
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.momentum, layer.epsilon) == (0.9, 1e-5)
    assert dilations["res_1_2_conv_1"] == 1 and dilations["res_2_0_conv_0"] == 2 and dilations["res_3_2_conv_1"] == 4
    assert sum(name.startswith("res_") for name in dilations) == 18
    # BN on the logits, then the softmax as the final layer.
    assert [type(layer).__name__ for layer in model.layers[-3:]] == ["Conv3D", "BatchNormalization", "Activation"]


def test_widening_shortcut_is_symmetric_zero_padding():
    model = build_highres3dnet(input_shape=(8, 8, 8, 1), num_classes=2)
    pads = {layer.name: (layer.before, layer.after) for layer in model.layers if isinstance(layer, ChannelPad)}
    assert pads == {"res_2_0_pad": (8, 8), "res_3_0_pad": (16, 16)}
    # With the conv path of res_2_0 silenced, the block outputs exactly the zero-padded input.
    for i in range(2):
        conv = model.get_layer(f"res_2_0_conv_{i}")
        conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    block_in = model.get_layer("res_1_2_add").output
    probe = keras.Model(model.input, [block_in, model.get_layer("res_2_0_add").output])
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    before, after = (np.asarray(t) for t in probe(x, training=False))
    np.testing.assert_array_equal(after[..., 8:24], before)
    np.testing.assert_array_equal(after[..., :8], 0.0)
    np.testing.assert_array_equal(after[..., 24:], 0.0)


@pytest.mark.parametrize("zero_mean, blind", [(True, True), (False, False)])
def test_conv_0_is_blind_to_brightness_offsets_only_in_zmnet(zero_mean, blind):
    name = "highres3dzmnet" if zero_mean else "highres3dnet"
    model = emzoo.build(name, input_shape=(10, 10, 10, 1))
    conv_0 = model.get_layer("conv_0")
    rng = np.random.default_rng(1)
    # Random weights with a clearly non-zero mean per filter: the layer, not the initialiser, must remove it.
    conv_0.kernel.assign(rng.normal(loc=0.5, scale=1.0, size=conv_0.kernel.shape).astype("float32"))
    probe = keras.Model(model.input, conv_0.output)
    x = rng.normal(size=(1, 10, 10, 10, 1)).astype("float32")
    out, shifted = np.asarray(probe(x)), np.asarray(probe(x + 7.0))
    # 'same' zero padding breaks the invariance on the 1-voxel border; compare the interior only.
    diff = np.abs(shifted - out)[:, 1:-1, 1:-1, 1:-1]
    if blind:
        assert diff.max() < 1e-3
        assert np.abs(shifted - out)[:, 0].max() > 1e-2  # the border does change: the interior cut is needed
    else:
        assert diff.min() > 1.0


def test_zero_mean_survives_a_training_step():
    model = emzoo.build("highres3dzmnet", input_shape=(8, 8, 8, 1))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 8, 8, 8, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, size=(1, 8, 8, 8)), 3)
    before = np.asarray(model.get_layer("conv_0").kernel).copy()
    model.train_on_batch(x, y)
    conv_0 = model.get_layer("conv_0")
    assert not np.allclose(np.asarray(conv_0.kernel), before)
    np.testing.assert_allclose(np.asarray(conv_0.effective_kernel).mean(axis=(0, 1, 2, 3)), 0.0, atol=1e-6)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="4 axes"):
        emzoo.build("highres3dnet", input_shape=(16, 16, 1))
