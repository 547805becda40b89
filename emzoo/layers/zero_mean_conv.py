"""3D convolution whose every filter has zero mean (HighRes3DZMNet's first layer)."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="emzoo")
class ZeroMeanConv3D(keras.layers.Conv3D):
    """``Conv3D`` with each filter re-parameterised as ``W - mean(W)`` over its (kz, ky, kx, C_in) taps.

    HighRes3DZMNet constrains every first-layer kernel to sum to zero, so the layer's response (before the bias) is
    blind to an additive brightness offset of the input wherever the kernel window lies fully inside the volume (with
    ``padding="same"`` the zero padding breaks the invariance in a border of ``kernel // 2`` voxels).

    The constraint is implemented by **re-parameterisation** inside the forward pass, not by a
    ``keras.constraints.Constraint``: the stored variable ``kernel`` is free, and the convolution uses its
    per-filter-centred version. This is exact from the first step (a constraint only acts after optimiser updates, so
    freshly initialised or loaded weights would not be zero-mean), differentiable (the gradient is the projection of
    the plain gradient onto the zero-mean subspace, which is what projected gradient descent with the paper's
    constraint follows), and adds no parameters. :attr:`effective_kernel` returns the kernel actually applied.

    Parameters
    ----------
    *args, **kwargs
        Exactly those of ``keras.layers.Conv3D``.

    Examples
    --------
    >>> import numpy as np
    >>> conv = ZeroMeanConv3D(2, 3, padding="valid")
    >>> x = np.random.default_rng(0).normal(size=(1, 3, 3, 3, 1)).astype("float32")
    >>> bool(np.allclose(conv(x), conv(x + 5.0), atol=1e-4))
    True

    References
    ----------
    Žerovnik Mekuč M, Bohak C, Hudoklin S, Kim BH, Romih R, Kim MY, Marolt M. Automatic segmentation of mitochondria
    and endolysosomes in volumetric electron microscopy data. Comput Biol Med 119:103693, 2020.
    doi:10.1016/j.compbiomed.2020.103693
    """

    @property
    def effective_kernel(self) -> Any:
        """The zero-mean kernel the convolution applies (same shape as ``kernel``)."""
        return self._centre(self.kernel)

    @staticmethod
    def _centre(kernel: Any) -> Any:
        # Kernel layout is (kz, ky, kx, C_in, C_out): one mean per output filter.
        return kernel - keras.ops.mean(kernel, axis=(0, 1, 2, 3), keepdims=True)

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        return super().convolution_op(inputs, self._centre(kernel))
