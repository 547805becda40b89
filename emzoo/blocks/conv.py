"""Convolution -> normalisation -> activation, for 2D and 3D tensors alike.

The number of spatial dimensions is read from the tensor, so one block serves 2D and 3D families.
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.layers.tlu import TLU

_ACTIVATIONS = ("relu", "tlu", "prelu", "elu", "sigmoid", "softmax", "linear")


def output_activation(num_classes: int) -> str:
    """The head activation every entry uses: one sigmoid channel for binary output, a softmax over more classes.

    Examples
    --------
    >>> output_activation(1), output_activation(3)
    ('sigmoid', 'softmax')
    """
    return "sigmoid" if num_classes == 1 else "softmax"


def conv_layer_class(ndim: int, transpose: bool = False) -> type:
    """The Keras convolution class for ``ndim`` spatial dimensions (2 or 3)."""
    table = {
        (2, False): keras.layers.Conv2D,
        (3, False): keras.layers.Conv3D,
        (2, True): keras.layers.Conv2DTranspose,
        (3, True): keras.layers.Conv3DTranspose,
    }
    if (ndim, transpose) not in table:
        raise ValueError(f"only 2 or 3 spatial dimensions are supported, got {ndim}")
    return table[(ndim, transpose)]


def apply_activation(x: Any, activation: str | None, *, name: str | None = None) -> Any:
    """Apply a named activation as its own layer.

    ``"tlu"`` is EM-net's trainable linear unit and ``"prelu"`` a channel-wise PReLU (alpha init 0.25, shared over
    the spatial axes so its size does not depend on the input size). ``None`` returns ``x`` unchanged.
    """
    if activation is None or activation == "linear":
        return x
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {_ACTIVATIONS}")
    spatial_axes = list(range(1, len(x.shape) - 1))
    if activation == "tlu":
        return TLU(shared_axes=spatial_axes, name=name)(x)
    if activation == "prelu":
        return keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(0.25), shared_axes=spatial_axes, name=name
        )(x)
    return keras.layers.Activation(activation, name=name)(x)


def apply_conv(
    x: Any,
    filters: int,
    kernel_size: int | tuple[int, ...] = 3,
    *,
    strides: int | tuple[int, ...] = 1,
    padding: str = "same",
    dilation_rate: int | tuple[int, ...] = 1,
    use_bias: bool = True,
    activation: str | None = None,
    kernel_initializer: Any = "glorot_uniform",
    kernel_constraint: Any = None,
    transpose: bool = False,
    name: str | None = None,
) -> Any:
    """One convolution (2D or 3D, from the rank of ``x``); ``activation`` is fused into the conv layer."""
    cls = conv_layer_class(len(x.shape) - 2, transpose)
    kwargs: dict[str, Any] = {}
    if not transpose or dilation_rate != 1:
        kwargs["dilation_rate"] = dilation_rate
    return cls(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        activation=activation,
        kernel_initializer=kernel_initializer,
        kernel_constraint=kernel_constraint,
        name=name,
        **kwargs,
    )(x)


def apply_conv_norm_act(
    x: Any,
    filters: int,
    kernel_size: int | tuple[int, ...] = 3,
    *,
    strides: int | tuple[int, ...] = 1,
    padding: str = "same",
    dilation_rate: int | tuple[int, ...] = 1,
    use_bias: bool = True,
    norm: bool = True,
    activation: str | None = "relu",
    kernel_initializer: Any = "glorot_uniform",
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1e-3,
    transpose: bool = False,
    name: str = "conv",
) -> Any:
    """Conv -> (BatchNorm) -> (activation), with layer names ``{name}``, ``{name}_bn``, ``{name}_act``."""
    x = apply_conv(
        x,
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        transpose=transpose,
        name=name,
    )
    if norm:
        x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name=f"{name}_bn")(x)
    return apply_activation(x, activation, name=f"{name}_act")
