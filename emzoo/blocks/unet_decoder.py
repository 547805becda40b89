"""The up-conv decoder level and the 2-channel head shared by EM-net and VGG16-U-Net (EM-net notebook builders).

Both families decode with ``Up -> 2x2 conv -> BN -> ReLU``, concatenate [upsampled, skip], then two ``3x3 conv ->
BN -> ReLU``, and end with ``3x3 conv (2) -> BN -> ReLU`` and a 1x1 sigmoid/softmax (``ARCHITECTURES.md`` §3.2 and §6).
"""

from __future__ import annotations

from typing import Any

import keras

from emzoo.blocks.conv import apply_conv_norm_act, output_activation

__all__ = ["apply_upconv_decoder_level", "apply_two_channel_head"]


def apply_upconv_decoder_level(
    x: Any,
    skip: Any,
    filters: int,
    *,
    up_filters: int | None = None,
    kernel_initializer: Any = "he_normal",
    name: str = "dec",
) -> Any:
    """One decoder level: ``u = ReLU(BN(C2(up_filters)(Up(x)))); cat(u, skip); ReLU(BN(C3(filters)))`` twice.

    The concatenation order is [upsampled, skip], as in the EM-net notebook (the zhixuhao U-Net uses the reverse).

    Parameters
    ----------
    x : tensor
        ``(N, H, W, C)`` deeper features.
    skip : tensor
        ``(N, 2H, 2W, S)`` encoder features at the output resolution.
    filters : int
        Width of the two 3x3 convs (and of the output).
    up_filters : int, optional
        Width of the 2x2 up-conv; defaults to ``filters``.
    kernel_initializer : str or keras.initializers.Initializer
        Initialiser of the three convs (He-normal in the notebook).
    name : str
        Prefix of the layer names: ``{name}_up``, ``{name}_upconv`` (+ ``_bn``, ``_act``), ``{name}_concat``,
        ``{name}_conv1``, ``{name}_conv2``.

    Returns
    -------
    tensor
        ``(N, 2H, 2W, filters)``.

    Examples
    --------
    >>> import keras
    >>> apply_upconv_decoder_level(keras.Input((8, 8, 16)), keras.Input((16, 16, 8)), 8).shape
    (None, 16, 16, 8)
    """
    up = keras.layers.UpSampling2D(2, name=f"{name}_up")(x)
    up = apply_conv_norm_act(up, up_filters or filters, 2, kernel_initializer=kernel_initializer,
                             name=f"{name}_upconv")
    x = keras.layers.Concatenate(name=f"{name}_concat")([up, skip])
    x = apply_conv_norm_act(x, filters, 3, kernel_initializer=kernel_initializer, name=f"{name}_conv1")
    return apply_conv_norm_act(x, filters, 3, kernel_initializer=kernel_initializer, name=f"{name}_conv2")


def apply_two_channel_head(
    x: Any, num_classes: int, *, kernel_initializer: Any = "he_normal", name: str = "head"
) -> Any:
    """``ReLU(BN(C3(2)))`` then a 1x1 conv with sigmoid (one class) or softmax (more), glorot-initialised.

    Layer names ``{name}_conv`` (+ ``_bn``, ``_act``) and ``{name}_out``.

    Examples
    --------
    >>> import keras
    >>> apply_two_channel_head(keras.Input((16, 16, 8)), 1).shape
    (None, 16, 16, 1)
    """
    x = apply_conv_norm_act(x, 2, 3, kernel_initializer=kernel_initializer, name=f"{name}_conv")
    return keras.layers.Conv2D(
        num_classes, 1, activation=output_activation(num_classes), name=f"{name}_out"
    )(x)
