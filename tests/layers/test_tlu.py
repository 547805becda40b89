"""TLU (EM-net's trainable linear unit): formula, ReLU start, gradients, serialisation, weight shape."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from emzoo.layers import TLU
from tests._backend import tensorflow_only


def _away_from_zero(rng, shape, margin=0.05):
    # Keep samples off the kink at 0, where finite differences are meaningless.
    x = rng.normal(size=shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin * 2, x)


def test_forward_equals_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 3)).astype("float32")
    tlu = TLU()
    tlu.build(x.shape)
    alpha, beta = rng.normal(size=(1, 1, 3)), rng.normal(size=(1, 1, 3))
    tlu.set_weights([alpha.astype("float32"), beta.astype("float32")])
    expected = beta * np.maximum(x, 0) - alpha * np.maximum(-x, 0)
    np.testing.assert_allclose(np.asarray(tlu(x)), expected, rtol=1e-6, atol=1e-7)
    # Equivalent piecewise form: beta*x for x >= 0, alpha*x below.
    np.testing.assert_allclose(np.asarray(tlu(x)), np.where(x >= 0, beta * x, alpha * x), rtol=1e-6, atol=1e-7)


def test_starts_as_exact_relu():
    x = np.random.default_rng(1).normal(size=(3, 7, 7, 5)).astype("float32")
    tlu = TLU()
    np.testing.assert_array_equal(np.asarray(tlu(x)), np.maximum(x, 0))
    assert [w.name for w in tlu.weights] == ["alpha", "beta"]
    np.testing.assert_array_equal(np.asarray(tlu.alpha), 0.0)
    np.testing.assert_array_equal(np.asarray(tlu.beta), 1.0)
    assert all(w.trainable for w in tlu.weights)


@tensorflow_only
def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    x0 = _away_from_zero(rng, (2, 3, 3, 2))
    weights = rng.normal(size=x0.shape)  # a random linear read-out makes every partial derivative count
    tlu = TLU(dtype="float64")
    tlu.build(x0.shape)
    params = [rng.normal(size=(1, 1, 2)), rng.normal(size=(1, 1, 2))]
    tlu.set_weights(params)

    def loss(x, alpha, beta):
        tlu.set_weights([alpha, beta])
        return float(np.sum(weights * np.asarray(tlu(x))))

    x_var = tf.Variable(x0)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(weights * tlu(x_var))
    grad_x, grad_alpha, grad_beta = tape.gradient(value, [x_var, tlu.alpha.value, tlu.beta.value])

    # Analytic forms of §2: df/dbeta = relu(x), df/dalpha = -relu(-x).
    np.testing.assert_allclose(np.asarray(grad_beta), np.sum(weights * np.maximum(x0, 0), axis=(0, 1, 2))[None, None])
    np.testing.assert_allclose(
        np.asarray(grad_alpha), np.sum(-weights * np.maximum(-x0, 0), axis=(0, 1, 2))[None, None]
    )

    eps = 1e-6
    args = [x0, params[0], params[1]]
    for index, analytic in enumerate([grad_x, grad_alpha, grad_beta]):
        numeric = np.zeros_like(args[index])
        for pos in np.ndindex(args[index].shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[index][pos] += eps
            minus[index][pos] -= eps
            numeric[pos] = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(analytic), numeric, rtol=1e-6, atol=1e-8)
    # alpha gets a gradient from the very first step even though it starts at 0.
    fresh = TLU()
    x_neg = tf.constant(-np.abs(x0).astype("float32"))
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(fresh(x_neg))
    assert np.all(np.asarray(tape.gradient(out, fresh.alpha.value)) != 0)


def test_config_roundtrip():
    tlu = TLU(alpha_initializer=keras.initializers.Constant(0.3), beta_initializer="he_normal",
              shared_axes=[1], name="my_tlu")
    config = tlu.get_config()
    clone = TLU.from_config(config)
    assert clone.get_config() == config
    assert clone.shared_axes == [1]
    assert isinstance(clone.alpha_initializer, keras.initializers.Constant)
    assert isinstance(clone.beta_initializer, keras.initializers.HeNormal)
    # Registered under the emzoo package, so the generic deserialiser finds it without custom_objects.
    restored = keras.layers.deserialize(keras.layers.serialize(tlu))
    assert type(restored) is TLU
    assert restored.get_config() == config


def test_keras_file_roundtrip_without_custom_objects(tmp_path):
    rng = np.random.default_rng(3)
    inputs = keras.Input((8, 8, 4))
    outputs = TLU(name="tlu")(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    model = keras.Model(inputs, outputs)
    tlu = model.get_layer("tlu")
    tlu.set_weights([rng.normal(size=(1, 1, 4)).astype("float32"), rng.normal(size=(1, 1, 4)).astype("float32")])
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")

    path = tmp_path / "tlu.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # safe_mode on, no custom_objects
    assert type(restored.get_layer("tlu")) is TLU
    for a, b in zip(tlu.get_weights(), restored.get_layer("tlu").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(restored(x)))


@pytest.mark.parametrize("spatial", [(8, 8), (16, 32), (None, None)])
def test_weight_shape_is_per_channel(spatial):
    tlu = TLU()
    tlu(keras.Input((*spatial, 6)))
    assert [tuple(w.shape) for w in tlu.weights] == [(1, 1, 6), (1, 1, 6)]
    assert tlu.count_params() == 12


def test_weight_shape_3d_and_unshared_axes():
    tlu = TLU()
    tlu(keras.Input((4, 8, 8, 3)))
    assert tuple(tlu.alpha.shape) == (1, 1, 1, 3)
    partly = TLU(shared_axes=[1])
    partly(keras.Input((8, 5, 3)))
    assert tuple(partly.beta.shape) == (1, 5, 3)
    with pytest.raises(ValueError, match="unshared axis"):
        TLU(shared_axes=[1])(keras.Input((None, None, 3)))
