"""Max pooling that records where each maximum came from, and the unpooling that puts values back there (SegNet).

Keras 3 has neither layer, and TensorFlow's ``max_pool_with_argmax`` exists on one backend only, so both are written
with ``keras.ops``: the input is cut into non-overlapping windows, the window axes are flattened to one axis of
``ph * pw`` positions, and ``argmax`` over that axis gives the switch. Unpooling one-hots the switch, multiplies it by
the value and folds the windows back into the image.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _pair(value: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or any(v < 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {value!r}.")
    return pair  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package="emzoo")
class MaxPoolingWithIndices2D(keras.layers.Layer):
    """2D max pooling (window = stride, no padding) that also returns the position of every maximum.

    Returns ``[pooled, indices]``. ``indices`` has the pooled shape and dtype int32; its value is the row-major
    position of the maximum inside its window (for 2x2: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right). On a
    tie the first position in that order wins. The gradient of ``pooled`` flows to the recorded position only.

    Parameters
    ----------
    pool_size : int or pair of int
        Window (and stride) ``(ph, pw)``. Input height and width must be multiples of it.
    **kwargs
        Standard ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 3.0, 3.0, 2.0], "float32").reshape(1, 2, 2, 1)
    >>> pooled, indices = MaxPoolingWithIndices2D()(x)
    >>> float(pooled[0, 0, 0, 0]), int(indices[0, 0, 0, 0])
    (3.0, 1)

    References
    ----------
    Badrinarayanan, Kendall, Cipolla. SegNet: a deep convolutional encoder-decoder architecture for image
    segmentation. IEEE TPAMI 39(12):2481, 2017. doi:10.1109/TPAMI.2016.2644615
    """

    def __init__(self, pool_size: int | tuple[int, int] = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")

    def _check(self, input_shape: tuple[int | None, ...]) -> None:
        if len(input_shape) != 4:
            raise ValueError(f"{self.name}: expected a 4D (N, H, W, C) input, got shape {tuple(input_shape)}.")
        for size, p in zip(input_shape[1:3], self.pool_size, strict=True):
            if size is not None and size % p:
                raise ValueError(
                    f"{self.name}: height and width must be multiples of pool_size {self.pool_size}, got "
                    f"{tuple(input_shape[1:3])}; pad or crop the input first."
                )

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self._check(input_shape)

    def call(self, inputs: Any) -> list[Any]:
        ph, pw = self.pool_size
        _, h, w, c = ops.shape(inputs)
        # (N, H, W, C) -> (N, H/ph, W/pw, C, ph*pw) with the window flattened row-major on the last axis.
        x = ops.reshape(inputs, (-1, h // ph, ph, w // pw, pw, c))
        x = ops.transpose(x, (0, 1, 3, 5, 2, 4))
        x = ops.reshape(x, (-1, h // ph, w // pw, c, ph * pw))
        # The first window position holding the maximum, spelled with max/equal/min rather than ops.argmax: on the
        # TensorFlow backend argmax tells -0.0 from 0.0 with bit casts, which ONNX (tf2onnx) cannot express, and
        # tf.argmax does not promise which of tied positions it returns. The clip keeps a NaN window in range.
        positions = ops.arange(ph * pw, dtype="int32")
        first = ops.where(x == ops.max(x, axis=-1, keepdims=True), positions, ph * pw)
        indices = ops.minimum(ops.min(first, axis=-1), ph * pw - 1)
        # Gather instead of max: the gradient then goes to the recorded position only, even on ties.
        pooled = ops.take_along_axis(x, ops.expand_dims(indices, -1), axis=-1)
        return [ops.squeeze(pooled, -1), indices]

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> list[tuple[int | None, ...]]:
        self._check(input_shape)
        n, h, w, c = input_shape
        ph, pw = self.pool_size
        shape = (n, None if h is None else h // ph, None if w is None else w // pw, c)
        return [shape, shape]

    def compute_output_spec(self, inputs: Any) -> list[keras.KerasTensor]:
        pooled, indices = self.compute_output_shape(inputs.shape)
        return [keras.KerasTensor(pooled, dtype=inputs.dtype), keras.KerasTensor(indices, dtype="int32")]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"pool_size": list(self.pool_size)})
        return config


@keras.saving.register_keras_serializable(package="emzoo")
class MaxUnpooling2D(keras.layers.Layer):
    """Max unpooling: each value goes to the window position recorded by :class:`MaxPoolingWithIndices2D`.

    Called on ``[values, indices]``; returns a map ``pool_size`` times larger that is zero everywhere except at the
    recorded positions. The gradient flows to ``values``.

    Parameters
    ----------
    pool_size : int or pair of int
        Window of the pooling that produced ``indices``.
    tile_indices : bool
        Allow ``values`` to have ``k`` times as many channels as ``indices``; channel ``c`` then uses the switches of
        channel ``c mod C_indices``. Off by default, so a channel mismatch is an error rather than a silent choice.
    **kwargs
        Standard ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 3.0, 3.0, 2.0], "float32").reshape(1, 2, 2, 1)
    >>> pooled, indices = MaxPoolingWithIndices2D()(x)
    >>> np.asarray(MaxUnpooling2D()([pooled, indices]))[0, :, :, 0].tolist()
    [[0.0, 3.0], [0.0, 0.0]]

    References
    ----------
    Badrinarayanan, Kendall, Cipolla. SegNet. IEEE TPAMI 39(12):2481, 2017. doi:10.1109/TPAMI.2016.2644615
    """

    def __init__(self, pool_size: int | tuple[int, int] = 2, tile_indices: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.tile_indices = bool(tile_indices)

    def _repeats(self, values_shape: tuple[int | None, ...], indices_shape: tuple[int | None, ...]) -> int:
        if len(values_shape) != 4 or len(indices_shape) != 4:
            raise ValueError(
                f"{self.name}: expected 4D values and indices, got {tuple(values_shape)} and {tuple(indices_shape)}."
            )
        for a, b in zip(values_shape[1:3], indices_shape[1:3], strict=True):
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"{self.name}: values {tuple(values_shape)} and indices {tuple(indices_shape)} differ in height "
                    "or width; unpool with the indices of the pooling at the same resolution."
                )
        cv, ci = values_shape[-1], indices_shape[-1]
        if cv == ci:
            return 1
        if self.tile_indices and cv and ci and cv % ci == 0:
            return cv // ci
        raise ValueError(
            f"{self.name}: values have {cv} channels but indices have {ci}; use the indices of the matching pooling"
            + ("" if self.tile_indices else ", or pass tile_indices=True when values have a multiple of them")
            + "."
        )

    def build(self, input_shape: list[tuple[int | None, ...]]) -> None:
        self._repeats(*input_shape)

    def call(self, inputs: list[Any]) -> Any:
        values, indices = inputs
        ph, pw = self.pool_size
        repeats = self._repeats(tuple(values.shape), tuple(indices.shape))
        if repeats > 1:
            indices = ops.tile(indices, (1, 1, 1, repeats))
        _, h, w, c = ops.shape(values)
        mask = ops.one_hot(ops.cast(indices, "int32"), ph * pw, dtype=values.dtype)
        x = mask * ops.expand_dims(values, -1)
        # (N, h, w, C, ph*pw) -> (N, h*ph, w*pw, C): undo the window flattening of the pooling layer.
        x = ops.reshape(x, (-1, h, w, c, ph, pw))
        x = ops.transpose(x, (0, 1, 4, 2, 5, 3))
        return ops.reshape(x, (-1, h * ph, w * pw, c))

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        values_shape, indices_shape = input_shape
        self._repeats(values_shape, indices_shape)
        n, h, w, c = values_shape
        ph, pw = self.pool_size
        return (n, None if h is None else h * ph, None if w is None else w * pw, c)

    def compute_output_spec(self, inputs: list[Any]) -> keras.KerasTensor:
        values, indices = inputs
        return keras.KerasTensor(self.compute_output_shape([values.shape, indices.shape]), dtype=values.dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"pool_size": list(self.pool_size), "tile_indices": self.tile_indices})
        return config
