"""Marks for tests that hold on one Keras backend only (Keras fixes it per process, from KERAS_BACKEND)."""

from __future__ import annotations

import keras
import pytest

BACKEND = keras.backend.backend()

tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason=f"differentiates with tf.GradientTape: TensorFlow backend only (this run: {BACKEND})",
)
jax_only = pytest.mark.skipif(
    BACKEND != "jax", reason="runs in make test's JAX pass (make test-jax)"
)
