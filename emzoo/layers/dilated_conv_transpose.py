"""Strided *and* dilated 2D transposed convolution (Caffe ``Deconvolution`` with ``dilation``), plus Caffe's bilinear
filler.

Keras 3 ``Conv2DTranspose`` refuses ``strides > 1`` together with ``dilation_rate > 1``, yet CDeep3M's multi-scale
heads are exactly such deconvolutions (kernel 2s, stride s, dilation 5/11/17/23). This layer is defined by the
textbook identity: a transposed convolution is a stride-1 convolution over the input with ``s - 1`` zeros inserted
between pixels, padded by ``d(k-1) - p`` on each side, using the spatially flipped kernel. By default it evaluates
the same sum phase by phase, skipping the inserted zeros (see :class:`DilatedConv2DTranspose`).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["BilinearUpsampling", "DilatedConv2DTranspose"]


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return pair


def _pad_or_crop(x: Any, amounts: list[tuple[int, int]]) -> Any:
    """Zero-pad (positive) or crop (negative) the two spatial axes of an NHWC tensor by (before, after) each."""
    pads = [(max(b, 0), max(a, 0)) for b, a in amounts]
    if any(p for pair in pads for p in pair):
        x = ops.pad(x, ((0, 0), *pads, (0, 0)))
    crops = [(max(-b, 0), max(-a, 0)) for b, a in amounts]
    if any(c for pair in crops for c in pair):
        (top, bottom), (left, right) = crops
        x = x[:, top : (-bottom or None), left : (-right or None), :]
    return x


@keras.saving.register_keras_serializable(package="emzoo")
class DilatedConv2DTranspose(keras.layers.Layer):
    """2D transposed convolution with stride and dilation, computed as zero insertion + stride-1 dilated conv.

    For input length ``n``, kernel ``k``, stride ``s``, dilation ``d`` and Caffe pad ``p`` (per axis), the output
    length is Caffe's ``s(n-1) + d(k-1) + 1 - 2p``. ``padding="same"`` picks the crop that gives exactly ``s * n``
    (``2p = d(k-1) + 1 - s``; when that is odd the extra pixel is cropped at the end, as Keras does).

    Definition (``implementation="zero_insertion"``): (1) insert ``s - 1`` zeros after every input pixel, (2)
    zero-pad each spatial axis by ``d(k-1) - p`` in front and ``d(k-1) - p - (s-1)`` behind (negative amounts crop),
    (3) run a stride-1 convolution with dilation ``d`` (``keras.ops.conv``). The stored ``kernel`` therefore is a
    *convolution* kernel,
    shape ``(kh, kw, in_channels, filters)``: to port a Caffe ``Deconvolution`` blob ``W`` of shape
    ``(in, out, kh, kw)`` use ``W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)``. With ``d = 1`` the layer equals
    ``keras.layers.Conv2DTranspose(padding="same")`` given the flipped, channel-transposed kernel.

    That form runs about ``s**2`` times the native MACs and holds a ``(s*H + 2 d(k-1)) x (s*W + 2 d(k-1)) x C_in``
    intermediate: for CDeep3M's 8x head at a 512² input, 864² x 1154 floats (3.4 GB), and one such layer took 114 s
    and 9.1 GB on a 2-core CPU. The default ``implementation="polyphase"`` computes the identical sum without the
    zeros: output phase ``r`` (pixels ``s*m + r``) only meets the taps whose inserted position holds an input pixel,
    which form a sub-kernel ``kernel[a0::s/g]`` (``g = gcd(d, s)``) applied as a stride-1 conv with dilation
    ``d/g`` to the input itself; the ``s_h * s_w`` phase outputs are then interleaved. It costs the native MACs and
    no intermediate larger than the input (the same layer: 2.3 s, 0.9 GB). Both give the same result to float
    rounding and share the weights. :meth:`count_macs` reports the native transposed-convolution MACs (input pixels
    x k² x C_in x C_out), the convention of ``emzoo.flops``.

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int or (int, int)
        Kernel size ``k`` (before dilation).
    strides : int or (int, int)
        Upsampling factor ``s``.
    dilation_rate : int or (int, int)
        Kernel dilation ``d``.
    padding : "same", int or (int, int)
        ``"same"`` (output ``s`` x input) or Caffe's ``pad`` (pixels cropped from each side of the full output).
    use_bias : bool
        Add a bias per output channel.
    kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer, kernel_constraint, bias_constraint
        As for ``keras.layers.Conv2D``.
    implementation : {"polyphase", "zero_insertion"}
        How the sum is evaluated (same weights, same result); ``"zero_insertion"`` is the literal definition.
    **kwargs
        Standard ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Examples
    --------
    >>> import numpy as np
    >>> layer = DilatedConv2DTranspose(2, 4, strides=2, dilation_rate=5, padding=7)
    >>> tuple(layer(np.zeros((1, 8, 8, 3), "float32")).shape)
    (1, 16, 16, 2)

    References
    ----------
    Dumoulin V, Visin F. A guide to convolution arithmetic for deep learning. arXiv:1603.07285, 2016 (§4, the
    transposed convolution as a direct convolution over a zero-inserted input). Zeng T, Wu B, Ji S. DeepEM3D.
    Bioinformatics 33(14):i35, 2017. doi:10.1093/bioinformatics/btx188
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        dilation_rate: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = "same",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        implementation: str = "polyphase",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if min(*self.kernel_size, *self.strides, *self.dilation_rate) < 1:
            raise ValueError(
                f"kernel_size, strides and dilation_rate must be >= 1, got {self.kernel_size}, {self.strides}, "
                f"{self.dilation_rate}"
            )
        if isinstance(padding, str):
            if padding.lower() != "same":
                raise ValueError(f"padding must be 'same', an int or a pair of ints (Caffe pad), got {padding!r}")
            self.padding: str | tuple[int, int] = "same"
        else:
            self.padding = _pair(padding, "padding")
            if min(self.padding) < 0:
                raise ValueError(f"padding must be >= 0, got {padding!r}")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if implementation not in ("polyphase", "zero_insertion"):
            raise ValueError(f"implementation must be 'polyphase' or 'zero_insertion', got {implementation!r}")
        self.implementation = implementation
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _crops(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Pixels cropped (before, after) from each axis of the full transposed-conv output."""
        crops = []
        for axis in range(2):
            k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation_rate[axis]
            if self.padding == "same":
                total = d * (k - 1) + 1 - s
                if total < 0:
                    raise ValueError(
                        f"padding='same' needs dilation*(kernel-1)+1 >= strides, got kernel {k}, stride {s}, "
                        f"dilation {d}; use a larger kernel or an explicit Caffe pad"
                    )
                crops.append((total // 2, total - total // 2))
            else:
                crops.append((self.padding[axis], self.padding[axis]))
        return crops[0], crops[1]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel axis must be known, got input shape {input_shape}")
        self._crops()  # validates padding="same" early
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, int(channels), self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: int(channels)})

    def call(self, inputs: Any) -> Any:
        if self.implementation == "polyphase":
            outputs = self._call_polyphase(inputs)
        else:
            outputs = self._call_zero_insertion(inputs)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return outputs

    def _call_zero_insertion(self, x: Any) -> Any:
        """The definition: zero insertion, symmetric zero padding, stride-1 dilated conv (about s² x the MACs)."""
        sh, sw = self.strides
        if sh > 1 or sw > 1:
            # Every pixel is followed by s-1 zeros, so each axis grows from n to s*n; the s-1 trailing zeros after
            # the last pixel are taken off the back padding below.
            _, h, w, c = ops.shape(x)
            x = ops.reshape(x, (-1, h, 1, w, 1, c))
            x = ops.pad(x, ((0, 0), (0, 0), (0, sh - 1), (0, 0), (0, sw - 1), (0, 0)))
            x = ops.reshape(x, (-1, h * sh, w * sw, c))
        amounts = []
        for axis, (crop_before, crop_after) in enumerate(self._crops()):
            reach = self.dilation_rate[axis] * (self.kernel_size[axis] - 1)
            amounts.append((reach - crop_before, reach - crop_after - (self.strides[axis] - 1)))
        x = _pad_or_crop(x, amounts)
        return ops.conv(
            x, self.kernel, strides=1, padding="valid", data_format="channels_last", dilation_rate=self.dilation_rate
        )

    def _phases(self, axis: int) -> tuple[list[tuple[int, int, int, int] | None], int, int]:
        """Per output phase r of one axis: (first tap, tap step, number of taps, input offset), or None (no tap).

        In the zero-insertion form, output o = s*m + r reads inserted position o + d*a - before, which holds an input
        pixel only when it is a multiple of s. The taps that do form an arithmetic progression (step s/gcd(d, s)) and
        read input pixels m + e0 + j * d/gcd(d, s), so each phase is a small stride-1 dilated conv on the input.
        Also returns ``delta`` (the output length is s*n + delta) and ``extra`` = ceil(delta / s), so every phase
        has n + extra outputs.
        """
        k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation_rate[axis]
        crop_before, crop_after = self._crops()[axis]
        before = d * (k - 1) - crop_before
        delta = d * (k - 1) + 1 - s - crop_before - crop_after
        step = s // math.gcd(d, s)
        phases: list[tuple[int, int, int, int] | None] = []
        for r in range(s):
            taps = [a for a in range(k) if (r + d * a - before) % s == 0]
            phases.append((taps[0], step, len(taps), (r + d * taps[0] - before) // s) if taps else None)
        return phases, delta, -(-delta // s)

    def _call_polyphase(self, x: Any) -> Any:
        """The same sum without the inserted zeros: one stride-1 dilated conv per output phase, then interleave.

        Native MACs (input pixels x k² x C_in x C_out) and no intermediate larger than the input.
        """
        (phases_h, delta_h, extra_h), (phases_w, delta_w, extra_w) = self._phases(0), self._phases(1)
        dilation = tuple(d // math.gcd(d, s) for d, s in zip(self.dilation_rate, self.strides, strict=True))
        kernel = ops.convert_to_tensor(self.kernel)
        grid: list[list[Any]] = []
        for ph in phases_h:
            row = []
            for pw in phases_w:
                if ph is None or pw is None:
                    row.append(None)
                    continue
                amounts = [(-e0, extra + (taps - 1) * dil + e0)
                           for (_, _, taps, e0), extra, dil in ((ph, extra_h, dilation[0]), (pw, extra_w, dilation[1]))]
                sub = kernel[ph[0] :: ph[1], pw[0] :: pw[1]]
                row.append(ops.conv(_pad_or_crop(x, amounts), sub, strides=1, padding="valid",
                                    data_format="channels_last", dilation_rate=dilation))
            grid.append(row)
        reference = next(y for row in grid for y in row if y is not None)
        zeros = ops.zeros_like(reference)
        grid = [[zeros if y is None else y for y in row] for row in grid]
        sh, sw = self.strides
        if sh == sw == 1:
            out = grid[0][0]
        else:
            _, mh, mw, c = ops.shape(reference)
            out = ops.stack([ops.stack(row, axis=3) for row in grid], axis=2)  # (N, Mh, sh, Mw, sw, C)
            out = ops.reshape(out, (-1, mh * sh, mw * sw, c))
        # Every phase has n + extra outputs; the interleaved tail past the true length s*n + delta goes.
        return _pad_or_crop(out, [(0, delta_h - sh * extra_h), (0, delta_w - sw * extra_w)])

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        spatial = []
        for axis, (crop_before, crop_after) in enumerate(self._crops()):
            n = input_shape[1 + axis]
            if n is None:
                spatial.append(None)
                continue
            k, s, d = self.kernel_size[axis], self.strides[axis], self.dilation_rate[axis]
            size = s * (n - 1) + d * (k - 1) + 1 - crop_before - crop_after
            if size < 1:
                raise ValueError(
                    f"{self.name}: padding {self.padding} crops away the whole output for input length {n} "
                    f"(kernel {k}, stride {s}, dilation {d}); use a smaller pad"
                )
            spatial.append(size)
        return (input_shape[0], *spatial, self.filters)

    def count_macs(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
        """Native transposed-convolution MACs: input pixels x kh x kw x C_in x C_out (zero taps not counted)."""
        return math.prod(input_shape[1:-1]) * math.prod(self.kernel_size) * int(input_shape[-1]) * self.filters

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "dilation_rate": self.dilation_rate,
                "padding": self.padding,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "implementation": self.implementation,
            }
        )
        return config


def _bilinear_1d(size: int) -> np.ndarray:
    # Caffe's BilinearFiller: f = ceil(k/2), c = (2f - 1 - f % 2) / (2f), w(x) = 1 - |x/f - c|.
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    return 1.0 - np.abs(np.arange(size) / f - c)


@keras.saving.register_keras_serializable(package="emzoo")
class BilinearUpsampling(keras.initializers.Initializer):
    """Caffe's ``bilinear`` filler: every (in, out) kernel slice is the same separable bilinear kernel.

    The first two axes of ``shape`` are the spatial ones (kh, kw), true for ``Conv2D``, ``Conv2DTranspose`` and
    :class:`DilatedConv2DTranspose` kernels. With kernel ``2s``, stride ``s`` and pad ``s/2`` a transposed
    convolution with this kernel is bilinear upsampling by ``s`` of each input channel, summed over the inputs
    (Caffe fills all channel pairs, not just the diagonal). The kernel is symmetric, so flipping does not change it.

    Examples
    --------
    >>> import keras
    >>> keras.ops.convert_to_numpy(BilinearUpsampling()((4, 1, 1, 1)))[:, 0, 0, 0].tolist()
    [0.25, 0.75, 0.75, 0.25]

    References
    ----------
    Long J, Shelhamer E, Darrell T. Fully convolutional networks for semantic segmentation. CVPR 2015.
    doi:10.1109/CVPR.2015.7298965 (Caffe ``BilinearFiller``).
    """

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        if len(shape) < 2:
            raise ValueError(f"BilinearUpsampling needs a kernel shape with two spatial axes first, got {shape}")
        kernel = np.outer(_bilinear_1d(shape[0]), _bilinear_1d(shape[1]))
        kernel = kernel.reshape(shape[0], shape[1], *([1] * (len(shape) - 2)))
        dtype = dtype or keras.backend.floatx()
        return ops.broadcast_to(ops.convert_to_tensor(kernel, dtype=dtype), tuple(shape))

    def get_config(self) -> dict[str, Any]:
        return {}
