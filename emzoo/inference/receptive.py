"""How far an output voxel can see: the receptive-field margin a tile's halo must cover, and the divisor its size needs.

Two methods:

- ``"analytic"`` (the default) walks the Keras layer graph from the input to the first output and tracks, for
  every tensor and spatial axis, its stride ``j`` (input pixels per tensor pixel) and the interval
  ``[q*j + lo, q*j + hi]`` of input pixels its pixel ``q`` can depend on. Convolutions (any kernel, stride,
  dilation, ``same``/``valid``), pooling, up-sampling, transposed convolutions, zero padding, cropping, merges and
  emzoo's custom layers are handled; element-wise layers change nothing. The bound is exact for stride-1 layers
  and conservative (never too small) where a strided ``same`` layer's padding depends on the input size. It is the
  *theoretical* receptive field, so a halo that covers it makes tiled prediction equal whole-image prediction.
- ``"probe"`` measures it: a random input is predicted twice, the second time with the centre voxel changed, and
  the extent of the output that changed is the margin. It needs no knowledge of the layers but is a lower bound
  (a dead ReLU path, or one pooling alignment of the several possible, can hide part of the field).

Global pooling (the squeeze-excitation gates of the ``se_*`` nets) sees the whole tile; those channel statistics
are treated as local, so the halo covers the convolutional field only and tiled SE-net predictions can differ
slightly from whole-image ones.

The margin is reported relative to where the tiler places each output voxel: at the same index for ``same``-size
nets, shifted by ``(n_in - n_out) // 2`` for nets whose output is smaller than their input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["receptive_field", "model_divisor", "analyse_graph", "GraphInfo"]

# (j, lo, hi) per spatial axis of a tensor: pixel q depends on input pixels [q*j + lo, q*j + hi].
_Axis = tuple[float, float, float]


@dataclass(frozen=True)
class GraphInfo:
    """What the analytic walk found.

    Attributes
    ----------
    lo, hi : tuple of float
        Dependency interval of output pixel ``q`` along each output spatial axis: input ``[q + lo, q + hi]``.
    divisor : tuple of int
        Per input spatial axis, the least common multiple of every stride reached (tile sides must be multiples).
    dropped_axes : int
        Leading input spatial axes the network removes (1 for multi-frame CDeep3M: z is squeezed away).
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    divisor: tuple[int, ...]
    dropped_axes: int


def _mro_names(op: Any) -> set[str]:
    return {cls.__name__ for cls in type(op).__mro__}


def _tuple(value: Any, n: int) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) == n:
            return tuple(value)
        if len(value) == 1:
            return tuple(value) * n
    return (value,) * n


def _pairs(value: Any, n: int) -> list[tuple[int, int]]:
    """Keras padding/cropping arguments (int, per-axis int, or per-axis pairs) as n (before, after) pairs."""
    if isinstance(value, int):
        return [(value, value)] * n
    out = []
    for v in value:
        out.append((int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1])))
    return out


def _conv(axes: list[_Axis], kernel: Any, strides: Any, dilation: Any, padding: Any) -> list[_Axis]:
    n = len(axes)
    kernel, strides, dilation = _tuple(kernel, n), _tuple(strides, n), _tuple(dilation, n)
    out = []
    for (j, lo, hi), k, s, d in zip(axes, kernel, strides, dilation, strict=True):
        k_eff = int(d) * (int(k) - 1) + 1
        s = int(s)
        if str(padding).lower() == "same":
            # The left pad is (k_eff - s)//2 for sizes divisible by s and up to (k_eff - 1)//2 otherwise.
            pad_min, pad_max = max(k_eff - s, 0) // 2, (k_eff - 1) // 2
        else:
            pad_min = pad_max = 0
        out.append((j * s, lo - pad_max * j, hi + (k_eff - 1 - pad_min) * j))
    return out


def _transpose(axes: list[_Axis], kernel: Any, strides: Any, dilation: Any, crops: list[int]) -> list[_Axis]:
    n = len(axes)
    kernel, strides, dilation = _tuple(kernel, n), _tuple(strides, n), _tuple(dilation, n)
    out = []
    for (j, lo, hi), k, s, d, cb in zip(axes, kernel, strides, dilation, crops, strict=True):
        k_eff = int(d) * (int(k) - 1) + 1
        j2 = j / int(s)
        # Output o (full index o + cb) gathers input i with i*s <= o + cb <= i*s + k_eff - 1.
        out.append((j2, lo + (cb - k_eff + 1) * j2, hi + cb * j2))
    return out


