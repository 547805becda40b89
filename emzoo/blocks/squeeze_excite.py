"""Squeeze-and-excitation channel gating, for 2D and 3D tensors alike (the rank is read from the tensor)."""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["apply_squeeze_excite"]


def apply_squeeze_excite(x: Any, ratio: int = 16, *, name: str = "se") -> Any:
    """Squeeze-and-excitation block: global average pool -> Dense(C // ratio, ReLU) -> Dense(C, sigmoid) -> scale.

    Both Dense layers have no bias and He-normal kernels (the ``keras-squeeze-excite-network`` form that BiaPy and
    Franco-Barranco et al. use), so the block holds ``2 * C * (C // ratio)`` parameters. The pooled tensor keeps its
    spatial axes (size 1), so the gate broadcasts over them in the final multiply and the FLOP counter sees two
    Dense layers of ``C * (C // ratio)`` MACs each.

    Parameters
    ----------
    x : keras tensor
        ``(batch, *spatial, C)`` with 1, 2 or 3 spatial axes.
    ratio : int
        Channel reduction; the bottleneck has ``max(1, C // ratio)`` units (C >= ratio in every emzoo use, so the
        ``max`` never bites there).
    name : str
        Prefix of the layer names: ``{name}_pool``, ``{name}_reduce``, ``{name}_expand``, ``{name}_scale``.

    Returns
    -------
    keras tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import keras
    >>> y = apply_squeeze_excite(keras.Input((8, 8, 8, 32)), ratio=16)
    >>> tuple(y.shape)
    (None, 8, 8, 8, 32)

    References
    ----------
    Hu J, Shen L, Sun G. Squeeze-and-excitation networks. CVPR 2018. doi:10.1109/CVPR.2018.00745
    """
    if ratio < 1:
        raise ValueError(f"apply_squeeze_excite: ratio must be >= 1, got {ratio}.")
    pool_classes = {
        1: keras.layers.GlobalAveragePooling1D,
        2: keras.layers.GlobalAveragePooling2D,
        3: keras.layers.GlobalAveragePooling3D,
    }
    ndim = len(x.shape) - 2
    if ndim not in pool_classes:
        raise ValueError(f"apply_squeeze_excite: expected 1 to 3 spatial axes, got a tensor of shape {x.shape}.")
    channels = int(x.shape[-1])
    s = pool_classes[ndim](keepdims=True, name=f"{name}_pool")(x)
    s = keras.layers.Dense(max(1, channels // ratio), activation="relu", use_bias=False,
                           kernel_initializer="he_normal", name=f"{name}_reduce")(s)
    s = keras.layers.Dense(channels, activation="sigmoid", use_bias=False, kernel_initializer="he_normal",
                           name=f"{name}_expand")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])
