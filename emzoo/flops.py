"""Analytic FLOP counting for Keras models.

What is counted: multiply-accumulates (MACs) of convolutions (any rank, any dilation), transposed convolutions and
dense layers, plus any custom layer that defines ``count_macs(input_shape, output_shape) -> int``. FLOPs are
``2 x MACs``. Not counted: biases, batch normalisation, activations, pooling, additions, concatenations and other
element-wise work (the convention of ``ARCHITECTURES.md`` §0, under which these are < 1 % of the total for every entry).

Rules, per call of a layer (shared layers are counted once per call):

- convolution: ``prod(output spatial) * prod(kernel) * (C_in / groups) * C_out``;
- transposed convolution: ``prod(input spatial) * prod(kernel) * C_in * C_out`` (every input pixel scatters a full
  kernel; counting on the output grid would over-count by ``stride**ndim``);
- dense: ``prod(leading axes) * C_in * C_out``.

The counter is cross-checked against the TensorFlow profiler on a frozen graph in ``tests/test_flops.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import keras

from emzoo._reshape import rebuild_from_config

__all__ = ["FlopsReport", "LayerFlops", "count_flops", "layer_macs"]


@dataclass(frozen=True)
class LayerFlops:
    """MACs of one call of one layer."""

    name: str
    class_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int


@dataclass(frozen=True)
class FlopsReport:
    """Per-layer MACs of a model at a fixed input shape.

    Attributes
    ----------
    input_shape : tuple of int
        The input shape counted at, batch axis included.
    layers : list of LayerFlops
        One row per counted layer call (layers with zero MACs are omitted).
    """

    input_shape: tuple[int, ...]
    layers: list[LayerFlops] = field(default_factory=list)

    @property
    def macs(self) -> int:
        """Total multiply-accumulates."""
        return sum(r.macs for r in self.layers)

    @property
    def flops(self) -> int:
        """Total FLOPs (2 x MACs)."""
        return 2 * self.macs

    @property
    def gflops(self) -> float:
        """Total GFLOPs (2 x MACs / 1e9)."""
        return self.flops / 1e9


def _static(shape: Any, what: str) -> tuple[int, ...]:
    dims = tuple(shape)
    if any(d is None for d in dims[1:]):
        raise ValueError(
            f"cannot count FLOPs with unknown sizes in the {what} shape {dims}; build the model with a fixed "
            "input_shape or pass input_shape= to count_flops."
        )
    return (1, *dims[1:])


def layer_macs(layer: keras.layers.Layer, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
    """MACs of one call of ``layer`` with the given (batch-1) input and output shapes."""
    custom = getattr(layer, "count_macs", None)
    if callable(custom):
        return int(custom(input_shape, output_shape))
    if isinstance(layer, keras.layers.Dense):
        return math.prod(input_shape[:-1]) * input_shape[-1] * layer.units
    is_transpose = isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
                                      keras.layers.Conv1DTranspose))
    if is_transpose:
        kernel = math.prod(layer.kernel_size)
        return math.prod(input_shape[1:-1]) * kernel * input_shape[-1] * layer.filters
    if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.DepthwiseConv1D)):
        kernel = math.prod(layer.kernel_size)
        return math.prod(output_shape[1:]) * kernel
    if isinstance(layer, (keras.layers.SeparableConv2D, keras.layers.SeparableConv1D)):
        kernel = math.prod(layer.kernel_size)
        depth = math.prod(output_shape[1:-1]) * kernel * input_shape[-1] * layer.depth_multiplier
        point = math.prod(output_shape[1:-1]) * input_shape[-1] * layer.depth_multiplier * layer.filters
        return depth + point
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        kernel = math.prod(layer.kernel_size)
        groups = getattr(layer, "groups", 1) or 1
        return math.prod(output_shape[1:-1]) * kernel * (input_shape[-1] // groups) * layer.filters
    return 0


def _graph_nodes(model: keras.Model) -> list[Any] | None:
    """The nodes of ``model``'s own graph, inputs first (None if the model keeps no graph, e.g. a subclassed model)."""
    graph = getattr(model, "_functional", None) or model  # a built Sequential keeps its graph in ``_functional``
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None:
        return None
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _layer_calls(model: keras.Model) -> Iterator[tuple[keras.layers.Layer, Any, Any]]:
    """Yield (layer, input shape, output shape) for every call in ``model``'s graph, descending into nested models.

    Only the nodes of this model's graph are visited: a layer that was also called to build *another* model has
    inbound nodes from that graph as well, which must not be counted here. A nested model is counted once per call,
    at the shape it was called with (rebuilt from its config when that differs from the shape it was built at).
    """
    nodes = _graph_nodes(model)
    if nodes is None:  # no graph to walk: fall back to every recorded call of every layer
        nodes = [node for layer in model.layers for node in layer._inbound_nodes]
    for node in nodes:
        layer = node.operation
        inputs = node.arguments.keras_tensors if hasattr(node, "arguments") else node.input_tensors
        outputs = node.outputs
        if not inputs or not outputs or isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            call_shape = tuple(inputs[0].shape[1:])
            inner = layer if tuple(layer.inputs[0].shape[1:]) == call_shape else rebuild_from_config(layer, call_shape)
            yield from _layer_calls(inner)
            continue
        yield layer, inputs[0].shape, outputs[0].shape


def count_flops(model: Any, input_shape: tuple[int, ...] | None = None) -> FlopsReport:
    """Count MACs and FLOPs of a Keras model (or a registry entry name) analytically.

    Parameters
    ----------
    model : keras.Model or str
        A built functional model, or an emzoo entry name (built at ``input_shape``).
    input_shape : tuple of int, optional
        Input shape without the batch axis. For a name it defaults to the entry's reference shape; for a model, if
        given, the model is rebuilt from its config at that shape (fully convolutional models only).

    Returns
    -------
    FlopsReport

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((8, 8, 1))
    >>> m = keras.Model(x, keras.layers.Conv2D(4, 3, padding="same")(x))
    >>> count_flops(m).macs  # 8*8 outputs * 9 taps * 1 in * 4 out
    2304
    """
    if isinstance(model, str):
        from emzoo.registry import build

        model = build(model, input_shape=input_shape)
    elif input_shape is not None and tuple(model.input_shape[1:]) != tuple(input_shape):
        model = rebuild_from_config(model, tuple(input_shape))
    in_shape = _static(model.inputs[0].shape, "model input")
    rows = []
    for layer, inp, out in _layer_calls(model):
        macs = layer_macs(layer, _static(inp, f"{layer.name} input"), _static(out, f"{layer.name} output"))
        if macs:
            rows.append(LayerFlops(layer.name, type(layer).__name__, tuple(inp[1:]), tuple(out[1:]), macs))
    return FlopsReport(input_shape=in_shape, layers=rows)
