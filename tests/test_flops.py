"""emzoo.flops: the layer rules on hand-computed cases, and the whole counter against TensorFlow's profiler.

The profiler check freezes the model's inference graph and lets ``tf.compat.v1.profiler`` count it. The profiler also
counts BiasAdd, BN, activations, pooling and so on; only the op types that carry the MACs of convolutions, transposed
convolutions and dense layers are summed (``MAC_OP_TYPES``). Run with ``-s`` to see the per-model ratios.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import emzoo
from emzoo.flops import count_flops, layer_macs

# Ops whose profiler statistic is 2 x MACs: Conv2D/Conv3D, Conv2DBackpropInput (= Conv2DTranspose), the depthwise
# half of separable convs, and (Batch)MatMul (= Dense, also on rank > 2 inputs).
MAC_OP_TYPES = ("Conv2D", "Conv3D", "Conv2DBackpropInput", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2",
                "BatchMatMulV3")
# Conv3DTranspose: TF registers no flops statistic for Conv3DBackpropInputV2, so each such op is counted through its
# adjoint, the forward Conv3D from the transposed conv's output back to its input (same filter, strides, padding).
ADJOINT_OP_TYPES = ("Conv3DBackpropInputV2",)
TOLERANCE = 0.01


# ---------------------------------------------------------------------------------------------------------------------
# layer_macs on hand-computed cases


class _CustomMacs(keras.layers.Layer):
    def count_macs(self, input_shape, output_shape):
        return 7 * input_shape[-1]

    def call(self, x):
        return x


@pytest.mark.parametrize(
    "layer, input_shape, expected",
    [
        # output pixels * kernel taps * C_in * C_out
        (keras.layers.Conv2D(4, 3, padding="same"), (1, 8, 8, 1), 8 * 8 * 9 * 1 * 4),
        (keras.layers.Conv2D(4, 3, padding="valid"), (1, 8, 8, 2), 6 * 6 * 9 * 2 * 4),
        (keras.layers.Conv2D(4, 3, strides=2, padding="same"), (1, 8, 8, 2), 4 * 4 * 9 * 2 * 4),
        (keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same"), (1, 8, 8, 2), 8 * 8 * 9 * 2 * 4),
        (keras.layers.Conv2D(6, 3, groups=2, padding="same"), (1, 4, 4, 4), 4 * 4 * 9 * (4 // 2) * 6),
        (keras.layers.Conv1D(3, 5, padding="same"), (1, 10, 2), 10 * 5 * 2 * 3),
        (keras.layers.Conv3D(2, (1, 3, 3), padding="same"), (1, 2, 4, 4, 3), 2 * 4 * 4 * 9 * 3 * 2),
        (keras.layers.Conv3D(2, 3, strides=(1, 2, 2), padding="same"), (1, 2, 4, 4, 3), 2 * 2 * 2 * 27 * 3 * 2),
        # transposed: input pixels * kernel taps * C_in * C_out (the output grid would give 4x as much for 2x2/2)
        (keras.layers.Conv2DTranspose(3, 2, strides=2), (1, 4, 4, 5), 4 * 4 * 4 * 5 * 3),
        (keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same"), (1, 4, 4, 5), 4 * 4 * 9 * 5 * 3),
        (keras.layers.Conv3DTranspose(2, 2, strides=2), (1, 2, 2, 2, 3), 2 * 2 * 2 * 8 * 3 * 2),
        # dense: leading positions * C_in * C_out
        (keras.layers.Dense(5), (1, 7), 7 * 5),
        (keras.layers.Dense(5, use_bias=False), (1, 3, 4, 7), 3 * 4 * 7 * 5),
        # depthwise: output elements * taps; separable: depthwise + pointwise
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (1, 4, 4, 3), 4 * 4 * 6 * 9),
        (keras.layers.SeparableConv2D(5, 3, padding="same"), (1, 4, 4, 3), 4 * 4 * 9 * 3 + 4 * 4 * 3 * 5),
        # not counted
        (keras.layers.MaxPooling2D(2), (1, 4, 4, 3), 0),
        (keras.layers.BatchNormalization(), (1, 4, 4, 3), 0),
        (keras.layers.UpSampling2D(2), (1, 4, 4, 3), 0),
        # a custom layer's own count_macs wins
        (_CustomMacs(), (1, 4, 4, 3), 21),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, keras.layers.Layer) else None,
)
def test_layer_macs_hand_computed(layer, input_shape, expected):
    output = layer(keras.Input(input_shape[1:]))
    assert layer_macs(layer, input_shape, (1, *output.shape[1:])) == expected


def test_count_flops_counts_every_call_of_a_shared_layer_and_reports_rows():
    x = keras.Input((8, 8, 2))
    shared = keras.layers.Conv2D(2, 3, padding="same", name="shared")
    y = keras.layers.Dense(3, name="head")(shared(shared(x)))
    report = count_flops(keras.Model(x, y))
    per_call = 8 * 8 * 9 * 2 * 2
    assert [(r.name, r.macs) for r in report.layers] == [("shared", per_call), ("shared", per_call),
                                                          ("head", 8 * 8 * 2 * 3)]
    assert report.macs == 2 * per_call + 8 * 8 * 2 * 3
    assert report.flops == 2 * report.macs and report.gflops == report.flops / 1e9
    assert report.input_shape == (1, 8, 8, 2)


def test_count_flops_rebuilds_at_a_new_input_shape_and_scales_with_pixels():
    x = keras.Input((16, 16, 1))
    y = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.MaxPooling2D(2)(x))
    model = keras.Model(x, keras.layers.Conv2DTranspose(2, 2, strides=2)(y))
    small, large = count_flops(model), count_flops(model, input_shape=(64, 64, 1))
    assert large.macs == 16 * small.macs
    assert large.input_shape == (1, 64, 64, 1)


def test_count_flops_by_name_matches_registry_at_reference_shape_scaled():
    """Fully convolutional: MACs scale exactly with the pixel count, so 1/64 of the documented 512x512 figure."""
    report = count_flops("segnet", input_shape=(64, 64, 1))
    assert report.gflops * 64 == pytest.approx(emzoo.info("segnet").gflops, abs=0.006)


def test_count_flops_needs_static_shapes():
    x = keras.Input((None, None, 1))
    model = keras.Model(x, keras.layers.Conv2D(2, 3)(x))
    with pytest.raises(ValueError, match="fixed input_shape"):
        count_flops(model)
    assert count_flops(model, input_shape=(8, 8, 1)).macs == 6 * 6 * 9 * 2


# The counter walks the model's own graph: a layer shared with another model, or a sub-model called twice or at
# another shape, is counted once per call in *this* model.


def test_layer_shared_with_another_model_is_not_counted_twice():
    conv = keras.layers.Conv2D(4, 3, padding="same")
    a, b = keras.Input((8, 8, 1)), keras.Input((16, 16, 1))
    model = keras.Model(a, conv(a))
    keras.Model(b, conv(b))  # a second graph that reuses the layer
    assert count_flops(model).macs == 8 * 8 * 9 * 4


def test_nested_model_called_twice_is_counted_twice():
    inner_in = keras.Input((8, 8, 1))
    inner = keras.Model(inner_in, keras.layers.Conv2D(1, 1)(inner_in))
    x = keras.Input((8, 8, 1))
    model = keras.Model(x, inner(inner(x)))
    assert count_flops(model).macs == 2 * 8 * 8


def test_nested_fully_convolutional_model_is_counted_at_its_call_shape():
    inner_in = keras.Input((None, None, 1))
    inner = keras.Model(inner_in, keras.layers.Conv2D(2, 1)(inner_in))
    x = keras.Input((8, 8, 1))
    assert count_flops(keras.Model(x, inner(x))).macs == 8 * 8 * 2


# ---------------------------------------------------------------------------------------------------------------------
# Cross-check against the TensorFlow profiler on frozen graphs


def _frozen_graph(model: keras.Model) -> tf.Graph:
    spec = tf.TensorSpec((1, *model.input_shape[1:]), model.inputs[0].dtype)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def _profiler_flops_by_type(graph: tf.Graph) -> Counter:
    """Profiler FLOPs summed per op type (the 'scope' view has one node per op; map its name back to the op)."""
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    root = tf.compat.v1.profiler.profile(graph, options=options, cmd="scope")
    totals: Counter = Counter()
    stack = list(root.children)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.float_ops:
            totals[graph.get_operation_by_name(node.name).type] += node.float_ops
    return totals


def _adjoint_conv3d_flops(op: tf.Operation) -> int:
    """Profiler FLOPs of the forward Conv3D whose input gradient ``op`` (a Conv3DBackpropInputV2) computes."""
    assert list(op.get_attr("dilations")) == [1, 1, 1, 1, 1]
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, op.outputs[0].shape)  # the transposed conv's output
        kernel = tf.compat.v1.placeholder(tf.float32, op.inputs[1].shape)
        forward = tf.nn.conv3d(image, kernel, list(op.get_attr("strides")), op.get_attr("padding").decode())
    assert forward.shape == op.inputs[2].shape  # it maps back onto the transposed conv's input: a true adjoint
    return _profiler_flops_by_type(graph)["Conv3D"]


def _profiler_mac_flops(model: keras.Model) -> tuple[int, dict[str, int]]:
    graph = _frozen_graph(model)
    present = {op.type for op in graph.get_operations()}
    # The profiler does not look into function calls (Keras wraps e.g. grouped convs on CPU in a jit-compiled one).
    assert not present & {"PartitionedCall", "StatefulPartitionedCall"}, "the frozen graph hides ops in a call"
    unhandled = {t for t in present if ("Conv" in t or "MatMul" in t or "Einsum" in t)} - set(MAC_OP_TYPES) - set(
        ADJOINT_OP_TYPES)
    assert not unhandled, f"op types with MACs that the check does not sum: {sorted(unhandled)}"
    by_type = _profiler_flops_by_type(graph)
    counted = {t: int(by_type[t]) for t in MAC_OP_TYPES if by_type[t]}
    adjoint = sum(_adjoint_conv3d_flops(op) for op in graph.get_operations() if op.type in ADJOINT_OP_TYPES)
    if adjoint:
        counted["Conv3DBackpropInputV2 (adjoint Conv3D)"] = int(adjoint)
    return sum(counted.values()), counted


def _mixed_model() -> keras.Model:
    """Every MAC-bearing layer kind emzoo uses (and a few it may), with strides, dilation and valid padding."""
    x = keras.Input((4, 8, 8, 2))
    y = keras.layers.Conv3D(6, (1, 3, 3), padding="same", name="c3d_2d_kernel")(x)
    y = keras.layers.Conv3D(6, 3, strides=2, padding="same", name="c3d_strided")(y)
    y = keras.layers.Conv3DTranspose(4, 3, strides=2, padding="same", name="t3d_same")(y)
    y = keras.layers.Conv3DTranspose(4, (1, 2, 2), strides=(1, 2, 2), name="t3d_valid")(y)
    y = keras.layers.Conv3D(3, (4, 1, 1), padding="valid", name="c3d_collapse_z")(y)
    y = keras.layers.Reshape((16, 16, 3), name="to_2d")(y)
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c2d_strided")(y)
    y = keras.layers.Conv2D(8, 3, dilation_rate=2, padding="same", name="c2d_dilated")(y)
    # (no grouped conv: on CPU Keras runs it inside a jit-compiled function that the profiler cannot see into; its
    # rule is checked by hand in test_layer_macs_hand_computed)
    y = keras.layers.Conv2D(8, 3, padding="valid", name="c2d_valid")(y)
    y = keras.layers.SeparableConv2D(6, 3, padding="same", name="separable")(y)
    y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(y)
    y = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="t2d_same")(y)
    y = keras.layers.Conv2DTranspose(4, 2, strides=2, name="t2d_valid")(y)
    y = keras.layers.Dense(6, name="dense_per_pixel")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    y = keras.layers.Dense(3, name="dense")(y)
    return keras.Model(x, y, name="mixed")


@pytest.mark.parametrize(
    "name, build",
    [
        ("unet@64", lambda: emzoo.build("unet", input_shape=(64, 64, 1))),
        ("segnet@64", lambda: emzoo.build("segnet", input_shape=(64, 64, 1))),
        ("segnet_indices@64", lambda: emzoo.build("segnet_indices", input_shape=(64, 64, 1))),
        ("resnet50_unet@64", lambda: emzoo.build("resnet50_unet", input_shape=(64, 64, 1))),
        # a 3D entry: Conv3D, and Conv3DTranspose through its adjoint
        ("unet3d_fb@16", lambda: emzoo.build("unet3d_fb", input_shape=(16, 16, 16, 1))),
        ("mixed 2D/3D", _mixed_model),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_count_flops_agrees_with_tensorflow_profiler(name, build):
    model = build()
    analytic = count_flops(model).flops
    profiled, by_type = _profiler_mac_flops(model)
    ratio = profiled / analytic
    print(f"\n[flops] {name}: profiler {profiled:,} / analytic {analytic:,} = {ratio:.6f}  {by_type}")
    assert analytic > 0
    assert ratio == pytest.approx(1.0, abs=TOLERANCE)


@pytest.mark.parametrize("strides, dilation", [(2, 2), (4, 2), (4, 4), (8, 8)])
def test_dilated_transpose_count_macs_agrees_with_profiler(strides, dilation):
    """The CDeep3M heads' DilatedConv2DTranspose counts itself (``count_macs``, native MACs); the profiler agrees.

    The heads' kernel is 2 x stride, as here. TensorFlow runs a conv with dilation > 1 as SpaceToBatchND + conv on a
    block-padded input, and the profiler counts that padding, so the check uses dilations that divide the stride:
    each polyphase sub-convolution then has dilation 1 and the profiler counts exactly the sum the layer computes.
    The rule (input pixels x k² x C_in x C_out) does not depend on the dilation.
    """
    from emzoo.layers.dilated_conv_transpose import DilatedConv2DTranspose

    x = keras.Input((6, 5, 3))
    layer = DilatedConv2DTranspose(2, 2 * strides, strides=strides, dilation_rate=dilation, padding="same")
    model = keras.Model(x, layer(x))
    profiled, by_type = _profiler_mac_flops(model)
    assert count_flops(model).flops == profiled == 2 * 6 * 5 * (2 * strides) ** 2 * 3 * 2
    assert set(by_type) == {"Conv2D"}


def test_profiler_check_is_not_vacuous():
    """The profiler sum really depends on the convs: dropping one changes it by that conv's FLOPs exactly."""
    x = keras.Input((8, 8, 1))
    one = keras.Model(x, keras.layers.Conv2D(4, 3, padding="same")(x))
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    two = keras.Model(x, keras.layers.Conv2D(2, 1)(y))
    profiled_one, _ = _profiler_mac_flops(one)
    profiled_two, _ = _profiler_mac_flops(two)
    assert profiled_one == 2 * 8 * 8 * 9 * 4
    assert profiled_two - profiled_one == 2 * 8 * 8 * 4 * 2
    np.testing.assert_equal(count_flops(two).flops, profiled_two)
