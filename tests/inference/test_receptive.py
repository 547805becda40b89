"""Receptive-field margins from the layer graph (and the impulse probe), and divisors."""

from __future__ import annotations

import keras
import pytest

from emzoo.inference import receptive_field
from emzoo.inference.receptive import analyse_graph, model_divisor
from tests.inference import toys


def _net(*layers, shape=(None, None, 1)):
    x = inputs = keras.Input(shape)
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_hand_computed_margins():
    conv = keras.layers.Conv2D
    assert receptive_field(_net(conv(2, 3, padding="same"), conv(1, 3, padding="same"))) == (2, 2)
    assert receptive_field(_net(conv(1, 3, padding="same", dilation_rate=4))) == (4, 4)
    assert receptive_field(_net(conv(1, 5, padding="valid"))) == (2, 2)  # placed 2 px in: 2 on each side
    assert receptive_field(_net(conv(1, (1, 7), padding="same"))) == (0, 3)
    # Even kernels reach one pixel further on one side.
    assert receptive_field(_net(conv(1, 2, padding="same"))) == (1, 1)
    pooled = _net(keras.layers.MaxPooling2D(2), conv(1, 3, padding="same"), keras.layers.UpSampling2D(2))
    assert receptive_field(pooled) == (3, 3)  # 2 px of the conv at stride 2, plus 1 px of pooling alignment
    assert model_divisor(pooled) == (2, 2)


def test_zoo_models_and_probe_lower_bound():
    unet = toys.tiny_unet()
    assert receptive_field(unet) == (27, 27)
    assert model_divisor(unet) == (4, 4)
    probe = receptive_field(unet, method="probe")
    assert all(20 <= p <= a for p, a in zip(probe, (27, 27), strict=True))
    dilated = toys.tiny_dilated_3d()
    assert receptive_field(dilated) == (7, 7, 7)  # stride 1 everywhere: the analytic margin is exact ...
    assert receptive_field(dilated, method="probe") == (7, 7, 7)  # ... and the probe finds all of it


def test_multi_frame_and_cropped_nets():
    frames = toys.frames_net(5)
    info = analyse_graph(frames)
    assert info.dropped_axes == 1 and receptive_field(frames) == (3, 3)
    cropped = toys.cropped_3d((3, 20, 20, 1))
    assert receptive_field(cropped) == (0, 5, 5)
    assert model_divisor(cropped) == (1, 2, 2)


def test_emzoo_custom_layers_are_known():
    from emzoo.layers.dilated_conv_transpose import DilatedConv2DTranspose
    from emzoo.layers.max_pool_indices import MaxPoolingWithIndices2D, MaxUnpooling2D

    x = inputs = keras.Input((None, None, 1))
    values, indices = MaxPoolingWithIndices2D(2)(x)
    y = keras.layers.Conv2D(1, 3, padding="same")(values)
    y = MaxUnpooling2D(2)([y, indices])
    z = DilatedConv2DTranspose(1, 4, strides=2, dilation_rate=3, padding="same")(values)
    model = keras.Model(inputs, keras.layers.Add()([y, z]))
    analytic = receptive_field(model)
    probe = receptive_field(model, method="probe")
    assert all(p <= a for p, a in zip(probe, analytic, strict=True)) and min(probe) > 0


def test_unknown_layers():
    model = _net(keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D())
    with pytest.raises(ValueError, match="pools globally.*method='probe'"):
        receptive_field(model)
    with pytest.raises(ValueError, match="method must be"):
        receptive_field(toys.tiny_unet(), method="guess")


def test_squeeze_excite_gate_keeps_a_local_field():
    """A keepdims global pool (SE gate) is treated as local, so SE nets get a finite margin and their divisor."""
    import emzoo
    from emzoo.inference.receptive import model_divisor

    model = emzoo.build("se_unet2d_fb", input_shape=(None, None, 1))
    assert model_divisor(model) == (16, 16)
    margin = receptive_field(model)
    assert margin == receptive_field(emzoo.build("unet2d_fb", input_shape=(None, None, 1)))
