"""ZeroMeanConv3D: zero-mean effective filters, offset blindness, projected gradient, serialisation, FLOPs."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from emzoo.flops import count_flops
from emzoo.layers.zero_mean_conv import ZeroMeanConv3D
from tests._backend import tensorflow_only


def _layer_with_offset_weights(seed=0, cin=2, filters=4, use_bias=False):
    rng = np.random.default_rng(seed)
    layer = ZeroMeanConv3D(filters, 3, padding="valid", use_bias=use_bias)
    layer.build((None, 5, 5, 5, cin))
    # Clearly non-zero-mean stored weights: the re-parameterisation, not the initialiser, must do the work.
    layer.kernel.assign(rng.normal(loc=0.7, size=(3, 3, 3, cin, filters)).astype("float32"))
    return layer, rng


def test_effective_kernel_is_centred_per_filter():
    layer, _ = _layer_with_offset_weights()
    stored = np.asarray(layer.kernel)
    effective = np.asarray(layer.effective_kernel)
    assert np.all(np.abs(stored.mean(axis=(0, 1, 2, 3))) > 0.3)
    np.testing.assert_allclose(effective.mean(axis=(0, 1, 2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(effective, stored - stored.mean(axis=(0, 1, 2, 3), keepdims=True), atol=1e-6)


def test_output_equals_plain_conv_with_centred_kernel_and_ignores_offsets():
    layer, rng = _layer_with_offset_weights(use_bias=True)
    layer.bias.assign(rng.normal(size=4).astype("float32"))
    x = rng.normal(size=(2, 5, 5, 5, 2)).astype("float32")
    plain = keras.layers.Conv3D(4, 3, padding="valid")
    plain.build(x.shape)
    plain.set_weights([np.asarray(layer.effective_kernel), np.asarray(layer.bias)])
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(x + 12.5)), np.asarray(layer(x)), atol=1e-4)
    # The plain conv with the stored (non-zero-mean) kernel is not offset-blind: the test above can fail.
    plain.set_weights([np.asarray(layer.kernel), np.asarray(layer.bias)])
    assert np.abs(np.asarray(plain(x + 12.5)) - np.asarray(plain(x))).min() > 1.0


@tensorflow_only
def test_gradient_is_projected_onto_zero_mean_filters():
    layer, rng = _layer_with_offset_weights(seed=1)
    x = tf.constant(rng.normal(size=(1, 5, 5, 5, 2)).astype("float32"))
    readout = tf.constant(rng.normal(size=(1, 3, 3, 3, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(readout * layer(x))
    grad = np.asarray(tape.gradient(loss, layer.kernel.value))
    assert np.abs(grad).max() > 1e-3
    np.testing.assert_allclose(grad.mean(axis=(0, 1, 2, 3)), 0.0, atol=1e-5)


def test_counted_like_a_conv3d_and_roundtrips(tmp_path):
    inputs = keras.Input((8, 8, 8, 1))
    model = keras.Model(inputs, ZeroMeanConv3D(16, 3, padding="same", use_bias=False, name="zm")(inputs))
    assert count_flops(model).macs == 8**3 * 27 * 16
    model.get_layer("zm").kernel.assign(np.full((3, 3, 3, 1, 16), 0.5, "float32"))
    path = tmp_path / "zm.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # registered: safe mode, no custom_objects
    assert type(restored.get_layer("zm")) is ZeroMeanConv3D
    x = np.random.default_rng(2).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(restored(x)))