def _upsample(axes: list[_Axis], size: Any, widen: bool = False) -> list[_Axis]:
    out = []
    for (j, lo, hi), u in zip(axes, _tuple(size, len(axes)), strict=True):
        j2 = j / int(u)
        extra = j if widen else 0.0  # bilinear reads one more input pixel on each side
        out.append((j2, lo - (int(u) - 1) * j2 - extra, hi + extra))
    return out


def _shift(axes: list[_Axis], pairs: list[tuple[int, int]], sign: int) -> list[_Axis]:
    return [(j, lo + sign * b * j, hi + sign * b * j) for (j, lo, hi), (b, _) in zip(axes, pairs, strict=True)]


def _merge(inputs: list[list[_Axis]], sizes: tuple[int | None, ...]) -> list[_Axis]:
    ranks = {len(a) for a in inputs}
    if len(ranks) != 1:
        raise NotImplementedError("a merge of tensors with different numbers of spatial axes")
    out = []
    for axis in range(ranks.pop()):
        j0 = inputs[0][axis][0]
        lo, hi = math.inf, -math.inf
        for a in inputs:
            j, lo_i, hi_i = a[axis]
            if not math.isclose(j, j0):
                n = sizes[axis] if axis < len(sizes) else None
                if n is None:
                    raise NotImplementedError("a merge of tensors of different strides with an unknown size")
                # Pixel q of this input sits at q*j, not q*j0: bound the drift over the known size.
                drift = (n - 1) * (j - j0)
                lo_i, hi_i = lo_i + min(0.0, drift), hi_i + max(0.0, drift)
            lo, hi = min(lo, lo_i), max(hi, hi_i)
        out.append((j0, lo, hi))
    return out


def _spatial_sizes(tensor: Any) -> tuple[int | None, ...]:
    return tuple(tensor.shape[1:-1])


