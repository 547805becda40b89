"""apply_squeeze_excite: parameter count, formula, 2D and 3D."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from emzoo.blocks.squeeze_excite import apply_squeeze_excite
from emzoo.flops import count_flops


@pytest.mark.parametrize("spatial", [(6, 6), (4, 6, 6)])
def test_params_flops_and_formula(spatial):
    inputs = keras.Input((*spatial, 48))
    model = keras.Model(inputs, apply_squeeze_excite(inputs, 16, name="se"))
    assert model.count_params() == 2 * 48 * 3
    assert count_flops(model).macs == 2 * 48 * 3
    x = np.random.default_rng(0).normal(size=(2, *spatial, 48)).astype("float32")
    w1, w2 = (model.get_layer(n).get_weights()[0] for n in ("se_reduce", "se_expand"))
    pooled = x.mean(axis=tuple(range(1, len(spatial) + 1)))
    gate = 1 / (1 + np.exp(-(np.maximum(pooled @ w1, 0) @ w2)))
    expected = x * gate.reshape(2, *([1] * len(spatial)), 48)
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-4, atol=1e-5)


def test_bad_ratio():
    with pytest.raises(ValueError, match="ratio must be >= 1"):
        apply_squeeze_excite(keras.Input((4, 4, 8)), 0)
