"""ChannelPad: zero channels in front and behind, shape inference, serialisation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from emzoo.layers.channel_pad import ChannelPad


def test_pads_zeros_on_both_sides_and_keeps_values():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5, 6)).astype("float32")
    y = np.asarray(ChannelPad(2, 3)(x))
    assert y.shape == (2, 3, 4, 5, 11)
    np.testing.assert_array_equal(y[..., 2:8], x)
    np.testing.assert_array_equal(y[..., :2], 0.0)
    np.testing.assert_array_equal(y[..., 8:], 0.0)


def test_symbolic_shape_and_no_weights():
    layer = ChannelPad(8, 8)
    out = layer(keras.Input((None, None, None, 16)))
    assert tuple(out.shape) == (None, None, None, None, 32)
    assert layer.count_params() == 0


def test_negative_padding_is_a_clear_error():
    with pytest.raises(ValueError, match="before and after must be >= 0"):
        ChannelPad(-1, 2)


def test_keras_file_roundtrip_without_custom_objects(tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, ChannelPad(1, 2, name="pad")(inputs))
    path = tmp_path / "pad.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    layer = restored.get_layer("pad")
    assert type(layer) is ChannelPad and (layer.before, layer.after) == (1, 2)
    x = np.ones((1, 4, 4, 3), "float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(restored(x)))
