"""The registry-driven suite (timm style): every entry builds, counts as documented, runs and round-trips."""

from __future__ import annotations

import numpy as np
import pytest

import emzoo
from emzoo.flops import count_flops
from emzoo.registry import get_entry
from tests.models import fingerprints

ENTRIES = emzoo.list_models()


def _inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1, *model.input_shape[1:])).astype("float32")


def _outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("name", ENTRIES)
def test_params_and_flops_match_documentation(name):
    """Params exactly as documented at the reference input; GFLOPs within 0.05 % (the documented value is rounded)."""
    meta = get_entry(name).info
    model = emzoo.build(name)
    assert model.count_params() == meta.params
    if meta.trainable_params is not None:
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == meta.trainable_params
    assert tuple(model.input_shape[1:]) == meta.input_shape
    report = count_flops(model) if meta.flops_input[1:] == meta.input_shape else count_flops(
        name, input_shape=meta.flops_input[1:])
    assert report.gflops == pytest.approx(meta.gflops, rel=5e-4, abs=0.006)


@pytest.mark.parametrize("name", ENTRIES)
def test_forward_roundtrip_and_fingerprint(name, tmp_path):
    import keras

    meta = get_entry(name).info
    model = emzoo.build(name, input_shape=meta.test_input_shape)
    x = _inputs(model)
    outs = _outputs(model, x)
    for out in outs:
        assert np.isfinite(out).all()
        assert out.shape[-1] == meta.num_classes
    if meta.num_classes == 1:
        assert ((outs[0] >= 0) & (outs[0] <= 1)).all()
    else:
        np.testing.assert_allclose(outs[0].sum(-1), 1.0, rtol=1e-4)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # safe_mode on, no custom_objects: layers must be registered
    for a, b in zip(outs, _outputs(restored, x), strict=True):
        np.testing.assert_array_equal(a, b)

    pinned = fingerprints.load()
    assert name in pinned, f"no fingerprint for {name}: run `python -m tests.models.fingerprints {name}`"
    assert fingerprints.fingerprint(model) == pinned[name], (
        f"{name}'s layer classes/names/weight shapes changed; published .weights.h5 files would no longer load"
    )


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="emnet_v2_4x"):
        emzoo.build("emnet_v2_4")
    with pytest.raises(KeyError, match="emzoo list"):
        emzoo.info("no_such_net")


@pytest.mark.parametrize(
    "shape, message",
    [((100, 100, 1), "multiple of"), ((64, 64), "axes"), ((64, 64, 0), "channel")],
)
def test_bad_input_shape_is_a_clear_error(shape, message):
    with pytest.raises(ValueError, match=message):
        emzoo.build("emnet_v1_bn", input_shape=shape)


def test_list_models_pattern():
    assert emzoo.list_models("emnet_v2*") == ["emnet_v2", "emnet_v2_2x", "emnet_v2_4x"]