def _apply(op: Any, node: Any, inputs: list[list[_Axis]], strides: list[list[float]] | None = None
           ) -> list[list[_Axis]]:
    """Transfer of one layer call; returns the axes of each output tensor."""
    import keras

    names = _mro_names(op)
    outputs = node.output_tensors
    x = inputs[0]
    if isinstance(op, keras.Model):
        return _walk(op, inputs, strides)
    if any("Unpool" in n for n in names):
        merged = _merge(inputs, _spatial_sizes(node.input_tensors[0]))
        return [_upsample(merged, op.pool_size)] * len(outputs)
    if "BaseConvTranspose" in names or ("Transpose" in type(op).__name__ and hasattr(op, "kernel_size")):
        n = len(x)
        kernel = _tuple(op.kernel_size, n)
        strides = _tuple(op.strides, n)
        dilation = _tuple(getattr(op, "dilation_rate", 1), n)
        if hasattr(op, "_crops"):
            crops = [c[0] for c in op._crops()]
        else:
            crops = []
            for k, s, d in zip(kernel, strides, dilation, strict=True):
                total = int(d) * (int(k) - 1) + 1 - int(s)
                crops.append(max(total, 0) // 2 if str(op.padding).lower() == "same" else 0)
        return [_transpose(x, kernel, strides, dilation, crops)]
    if ("BaseConv" in names or "BaseDepthwiseConv" in names or "BaseSeparableConv" in names
            or ("Conv" in type(op).__name__ and hasattr(op, "kernel_size"))):
        return [_conv(x, op.kernel_size, op.strides, getattr(op, "dilation_rate", 1), op.padding)]
    if any("GlobalPool" in n or "GlobalAverage" in n or "GlobalMax" in n for n in names):
        if len(outputs[0].shape) != len(node.input_tensors[0].shape):
            raise NotImplementedError(f"{op.name} pools globally (unbounded receptive field)")
        # keepdims: a squeeze-excitation gate; its image-wide channel statistics are treated as local (module notes).
        return [x] * len(outputs)
    if any("Pool" in n for n in names) and hasattr(op, "pool_size"):
        strides = getattr(op, "strides", None) or op.pool_size
        padding = getattr(op, "padding", "valid")
        return [_conv(x, op.pool_size, strides, 1, padding)] * len(outputs)
    if any("UpSampling" in n for n in names):
        return [_upsample(x, op.size, widen=getattr(op, "interpolation", "nearest") != "nearest")]
    if any("ZeroPadding" in n for n in names):
        return [_shift(x, _pairs(op.padding, len(x)), -1)]
    if any("Cropping" in n for n in names):
        return [_shift(x, _pairs(op.cropping, len(x)), +1)]
    # Anything else: element-wise, a merge, or a change of rank (CDeep3M squeezes z with a Reshape).
    in_rank, out_rank = len(node.input_tensors[0].shape), len(outputs[0].shape)
    if out_rank == in_rank:
        merged = _merge(inputs, _spatial_sizes(outputs[0])) if len(inputs) > 1 else x
        for t_in in node.input_tensors:
            a, b = _spatial_sizes(t_in), _spatial_sizes(outputs[0])
            broadcast = all(sa == 1 for sa in a)  # e.g. a (1, 1) channel gate multiplied onto a feature map
            if all(s is not None for s in (*a, *b)) and a != b and not broadcast:
                raise NotImplementedError(f"layer {op.name} ({type(op).__name__}) changes the spatial size {a} -> {b}")
        return [merged] * len(outputs)
    if out_rank == in_rank - 1 and len(x) >= 2 and node.input_tensors[0].shape[1] == 1:
        return [x[1:]] * len(outputs)
    raise NotImplementedError(f"layer {op.name} ({type(op).__name__}) changes the rank {in_rank} -> {out_rank}")


def _walk(model: Any, in_axes: list[list[_Axis]], strides: list[list[float]] | None = None) -> list[list[_Axis]]:
    stats: dict[int, list[_Axis]] = {id(t): a for t, a in zip(model.inputs, in_axes, strict=True)}
    ops = [op for op in model.operations if type(op).__name__ != "InputLayer"]
    # Operations come in topological order; the loop repeats only if some node was not ready on the first pass.
    progress = True
    while progress:
        progress = False
        for op in ops:
            for node in op._inbound_nodes:
                ins, outs = node.input_tensors, node.output_tensors
                if not ins or any(id(t) not in stats for t in ins) or all(id(t) in stats for t in outs):
                    continue
                result = _apply(op, node, [stats[id(t)] for t in ins], strides)
                for t, a in zip(outs, result, strict=False):
                    stats[id(t)] = a
                    if strides is not None:
                        strides.append([ax[0] for ax in a])
                progress = True
    if any(id(t) not in stats for t in model.outputs):
        raise NotImplementedError(f"could not trace the layer graph of {model.name} to its outputs")
    return [stats[id(t)] for t in model.outputs]


def analyse_graph(model: Any) -> GraphInfo:
    """Walk ``model``'s layer graph (see the module notes); raises NotImplementedError for unsupported layers."""
    n_in = len(model.inputs[0].shape) - 2
    strides: list[list[float]] = []
    out = _walk(model, [[(1.0, 0.0, 0.0)] * n_in], strides)[0]
    if any(not math.isclose(j, 1.0) for j, _, _ in out):
        raise NotImplementedError(f"the first output of {model.name} is not at the input resolution")
    dropped = n_in - len(out)
    divisor = [1] * n_in
    for js in strides:
        offset = n_in - len(js)
        for axis, j in enumerate(js):
            if j >= 1 and math.isclose(j, round(j)):
                divisor[axis + offset] = math.lcm(divisor[axis + offset], int(round(j)))
    return GraphInfo(lo=tuple(a[1] for a in out), hi=tuple(a[2] for a in out), divisor=tuple(divisor),
                     dropped_axes=dropped)


def model_divisor(model: Any) -> tuple[int, ...]:
    """Per input spatial axis, the multiple every tile side must be (the product of the strides on the way down).

    Examples
    --------
    >>> import emzoo
    >>> model_divisor(emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16)))
    (4, 4)
    """
    try:
        return analyse_graph(model).divisor
    except NotImplementedError:
        return (1,) * (len(model.inputs[0].shape) - 2)


def _first(value: Any) -> Any:
    if isinstance(value, dict):
        return next(iter(value.values()))
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, type(None))):
        return value[0]
    return value


