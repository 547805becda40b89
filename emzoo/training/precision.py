"""Checks that a model's convolutions compute correctly in its low-precision dtype before it trains in it.

TensorFlow 2.21's oneDNN kernels return wrong weight gradients in bfloat16 for some convolution shapes, with finite
loss and no error, while the forward pass is right (``benchmarks/precision_kernels.py`` prints the measured table).
On this project's CPU (AMX-BF16), every such shape was zero-padded ("same") with an input or output side smaller
than the kernel: a 3x3x3 Conv3D with 32 or more channels over a map of depth 2 is off by 90 % to 1e33 on every
call, a 5x5x5 one over any depth below 5, a 3x3 Conv2D whose stride leaves an output one pixel wide ("valid"
convolutions down to depth 1 were right). A 3D U-Net trained on 16³ windows reaches a 2x2x2 bottleneck and
diverges in one SGD step; running the grid of faulty shapes once crashed the process (``double free``), so the
kernels also write out of bounds. :func:`low_precision_faults` therefore does not run a "same" convolution whose
input or output is smaller than its kernel (a fault by that rule), and runs each other one at the shape it will
see, once in its own dtype and once in float32, naming the ones that disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

__all__ = ["KernelFault", "PrecisionWarning", "low_precision_faults", "smaller_than_kernel",
           "compare_with_float32", "TOLERANCE"]

# Relative L2 error above which a low-precision result counts as wrong. Correct bfloat16 convolutions measured
# 0.2-0.4 % here (8-bit mantissa, float32 accumulation); the faulty ones 50 % to overflow.
TOLERANCE = 0.05
_LOW = ("bfloat16", "float16")


class PrecisionWarning(UserWarning):
    """Training fell back to float32 because a low-precision kernel computes wrongly at the training window."""


@dataclass(frozen=True)
class KernelFault:
    """One convolution whose low-precision result disagrees with float32 at the shape it will be trained on."""

    layer: str
    layer_class: str
    input_shape: tuple[int, ...]
    dtype: str
    part: str  # "output", "input gradient" or "kernel gradient"
    error: float | None  # relative L2 error against float32 (inf where not finite); None: not run

    def __str__(self) -> str:
        if self.error is None:
            error = "not trusted (input or output smaller than the kernel: such shapes were measured wrong)"
        else:
            error = "not finite" if not np.isfinite(self.error) else f"relative error {self.error:.2g}"
        return (f"{self.layer} ({self.layer_class} over {'x'.join(map(str, self.input_shape[1:-1]))} x "
                f"{self.input_shape[-1]} channels): {self.dtype} {self.part} {error}")


def smaller_than_kernel(layer: keras.layers.Layer, shape: tuple[int, ...]) -> bool:
    """Whether a zero-padded ("same") convolution's input or output has a spatial side below its dilated kernel:
    the shapes whose bfloat16 kernels were measured wrong, so :func:`low_precision_faults` does not run them.

    Examples
    --------
    >>> smaller_than_kernel(keras.layers.Conv3D(8, 3, padding="same"), (1, 2, 16, 16, 8))
    True
    """
    if "Transpose" in type(layer).__name__ or not hasattr(layer, "kernel_size"):
        return False  # a transposed convolution's kernel spans the upsampled map; measured right (k2 s2)
    if getattr(layer, "padding", None) != "same":
        return False  # "valid" outputs of depth 1-3 (CDeep3M's z reduction) measured right
    dilation = getattr(layer, "dilation_rate", None) or (1,) * len(layer.kernel_size)
    extent = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, dilation, strict=True)]
    sides = [*shape[1:-1], *layer.compute_output_shape(shape)[1:-1]]
    return any(side < e for side, e in zip(sides, extent * 2, strict=True))


def _is_low_precision_conv(layer: keras.layers.Layer) -> bool:
    kernel = getattr(layer, "kernel", None)
    return kernel is not None and len(kernel.shape) >= 3 and layer.compute_dtype in _LOW


def _called_on(layer: keras.layers.Layer) -> Any:
    """The tensor a layer of a functional model was called on (a nested model's ``.input`` is its own Input)."""
    if isinstance(layer, keras.Model):
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            raise ValueError(f"low_precision_faults: the nested model {layer.name} is called {len(nodes)} times or on "
                             "several inputs; check it on its own.")
        return nodes[0].input_tensors[0]
    return layer.input


def _conv_shapes(model: keras.Model, input_shape: tuple[int, ...]) -> list[tuple[keras.layers.Layer, tuple[int, ...]]]:
    """Each low-precision convolution with its input shape for one batch-1 window, nested models included
    (symbolic shape inference: nothing is computed)."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.Model) or _is_low_precision_conv(layer)]
    if not layers:
        return []
    if len(model.inputs) != 1:
        raise ValueError(f"low_precision_faults checks one-input models; {model.name} has {len(model.inputs)}.")
    probe = keras.Model(model.inputs, [_called_on(layer) for layer in layers])
    specs = probe.compute_output_spec(keras.KerasTensor((1, *input_shape)))
    specs = specs if isinstance(specs, (list, tuple)) else [specs]
    found = []
    for layer, spec in zip(layers, specs, strict=True):
        shape = tuple(int(s) for s in spec.shape)
        found += _conv_shapes(layer, shape[1:]) if isinstance(layer, keras.Model) else [(layer, shape)]
    return found


def _relative_error(low: Any, ref: Any) -> float:
    low = np.asarray(keras.ops.convert_to_numpy(low), np.float64)
    ref = np.asarray(keras.ops.convert_to_numpy(ref), np.float64)
    if not np.isfinite(low).all():
        return float("inf")
    return float(np.linalg.norm(low - ref) / max(np.linalg.norm(ref), 1e-30))


def _forward_and_gradients(layer: keras.layers.Layer, x: np.ndarray, dy: np.ndarray) -> tuple[Any, Any, Any]:
    """The layer's output, and the gradients of ``sum(output * dy)`` with respect to its input and kernel."""
    import tensorflow as tf  # noqa: TID251 - the probe targets TensorFlow's kernels (see low_precision_faults)

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        total = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    grad_x, grad_kernel = tape.gradient(total, [xt, layer.kernel])
    return y, grad_x, grad_kernel


def low_precision_faults(model: keras.Model, input_shape: tuple[int, ...], *, seed: int = 0) -> list[KernelFault]:
    """The convolutions of ``model`` whose bfloat16/float16 output or gradients are wrong on this machine.

    Each convolution computing in a low-precision dtype (``layer.compute_dtype``) is taken at the input shape it
    sees for one ``input_shape`` window (batch 1). A zero-padded ("same") one whose input or output has a spatial
    side smaller than its (dilated) kernel is a fault without being run (``error=None``; see the module docstring). Each other one runs
    on random input and its own current kernel, twice: in its dtype, and with its dtype policy switched to float32
    for the reference. A relative L2 error above :data:`TOLERANCE` in the output, the input gradient or the kernel
    gradient is a fault. Only the TensorFlow backend is checked (the faults found are in its oneDNN kernels); on
    other backends, and for float32 models, the list is empty. Nothing is changed: each layer's policy is
    restored, and no random state is drawn from Keras.

    Parameters
    ----------
    model : keras.Model
        A functional model with one input (nested models are checked too).
    input_shape : tuple of int
        One window without the batch axis, e.g. ``(16, 16, 16, 1)``.
    seed : int
        Seed of the numpy generator for the random input.

    Returns
    -------
    list of KernelFault
        Empty when every low-precision convolution agrees with float32.

    Examples
    --------
    >>> import emzoo
    >>> model = emzoo.build("unet_bn", input_shape=(None, None, 1))
    >>> low_precision_faults(model, (64, 64, 1))  # float32: nothing to check
    []
    """
    if keras.backend.backend() != "tensorflow":
        return []
    rng = np.random.default_rng(seed)
    faults: list[KernelFault] = []
    seen: dict[str, list[tuple[str, float | None]]] = {}  # the same op at the same shape is run once
    for layer, shape in _conv_shapes(model, tuple(input_shape)):
        dtype = layer.compute_dtype
        key = json.dumps([type(layer).__name__, shape, {k: v for k, v in layer.get_config().items() if k != "name"}],
                         sort_keys=True, default=str)
        if key not in seen:
            seen[key] = _check_one(layer, shape, rng)
        faults += [KernelFault(layer.name, type(layer).__name__, shape, dtype, part, error)
                   for part, error in seen[key]]
    return faults


def _check_one(layer: keras.layers.Layer, shape: tuple[int, ...], rng: np.random.Generator,
               ) -> list[tuple[str, float | None]]:
    """The faulty parts of one convolution at one input shape, with their errors."""
    if smaller_than_kernel(layer, shape):
        return [("kernel gradient", None)]  # not run: these shapes were the faulty ones, and they corrupt memory
    return [(part, error) for part, error in compare_with_float32(layer, shape, rng).items() if not error <= TOLERANCE]


def compare_with_float32(layer: keras.layers.Layer, shape: tuple[int, ...], rng: np.random.Generator,
                         ) -> dict[str, float]:
    """Relative L2 errors of a layer's output, input gradient and kernel gradient in its own dtype against float32.

    The layer runs on random input of ``shape`` (batch axis included) and random output gradients, once as it is
    and once with its dtype policy switched to float32; the policy is restored. Runs the kernels whatever the
    shape (``benchmarks/precision_kernels.py`` measures with it; :func:`low_precision_faults` skips the shapes of
    :func:`smaller_than_kernel`).
    """
    # Inputs exactly representable in the low dtype, so both runs see the same numbers.
    x = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(rng.normal(size=shape).astype(np.float32),
                                                                   layer.compute_dtype), "float32"))
    policy = layer.dtype_policy
    dy = rng.normal(size=tuple(layer.compute_output_shape(shape))).astype(np.float32)
    low = _forward_and_gradients(layer, x, dy)
    try:
        layer.dtype_policy = keras.DTypePolicy("float32")
        ref = _forward_and_gradients(layer, x, dy)
    finally:
        layer.dtype_policy = policy
    return {part: _relative_error(a, b)
            for part, a, b in zip(("output", "input gradient", "kernel gradient"), low, ref, strict=True)}
