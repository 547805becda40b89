"""The shared up-conv decoder level and 2-channel head (EM-net, VGG16-U-Net)."""

from __future__ import annotations

import keras

from emzoo.blocks.unet_decoder import apply_two_channel_head, apply_upconv_decoder_level


def test_decoder_level_layers_names_and_concat_order():
    x, skip = keras.Input((4, 4, 6), name="deep"), keras.Input((8, 8, 3), name="skip")
    model = keras.Model([x, skip], apply_upconv_decoder_level(x, skip, 5, up_filters=7, name="dec2"))
    assert model.output_shape == (None, 8, 8, 5)
    names = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert names == ["dec2_up", "dec2_upconv", "dec2_upconv_bn", "dec2_upconv_act", "dec2_concat",
                     "dec2_conv1", "dec2_conv1_bn", "dec2_conv1_act", "dec2_conv2", "dec2_conv2_bn",
                     "dec2_conv2_act"]
    assert model.get_layer("dec2_upconv").kernel_size == (2, 2) and model.get_layer("dec2_upconv").filters == 7
    up, s = model.get_layer("dec2_concat")._inbound_nodes[0].arguments.keras_tensors
    assert up is model.get_layer("dec2_upconv_act").output and s is skip  # [upsampled, skip]
    assert tuple(model.get_layer("dec2_conv1").kernel.shape) == (3, 3, 7 + 3, 5)
    assert type(model.get_layer("dec2_conv1").kernel_initializer).__name__ == "HeNormal"


def test_head_sigmoid_or_softmax():
    x = keras.Input((8, 8, 4))
    one, three = apply_two_channel_head(x, 1), apply_two_channel_head(x, 3, name="head3")
    model = keras.Model(x, [one, three])
    assert model.get_layer("head_conv").filters == 2
    assert model.get_layer("head_out").activation is keras.activations.sigmoid
    assert model.get_layer("head3_out").activation is keras.activations.softmax
    assert type(model.get_layer("head_out").kernel_initializer).__name__ == "GlorotUniform"