def _probe_size(model: Any, analytic_guess: int) -> tuple[int, ...]:
    shape = tuple(model.inputs[0].shape[1:-1])
    div = model_divisor(model)
    size = []
    for s, d in zip(shape, div, strict=True):
        if s is not None:
            size.append(int(s))
        else:
            want = max(4 * analytic_guess + 1, 32)
            size.append(-(-want // d) * d)
    return tuple(size)


def _probe(model: Any, size: tuple[int, ...] | None) -> tuple[int, ...]:
    channels = int(model.inputs[0].shape[-1])
    size = size or _probe_size(model, 16)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, *size, channels)).astype("float32")
    centre = tuple(s // 2 for s in size)
    x2 = x.copy()
    x2[(0, *centre)] += 1.0
    y1 = np.asarray(_first(model.predict_on_batch(x)), dtype=np.float64)
    y2 = np.asarray(_first(model.predict_on_batch(x2)), dtype=np.float64)
    diff = np.abs(y2 - y1).sum(axis=(0, -1))
    n_out = diff.ndim
    changed = np.argwhere(diff > 1e-7 * max(1.0, float(np.abs(y1).max())))
    size_out = size[len(size) - n_out:]
    centre_out = centre[len(size) - n_out:]
    margins = []
    for axis in range(n_out):
        off = (size_out[axis] - diff.shape[axis]) // 2
        if changed.size == 0:
            margins.append(0)
            continue
        pos = changed[:, axis] + off
        margins.append(int(max(centre_out[axis] - pos.min(), pos.max() - centre_out[axis], 0)))
    return tuple(margins)


def receptive_field(model: Any, *, method: str = "analytic", input_shape: tuple[int, ...] | None = None
                    ) -> tuple[int, ...]:
    """Per-axis receptive-field margin of ``model``: the halo a tile needs so its core equals whole-image output.

    Parameters
    ----------
    model : keras.Model
        Any Keras model (its first output is used).
    method : {"analytic", "probe", "auto"}
        ``"analytic"`` walks the layer graph (exact/conservative; the default); ``"probe"`` measures the response
        to an impulse (a lower bound); ``"auto"`` falls back to the probe when the graph holds an unknown layer.
    input_shape : tuple of int, optional
        Spatial input size used to place the output of nets whose output is smaller than their input, and the
        probe size (default: the model's fixed size, else a size comfortably larger than the field).

    Returns
    -------
    tuple of int
        One margin per spatial axis of the model's *output* (``(y, x)`` for 2D and multi-frame nets,
        ``(z, y, x)`` for 3D nets), in input pixels.

    Raises
    ------
    ValueError
        If ``method="analytic"`` meets a layer it cannot reason about (the message suggests ``method="probe"`` or
        an explicit ``halo=``).

    Examples
    --------
    >>> import emzoo
    >>> receptive_field(emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16)))
    (27, 27)
    """
    if method not in ("analytic", "probe", "auto"):
        raise ValueError(f"method must be 'analytic', 'probe' or 'auto', got {method!r}")
    if method != "probe":
        try:
            info = analyse_graph(model)
        except NotImplementedError as exc:
            if method == "analytic":
                raise ValueError(f"cannot compute the receptive field of {model.name} analytically: {exc}; use "
                                 "receptive_field(model, method='probe') or pass halo= explicitly.") from None
        else:
            size = input_shape or _probe_size(model, int(max(max(info.hi), -min(info.lo), 1)))
            from keras import KerasTensor

            channels = int(model.inputs[0].shape[-1])
            spec = _first(model.compute_output_spec(KerasTensor((1, *size, channels))))
            out_size = tuple(spec.shape[1:-1])
            in_size = size[len(size) - len(out_size):]
            margins = []
            for lo, hi, n_in, n_out in zip(info.lo, info.hi, in_size, out_size, strict=True):
                off = (n_in - n_out) // 2
                margins.append(int(math.ceil(max(off - lo, hi - off, 0) - 1e-9)))
            return tuple(margins)
    return _probe(model, input_shape)
