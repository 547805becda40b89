"""One spelling of the model kind (issue 13): ``emzoo.registry.model_kind`` and ``model_kind_of``."""

from __future__ import annotations

import keras
import pytest

from emzoo.registry import MODEL_KINDS, list_models, model_kind, model_kind_of


@pytest.mark.parametrize(("spelling", "kind"), [
    ("2D", "2D"), ("2d", "2D"), ("3D->2D", "3D->2D"), ("multiframe", "3D->2D"), ("frames", "3D->2D"),
    ("3d", "3D"), ("3D", "3D"),
])
def test_every_spelling_maps_to_the_registry_one(spelling, kind):
    assert model_kind(spelling) == kind


def test_unknown_spelling_lists_the_kinds():
    with pytest.raises(ValueError, match="use one of 2D, 3D->2D, 3D"):
        model_kind("4d")


def test_registered_entries_use_the_registry_spelling():
    from emzoo.registry import entry_info

    assert {entry_info(n).dims for n in list_models()} <= set(MODEL_KINDS)


@pytest.mark.parametrize(("in_shape", "pool", "kind"), [
    ((8, 8, 1), None, "2D"), ((3, 8, 8, 1), "frames", "3D->2D"), ((4, 8, 8, 1), None, "3D"),
])
def test_kind_of_a_model_from_its_ranks(in_shape, pool, kind):
    x = keras.Input(in_shape)
    y = keras.layers.Conv2D(1, 1)(x) if len(in_shape) == 3 else keras.layers.Conv3D(1, 1)(x)
    if pool:
        y = keras.layers.Lambda(lambda t: t[:, 1])(y)
    assert model_kind_of(keras.Model(x, y)) == kind
