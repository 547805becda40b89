"""Validation helpers: precise BatchNorm statistics, free-size copies, pooled scores, the batch F1 metric."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import emzoo
from emzoo.training.evaluate import PixelF1, at_input_shape, predict_whole, recalibrate_batchnorm, score


def test_recalibrated_batchnorm_holds_the_mean_of_the_batch_statistics():
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, size=(3, 4, 4, 2)).astype("float32") for i in range(5)]
    assert recalibrate_batchnorm(model, batches) == 1
    bn = model.get_layer("bn")
    want_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    want_var = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(np.asarray(bn.moving_mean), want_mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), want_var, rtol=1e-4)
    assert bn.momentum == 0.99  # restored
    bn.trainable = False
    assert recalibrate_batchnorm(model, batches) == 0  # frozen layers keep their statistics


def test_free_size_copy_has_the_same_weights_and_no_optimizer():
    model = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    model.compile(optimizer="adam", loss="mse")
    free = at_input_shape(model, (None, None, 1))
    assert free.input_shape == (None, None, None, 1) and not free.compiled
    x = np.random.default_rng(0).normal(size=(2, 48, 64)).astype("float32")
    probs = predict_whole(free, x, mode="2d")
    assert probs.shape == (2, 48, 64, 1)
    np.testing.assert_allclose(probs[:, :32, :32], np.asarray(free.predict(x[:, :48, :64, None], verbose=0))[:, :32, :32],
                               atol=1e-5)
    assert at_input_shape(model, (32, 32, 1)) is model


def test_score_is_pooled_and_per_class():
    labels = np.array([[0, 1, 2, 2]])
    probs = np.array([[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]]])
    out = score(labels, probs)
    assert out["f1"] == 1.0  # foreground vs background is right everywhere
    assert out["f1_class1"] == pytest.approx(2 / 3) and out["f1_class2"] == pytest.approx(2 / 3)
    masked = score(labels, probs, mask=np.array([[1, 1, 1, 0]]))
    assert masked["f1_class2"] == 1.0


def test_pixel_f1_metric_ignores_masked_pixels():
    metric = PixelF1(weighted=True)
    y = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]], "float32")  # labels, weight
    metric.update_state(y, np.array([[0.9], [0.8], [0.1]], "float32"))
    assert float(metric.result()) == pytest.approx(2 / 3)  # tp 1, fp 1, the missed third pixel is masked
