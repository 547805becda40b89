"""MaxPoolingWithIndices2D / MaxUnpooling2D: switches, tie-break, unpooling, gradients, serialisation, backends."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from emzoo.layers.max_pool_indices import MaxPoolingWithIndices2D, MaxUnpooling2D
from tests._backend import tensorflow_only


def _windows(x, ph=2, pw=2):
    """(N, H, W, C) -> (N, H/ph, W/pw, C, ph*pw), window positions row-major (numpy reference)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // ph, w // pw, c, -1)


def _pool(x, pool_size=2):
    pooled, indices = MaxPoolingWithIndices2D(pool_size)(x)
    return np.asarray(pooled), np.asarray(indices)


@pytest.mark.parametrize(
    "window, expected",
    [
        ([1.0, 3.0, 3.0, 2.0], 1),  # top-right and bottom-left tie: the first in row-major order wins
        ([5.0, 5.0, 5.0, 5.0], 0),  # all equal: top-left
        ([0.0, -1.0, 4.0, 4.0], 2),  # bottom tie: bottom-left
        ([-3.0, -2.0, -1.0, -1.5], 2),  # all negative: the maximum, not the largest magnitude
        ([0.0, 0.0, 0.0, 1.0], 3),
    ],
)
def test_tie_break_is_first_in_row_major_window_order(window, expected):
    x = np.array(window, "float32").reshape(1, 2, 2, 1)
    pooled, indices = _pool(x)
    assert indices.dtype == np.int32
    assert indices.item() == expected
    assert pooled.item() == max(window)


@pytest.mark.parametrize("pool_size", [2, (2, 3)])
def test_pooling_matches_keras_max_pooling_and_indices_point_at_maxima(pool_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    pooled, indices = _pool(x, pool_size)
    np.testing.assert_array_equal(pooled, np.asarray(keras.layers.MaxPooling2D(pool_size)(x)))
    ph, pw = (pool_size, pool_size) if isinstance(pool_size, int) else pool_size
    windows = _windows(x, ph, pw)
    np.testing.assert_array_equal(indices, windows.argmax(-1))
    np.testing.assert_array_equal(np.take_along_axis(windows, indices[..., None], -1)[..., 0], pooled)


def test_unpool_of_pool_keeps_maxima_in_place_and_zeros_elsewhere():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 8, 4)).astype("float32")
    pooled, indices = MaxPoolingWithIndices2D()(x)
    out = np.asarray(MaxUnpooling2D()([pooled, indices]))
    assert out.shape == x.shape
    is_max = x == np.repeat(np.repeat(np.asarray(pooled), 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(out, np.where(is_max, x, 0.0))
    # exactly one non-zero per window and channel (random normals have no ties and no zeros)
    assert ((_windows(out) != 0).sum(-1) == 1).all()


def test_unpool_with_ties_writes_only_the_first_position():
    x = np.full((1, 2, 2, 1), 7.0, "float32")
    pooled, indices = MaxPoolingWithIndices2D()(x)
    out = np.asarray(MaxUnpooling2D()([pooled, indices]))[0, :, :, 0]
    np.testing.assert_array_equal(out, [[7.0, 0.0], [0.0, 0.0]])


@tensorflow_only
def test_gradients_flow_through_pool_and_unpool_to_the_recorded_positions():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(1, 4, 4, 2)).astype("float32"))
    x_tied = tf.ones((1, 4, 4, 2))
    weights = tf.constant(rng.uniform(1.0, 2.0, size=(1, 4, 4, 2)).astype("float32"))
    pool, unpool = MaxPoolingWithIndices2D(), MaxUnpooling2D()
    for inputs in (x, x_tied):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            pooled, indices = pool(inputs)
            out = unpool([pooled, indices])
            loss = tf.reduce_sum(out * weights)
        grad = tape.gradient(loss, inputs).numpy()
        mask = tf.one_hot(indices, 4).numpy()  # (1, 2, 2, 2, 4): the recorded positions
        expected_mask = mask.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(1, 4, 4, 2)
        # d loss / d x = weight at the recorded position (also on ties: not split between the tied positions)
        np.testing.assert_allclose(grad, expected_mask * weights.numpy(), rtol=1e-6)
        assert (grad != 0).sum() == 8


