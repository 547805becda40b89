"""Test-time augmentation: the group is right, every transform is undone, an equivariant model is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.inference import predict
from emzoo.inference.tta import Transform, tta_transforms
from tests.inference import toys

RNG = np.random.default_rng(0)


def test_group_sizes_and_distinct_elements():
    x = RNG.random((1, 3, 4, 4, 1))
    for mode, kind, n in [("flips", "2d", 4), ("flips", "3d", 8), ("d4", "2d", 8), ("d4", "3d", 8),
                          ("d4+z", "3d", 16), ("d4+z", "frames", 16), ("d4+z", "2d", 8), (None, "3d", 1)]:
        transforms = tta_transforms(mode, kind)
        assert len(transforms) == n
        images = {t.forward(x).tobytes() for t in transforms}
        assert len(images) == n  # all distinct on a generic input: z is never swapped with y or x
    with pytest.raises(ValueError, match="tta must be one of"):
        tta_transforms("d8", "2d")


def test_inverse_undoes_forward():
    x = RNG.random((2, 3, 5, 5, 2))
    for t in tta_transforms("d4+z", "3d"):
        np.testing.assert_array_equal(t.inverse(t.forward(x)), x)
    assert Transform(rot=1, flip_x=True).name == "rot90+flip_x"


@pytest.mark.parametrize("ndim, mode", [(2, "d4"), (2, "flips"), (3, "d4+z")])
def test_equivariant_model_is_unchanged_by_tta(ndim, mode):
    model = toys.symmetric_net(ndim)
    shape = (40, 36) if ndim == 2 else (10, 20, 18)
    image = RNG.random(shape).astype(np.float32)
    plain = predict(model, image, blend="none", progress=False)
    augmented = predict(model, image, blend="none", tta=mode, progress=False)
    assert np.abs(augmented - plain).max() <= 1e-6


def test_tta_averages_the_transformed_predictions():
    model = toys.tiny_unet()
    image = RNG.random((48, 48)).astype(np.float32)
    # A halo that is a multiple of the divisor (4) pads both sides alike, so the pooling grid of a transformed
    # window is the grid of the transformed image (the U-Net is only equivariant to shifts by multiples of 4).
    augmented = predict(model, image, tile=200, halo=28, blend="none", tta="d4", progress=False)
    manual = np.zeros_like(augmented)
    for r in range(4):
        for f in (False, True):
            variant = np.rot90(image[:, ::-1] if f else image, r)
            pred = predict(model, np.ascontiguousarray(variant), tile=200, halo=28, blend="none", progress=False)
            back = np.rot90(pred, -r, axes=(0, 1))
            manual += back[:, ::-1] if f else back
    np.testing.assert_allclose(augmented, manual / 8, atol=1e-5)
    assert np.abs(augmented - predict(model, image, tile=200, blend="none", progress=False)).max() > 1e-4
