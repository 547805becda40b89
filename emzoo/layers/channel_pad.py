"""Zero-padding along the channel axis: the parameter-free shortcut of HighRes3DNet's widening residual blocks."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="emzoo")
class ChannelPad(keras.layers.Layer):
    """Pad the last (channel) axis with zeros: ``before`` channels in front, ``after`` behind.

    NiftyNet's residual sum (``ElementwiseLayer('SUM')``) adds a narrower shortcut to a wider conv path by padding
    the shortcut's channels with zeros on both sides (16 -> 32 pads 8 + 8). No projection, no parameters, no MACs.

    Parameters
    ----------
    before, after : int
        Zero channels added in front of and behind the input channels (both >= 0).
    **kwargs
        Standard ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Examples
    --------
    >>> import numpy as np
    >>> tuple(ChannelPad(1, 2)(np.ones((1, 2, 3), "float32")).shape)
    (1, 2, 6)

    References
    ----------
    Li W, Wang G, Fidon L, Ourselin S, Cardoso MJ, Vercauteren T. On the compactness, efficiency, and
    representation of 3D convolutional networks: brain parcellation as a pretext task. IPMI 2017.
    doi:10.1007/978-3-319-59050-9_28
    """

    def __init__(self, before: int = 0, after: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(before) < 0 or int(after) < 0:
            raise ValueError(f"ChannelPad: before and after must be >= 0, got before={before}, after={after}.")
        self.before = int(before)
        self.after = int(after)

    def call(self, inputs: Any) -> Any:
        rank = len(inputs.shape)
        return keras.ops.pad(inputs, [[0, 0]] * (rank - 1) + [[self.before, self.after]])

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels + self.before + self.after)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"before": self.before, "after": self.after})
        return config
