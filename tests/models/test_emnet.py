"""EM-net family: stage subtotals, layer counts, dropout positions and wiring against ARCHITECTURES.md §3."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import emzoo
from emzoo.layers import TLU
from emzoo.models.emnet import (
    Branch,
    EmnetSpec,
    Unit,
    apply_unit_a3,
    apply_unit_d3,
    apply_unit_m2,
    apply_unit_n4,
    build_emnet,
)

SMALL = (32, 32, 1)  # parameter counts do not depend on the input size

# ARCHITECTURES.md §3.4: L1, L2, L3, L4, bottleneck, decoder + head.
SUBTOTALS = {
    "emnet_v1_bn": (14_640, 75_072, 297_600, 1_185_024, 1_037_568, 2_792_045),
    "emnet_v1_2x": (28_224, 129_888, 517_824, 2_067_840, 1_477_440, 2_792_045),
    "emnet_v1_4x": (111_744, 517_824, 2_067_840, 8_264_448, 5_904_000, 11_152_589),
    "emnet_v1_bn_2x": (19_584, 84_960, 335_808, 1_335_168, 2_370_048, 2_662_509),
    "emnet_v2": (37_728, 167_040, 665_856, 2_658_816, 1_258_368, 2_792_045),
    "emnet_v2_2x": (88_704, 388_800, 1_551_744, 6_200_064, 2_809_152, 3_837_549),
    "emnet_v2_4x": (47_040, 332_544, 1_328_640, 5_311_488, 18_876_416, 7_934_925),
}
STAGES = (("enc1_",), ("enc2_",), ("enc3_",), ("enc4_",), ("bottleneck_",), ("dec", "head_"))

# §3.4: (convs, TLUs, BNs, TLU parameters).
LAYER_COUNTS = {
    "emnet_v1_bn": (50, 36, 49, 4_416),
    "emnet_v1_2x": (55, 41, 13, 6_240),
    "emnet_v1_4x": (55, 41, 13, 12_480),
    "emnet_v1_bn_2x": (74, 60, 73, 7_392),
    "emnet_v2": (60, 46, 19, 8_064),
    "emnet_v2_2x": (60, 46, 19, 12_096),
    "emnet_v2_4x": (28, 12, 13, 3_840),
}

# §3.4 decoder channel check, deepest level first: (up-conv output width, skip width).
CONCAT_WIDTHS = {
    "emnet_v1_bn": ((256, 256), (128, 128), (64, 64), (32, 32)),
    "emnet_v1_2x": ((256, 256), (128, 128), (64, 64), (32, 32)),
    "emnet_v2": ((256, 256), (128, 128), (64, 64), (32, 32)),
    "emnet_v1_bn_2x": ((256, 128), (128, 64), (64, 32), (32, 16)),
    "emnet_v2_2x": ((256, 512), (128, 256), (64, 128), (32, 64)),
    "emnet_v2_4x": ((512, 1024), (256, 512), (128, 256), (64, 128)),
}


@pytest.fixture(scope="module")
def models():
    cache: dict[str, keras.Model] = {}

    def get(name: str) -> keras.Model:
        if name not in cache:
            cache[name] = emzoo.build(name, input_shape=SMALL)
        return cache[name]

    return get


def _inputs_of(model: keras.Model, name: str) -> list[str]:
    node = model.get_layer(name)._inbound_nodes[0]
    return [t._keras_history.operation.name for t in node.input_tensors]


def _consumers_of(model: keras.Model, name: str) -> set[str]:
    return {
        layer.name
        for layer in model.layers
        for node in layer._inbound_nodes
        if any(t._keras_history.operation.name == name for t in node.input_tensors)
    }


def test_family_is_registered():
    assert emzoo.list_models("emnet*") == sorted(SUBTOTALS)


@pytest.mark.parametrize("name", sorted(SUBTOTALS))
def test_stage_subtotals(name, models):
    model = models(name)
    by_stage = [
        sum(layer.count_params() for layer in model.layers if layer.name.startswith(prefixes)) for prefixes in STAGES
    ]
    assert tuple(by_stage) == SUBTOTALS[name]
    # Every weighted layer belongs to exactly one stage.
    assert sum(by_stage) == model.count_params()


@pytest.mark.parametrize("name", sorted(LAYER_COUNTS))
def test_layer_counts(name, models):
    model = models(name)
    convs = [lay for lay in model.layers if type(lay) is keras.layers.Conv2D]
    tlus = [lay for lay in model.layers if isinstance(lay, TLU)]
    bns = [lay for lay in model.layers if isinstance(lay, keras.layers.BatchNormalization)]
    assert (len(convs), len(tlus), len(bns), sum(t.count_params() for t in tlus)) == LAYER_COUNTS[name]
    # TLUs only in the encoder and bottleneck; the decoder and head use BN + plain ReLU.
    assert all(t.name.startswith(("enc", "bottleneck_")) for t in tlus)
    assert all(w.shape[:2] == (1, 1) for t in tlus for w in t.weights)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("emnet_v1_bn", {"bottleneck_dropout_in"}),
        ("emnet_v1_2x", {"bottleneck_dropout_in"}),
        ("emnet_v1_4x", {"bottleneck_dropout_in", "bottleneck_dropout_out"}),
        ("emnet_v1_bn_2x", set()),
        ("emnet_v2", set()),
        ("emnet_v2_2x", set()),
        ("emnet_v2_4x", {f"enc{i}_unit1_dropout" for i in range(1, 5)} | {"bottleneck_dropout_out"}),
    ],
)
def test_spatial_dropout_layers(name, expected, models):
    model = models(name)
    dropouts = {lay.name for lay in model.layers if isinstance(lay, keras.layers.SpatialDropout2D)}
    assert dropouts == expected
    assert all(model.get_layer(d).rate == 0.5 for d in dropouts)
    assert not any(type(lay) is keras.layers.Dropout for lay in model.layers)


def test_v1_4x_dropout_positions(models):
    model = models("emnet_v1_4x")
    # After pool 4, feeding both bottleneck branches.
    assert _inputs_of(model, "bottleneck_dropout_in") == ["enc4_pool"]
    assert _consumers_of(model, "bottleneck_dropout_in") == {
        "bottleneck_branch1_unit1_conv1", "bottleneck_branch2_unit1_conv1"}
    assert _consumers_of(model, "enc4_pool") == {"bottleneck_dropout_in"}
    # After the bottleneck concat (first branch first), feeding the deepest decoder level.
    assert _inputs_of(model, "bottleneck_concat") == ["bottleneck_branch1_unit2_concat", "bottleneck_branch2_unit2_concat"]
    assert _inputs_of(model, "bottleneck_dropout_out") == ["bottleneck_concat"]
    assert _consumers_of(model, "bottleneck_dropout_out") == {"dec4_up"}
    # The skips are not dropped: unit B (N4) goes straight into the decoder.
    assert _inputs_of(model, "dec4_concat") == ["dec4_upconv_act", "enc4_unit2_concat"]


def test_v2_4x_dropout_positions(models):
    model = models("emnet_v2_4x")
    for level in range(1, 5):
        sd = f"enc{level}_unit1_dropout"
        assert _inputs_of(model, sd) == [f"enc{level}_unit1_concat2"]
        # Quirk kept (§3.6): the skip is the spatially-dropped tensor, and so is the pool input.
        assert _consumers_of(model, sd) == {f"enc{level}_pool", f"dec{level}_concat"}
    assert _inputs_of(model, "bottleneck_dropout_out") == ["bottleneck_branch1_unit1_conv2"]
    assert _consumers_of(model, "bottleneck_dropout_out") == {"dec4_up"}
    assert model.get_layer("bottleneck_branch1_unit1_conv2").output.shape[-1] == 1024


@pytest.mark.parametrize("name", sorted(CONCAT_WIDTHS))
def test_decoder_concat_is_upsampled_then_skip(name, models):
    model = models(name)
    for level, widths in zip(range(4, 0, -1), CONCAT_WIDTHS[name], strict=True):
        concat = model.get_layer(f"dec{level}_concat")
        first, second = _inputs_of(model, concat.name)
        assert first == f"dec{level}_upconv_act"
        assert second.startswith(f"enc{level}_")
        tensors = concat._inbound_nodes[0].input_tensors
        assert tuple(t.shape[-1] for t in tensors) == widths


@pytest.mark.parametrize(
    "name, pool_input, skip",
    [
        ("emnet_v1_bn", "enc2_concat", "enc2_unit2_concat"),
        ("emnet_v1_bn_2x", "enc2_concat", "enc2_unit4_concat"),
        ("emnet_v2", "enc2_unit2_concat", "enc2_unit2_concat"),
    ],
)
def test_level_outputs(name, pool_input, skip, models):
    model = models(name)
    assert _inputs_of(model, "enc2_pool") == [pool_input]
    assert _inputs_of(model, "dec2_concat")[1] == skip
    if name == "emnet_v1_bn_2x":
        assert _inputs_of(model, "enc2_concat") == ["enc2_unit2_concat", "enc2_unit4_concat"]


def test_initialisers_and_head(models):
    model = models("emnet_v2")
    assert isinstance(model.get_layer("enc1_unit1_conv1").kernel_initializer, keras.initializers.HeNormal)
    assert isinstance(model.get_layer("dec1_upconv").kernel_initializer, keras.initializers.HeNormal)
    assert model.get_layer("dec1_upconv").kernel_size == (2, 2)
    assert isinstance(model.get_layer("head_out").kernel_initializer, keras.initializers.GlorotUniform)
    assert model.get_layer("head_conv").filters == 2
    assert _inputs_of(model, "head_out") == ["head_conv_act"]
    assert model.get_layer("head_out").activation.__name__ == "sigmoid"


def test_multiclass_softmax_and_forward():
    model = emzoo.build("emnet_v2_4x", input_shape=(48, 32, 1), num_classes=3)
    assert model.get_layer("head_out").activation.__name__ == "softmax"
    x = np.random.default_rng(0).normal(size=(2, 48, 32, 1)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 48, 32, 3)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    # Dropout only acts in training mode.
    np.testing.assert_array_equal(y, np.asarray(model(x, training=False)))
    assert not np.allclose(y, np.asarray(model(x, training=True)))


@pytest.mark.parametrize(
    "unit, kwargs, channels, convs",
    [(apply_unit_a3, {}, 16, 3), (apply_unit_a3, {"batch_norm": True}, 16, 3), (apply_unit_n4, {}, 16, 4),
     (apply_unit_d3, {}, 32, 3), (apply_unit_m2, {}, 8, 2)],
)
def test_unit_widths(unit, kwargs, channels, convs):
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, unit(inputs, 8, name="u", **kwargs))
    assert model.output_shape == (None, 16, 16, channels)
    assert sum(type(lay) is keras.layers.Conv2D for lay in model.layers) == convs
    assert any(isinstance(lay, keras.layers.BatchNormalization) for lay in model.layers) == bool(kwargs)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of"):
        emzoo.build("emnet_v2", input_shape=(40, 40, 1))
    spec = EmnetSpec(widths=(8, 16), level=Branch((Unit("a3"),)), skip=0, bottleneck_width=16,
                     bottleneck=(Branch((Unit("m2"),)),), decoder=((16, 16),))
    with pytest.raises(ValueError, match="decoder levels"):
        build_emnet(spec, input_shape=(16, 16, 1))
    bad_unit = EmnetSpec(widths=(8,), level=Branch((Unit("x9"),)), skip=0, bottleneck_width=16,
                         bottleneck=(Branch((Unit("m2"),)),), decoder=((8, 8),))
    with pytest.raises(ValueError, match="unknown EM-net unit kind 'x9'"):
        build_emnet(bad_unit, input_shape=(16, 16, 1))
