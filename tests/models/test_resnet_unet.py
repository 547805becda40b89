"""ResNet50-U-Net facts (ARCHITECTURES.md §7): the narrow x2 bottlenecks, the pad-4 stem, the kept quirks."""

from __future__ import annotations

import keras
import pytest

import emzoo
from emzoo.models.resnet_unet import apply_bottleneck_block

SHAPE = (64, 64, 1)


@pytest.fixture(scope="module")
def model():
    return emzoo.build("resnet50_unet", input_shape=SHAPE)


def _out(model, name):
    return tuple(model.get_layer(name).output.shape[1:])


def test_layer_counts_and_keras2_block_names(model):
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 82
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 81
    blocks = sorted({layer.name[3:6].rstrip("_") for layer in convs if layer.name.startswith("res")})
    assert blocks == sorted(["2a", "2b", "2c", "3a", "3b", "3d", "4a", "4b", "4f", "5a", "5b", "5c",
                             "6a", "6b", "6c", "7a", "7b", "7f", "8a", "8b", "8d", "10a", "10b", "10c"])
    assert all(layer.use_bias and type(layer.kernel_initializer).__name__ == "GlorotUniform" for layer in convs)
    assert convs[-1].name == "convLast" and convs[-1].kernel_size == (3, 3)


def test_stem_maps_4m_to_m_and_stage_resolutions(model):
    # 64 -> pad 4 -> 72 -> 7x7/2 valid -> 33 -> 3x3/2 valid -> 16
    assert _out(model, "conv1_pad") == (72, 72, 1)
    assert _out(model, "conv1") == (33, 33, 16)
    assert _out(model, "pool1") == (16, 16, 16)
    expected = {"res2c_out": (16, 16, 32), "res3d_out": (8, 8, 64), "res4f_out": (4, 4, 128),
                "res5c_out": (2, 2, 256), "stage6_concat": (4, 4, 256), "stage7_concat": (8, 8, 128),
                "stage8_concat": (16, 16, 64), "res10c_out": (32, 32, 16), "convLast": (64, 64, 1)}
    assert {name: _out(model, name) for name in expected} == expected


def test_quirks_expanding_identity_blocks_and_no_full_resolution_skip(model):
    assert tuple(model.get_layer("res6b_branch2a").kernel.shape) == (1, 1, 128, 256)  # the first 1x1 expands
    assert model.get_layer("res3a_branch2a").strides == (2, 2) and model.get_layer("res3a_branch1").strides == (2, 2)
    assert model.get_layer("res2a_branch2a").strides == (1, 1)
    concats = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert [layer.name for layer in concats] == ["stage6_concat", "stage7_concat", "stage8_concat"]
    for layer, skip in zip(concats, ["res4f_out", "res3d_out", "res2c_out"], strict=True):
        x, s = layer._inbound_nodes[0].arguments.keras_tensors
        assert s is model.get_layer(skip).output  # order [x, skip]
    assert not any(layer.name.startswith(("res9", "bn9")) for layer in model.layers)


def test_bottleneck_block_errors_and_divisor():
    with pytest.raises(ValueError, match="identity block needs 8"):
        apply_bottleneck_block(keras.Input((8, 8, 4)), (2, 2, 8), kind="identity", name="1a")
    with pytest.raises(ValueError, match="kind"):
        apply_bottleneck_block(keras.Input((8, 8, 4)), (2, 2, 8), kind="down", name="1a")
    with pytest.raises(ValueError, match="multiple of"):
        emzoo.build("resnet50_unet", input_shape=(48, 48, 1))
