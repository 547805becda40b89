"""VGG16-U-Net facts (ARCHITECTURES.md §6): a Keras-VGG16 encoder, pooled-feature skips, EM-net's decoder."""

from __future__ import annotations

import keras
import pytest

import emzoo
from emzoo.models.vgg_unet import build_vgg16_unet

SHAPE = (64, 64, 1)


@pytest.fixture(scope="module")
def model():
    return emzoo.build("vgg16_unet", input_shape=SHAPE)


def test_encoder_is_keras_vgg16_layer_for_layer(model):
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=SHAPE)
    expected = [(type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights])
                for layer in reference.layers[1:]]
    ours = [(type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers if layer.name.startswith("block")]
    assert ours == expected  # 13 convs and 5 pools, same names and kernel shapes
    assert all(model.get_layer(name).activation is keras.activations.relu
               for _, name, weights in ours if weights)


def test_skips_are_pooled_features_and_concat_order_is_upsampled_first(model):
    expected_skip = {5: "block4_pool", 4: "block3_pool", 3: "block2_pool", 2: "block1_pool", 1: "block1_conv2"}
    for level, skip_name in expected_skip.items():
        up, skip = model.get_layer(f"dec{level}_concat")._inbound_nodes[0].arguments.keras_tensors
        assert up is model.get_layer(f"dec{level}_upconv_act").output
        assert skip is model.get_layer(skip_name).output
    assert model.get_layer("dec5_up")._inbound_nodes[0].arguments.keras_tensors[0] is \
        model.get_layer("block5_pool").output


def test_layer_counts_and_decoder_widths(model):
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == 30 and len(norms) == 16
    assert not any(layer.name.startswith("block") for layer in norms)  # no BN in the encoder
    assert [model.get_layer(f"dec{level}_conv2").filters for level in range(5, 0, -1)] == [512, 256, 128, 64, 64]
    assert model.get_layer("dec5_upconv").kernel_size == (2, 2)
    assert model.get_layer("head_conv").filters == 2 and model.get_layer("head_out").kernel_size == (1, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of"):
        emzoo.build("vgg16_unet", input_shape=(48, 48, 1))
    with pytest.raises(ValueError, match="decoder width per block"):
        build_vgg16_unet(input_shape=(32, 32, 1), decoder=(8, 8))
