"""``emzoo.predict`` refuses what it cannot answer: an ambiguous ``(Y, X, 3)`` array, NaN/Inf input, a model
predicting NaN; and it raises no DeprecationWarning on the way."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from emzoo.inference import predict
from emzoo.inference.predict import make_runner
from emzoo.io import Volume
from tests.inference import toys


@pytest.fixture(scope="module")
def unet():
    return toys.tiny_unet()


def test_rgb_like_array_needs_axes(unet):
    rgb = np.zeros((24, 20, 3), np.float32)
    with pytest.raises(ValueError, match=r"ambiguous input of shape \(24, 20, 3\).*Pass axes='YXC'.*axes='ZYX'"):
        predict(unet, rgb, progress=False)
    assert predict(unet, rgb, axes="ZYX", progress=False).shape == (24, 20, 3, 1)
    with pytest.raises(ValueError, match="1 input channel.*has 3; convert it to one channel"):
        predict(unet, rgb, axes="YXC", progress=False)
    with pytest.raises(ValueError, match="axes='YX' names 2 axes but the array has shape"):
        predict(unet, rgb, axes="YX", progress=False)
    with pytest.raises(ValueError, match="contradicts the Volume's own axes 'ZYX'"):
        predict(unet, Volume(rgb, None, "ZYX", "memory"), axes="YXC", progress=False)
    assert predict(unet, Volume(rgb, None, "ZYX", "memory"), progress=False).shape == (24, 20, 3, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_refused_with_its_count(unet, bad):
    image = np.zeros((16, 16), np.float32)
    image[2, 3] = image[5, 5] = bad
    with pytest.raises(ValueError, match=r"input holds 2 NaN/Inf value\(s\)"):
        predict(unet, image, progress=False)


def test_nan_output_is_never_returned():
    model = toys.tiny_unet(seed=1)
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    with pytest.raises(ValueError, match=r"the model predicted 256 NaN/Inf value\(s\); nothing was written"):
        predict(model, np.zeros((16, 16), np.float32), progress=False)


def test_make_runner_uses_entry_info_without_deprecation(unet):
    object.__setattr__(unet, "emzoo_metadata", {"entry": "unet"})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            runner = make_runner(unet)
    finally:
        object.__setattr__(unet, "emzoo_metadata", {})
    assert runner.divisor[-1] >= 1