def test_tile_indices_reuses_switches_channel_modulo():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    _, indices = MaxPoolingWithIndices2D()(x)
    values = rng.normal(size=(1, 2, 2, 6)).astype("float32")
    with pytest.raises(ValueError, match="tile_indices=True"):
        MaxUnpooling2D()([values, indices])
    out = np.asarray(MaxUnpooling2D(tile_indices=True)([values, indices]))
    for c in range(6):
        single = np.asarray(MaxUnpooling2D()([values[..., c:c + 1], indices[..., c % 2:c % 2 + 1]]))
        np.testing.assert_array_equal(out[..., c:c + 1], single)
    with pytest.raises(ValueError, match="channels"):
        MaxUnpooling2D(tile_indices=True)([values[..., :3], indices])


def test_clear_errors_for_bad_shapes():
    with pytest.raises(ValueError, match="multiples of pool_size"):
        MaxPoolingWithIndices2D()(keras.Input((5, 4, 1)))
    with pytest.raises(ValueError, match="height or width"):
        MaxUnpooling2D()([keras.Input((4, 4, 1)), keras.Input((2, 2, 1), dtype="int32")])
    with pytest.raises(ValueError, match="pool_size"):
        MaxPoolingWithIndices2D(0)


def test_symbolic_shapes_and_keras_file_roundtrip(tmp_path):
    inputs = keras.Input((None, None, 3))
    pooled, indices = MaxPoolingWithIndices2D((2, 2), name="pool")(inputs)
    assert indices.dtype == "int32" and pooled.shape == (None, None, None, 3)
    outputs = MaxUnpooling2D((2, 2), tile_indices=True, name="unpool")([pooled, indices])
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(4).normal(size=(2, 8, 6, 3)).astype("float32")
    expected = np.asarray(model(x))

    path = tmp_path / "pool_unpool.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # safe mode, no custom_objects: both layers are registered
    np.testing.assert_array_equal(np.asarray(restored(x)), expected)
    assert restored.get_layer("unpool").get_config()["tile_indices"] is True
    assert tuple(restored.get_layer("pool").get_config()["pool_size"]) == (2, 2)
    clone = MaxUnpooling2D.from_config(model.get_layer("unpool").get_config())
    assert clone.pool_size == (2, 2) and clone.tile_indices


_BACKEND_CHECK = textwrap.dedent(
    """
    import numpy as np
    import keras
    from emzoo.layers.max_pool_indices import MaxPoolingWithIndices2D, MaxUnpooling2D
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype("float32")
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = 9.0  # a tie
    inputs = keras.Input((4, 6, 3))
    pooled, indices = MaxPoolingWithIndices2D()(inputs)
    model = keras.Model(inputs, [pooled, indices, MaxUnpooling2D()([pooled, indices])])
    p, i, u = (np.asarray(keras.ops.convert_to_numpy(t)) for t in model(x))
    np.save(__import__("sys").argv[1], np.concatenate([p.ravel(), i.ravel(), u.ravel()]))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_results_on_other_backends(backend, tmp_path):
    """The layers use keras.ops only, so JAX and PyTorch give TensorFlow's result bit for bit."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    out = tmp_path / f"{backend}.npy"
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", _BACKEND_CHECK, str(out)], check=True, env=env, timeout=120)

    x = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype("float32")
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = 9.0
    pooled, indices = MaxPoolingWithIndices2D()(x)
    unpooled = MaxUnpooling2D()([pooled, indices])
    expected = np.concatenate([np.asarray(t, "float32").ravel() for t in (pooled, indices, unpooled)])
    np.testing.assert_array_equal(np.load(out), expected)
