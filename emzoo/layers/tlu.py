"""Trainable linear unit (TLU) of EM-net."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="emzoo")
class TLU(keras.layers.Layer):
    """Trainable linear unit: ``f(x) = beta * relu(x) - alpha * relu(-x)``.

    A PReLU with a trainable positive slope as well. With the default initialisers (alpha 0, beta 1) it starts as an
    exact ReLU; alpha still gets a gradient (``-relu(-x)``) from the first step. One alpha and one beta per channel
    (shared over the spatial axes), so the weight shape does not depend on the input size.

    Parameters
    ----------
    alpha_initializer, beta_initializer : str or keras.initializers.Initializer
        Initialisers of the negative and positive slopes.
    shared_axes : sequence of int, optional
        Axes along which the slopes are shared; default: every axis but the batch and channel axes.
    **kwargs
        Standard ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Examples
    --------
    >>> import numpy as np
    >>> tlu = TLU()
    >>> np.asarray(tlu(np.array([[[-1.0, 2.0]]]))).tolist()
    [[[0.0, 2.0]]]

    References
    ----------
    Khadangi, Boudier, Rajagopal. EM-net: deep learning for electron microscopy image segmentation. ICPR 2020.
    doi:10.1109/ICPR48806.2021.9413098
    """

    def __init__(
        self,
        alpha_initializer: Any = "zeros",
        beta_initializer: Any = "ones",
        shared_axes: list[int] | tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.shared_axes = None if shared_axes is None else [int(a) for a in shared_axes]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shared = self.shared_axes if self.shared_axes is not None else list(range(1, len(input_shape) - 1))
        param_shape = [1 if i in shared else d for i, d in enumerate(input_shape)][1:]
        if any(d is None for d in param_shape):
            raise ValueError(
                f"TLU needs a known size on every unshared axis; got input shape {input_shape} with "
                f"shared_axes={shared}. Share the spatial axes (the default) or give a static input shape."
            )
        self.alpha = self.add_weight(shape=param_shape, initializer=self.alpha_initializer, name="alpha")
        self.beta = self.add_weight(shape=param_shape, initializer=self.beta_initializer, name="beta")

    def call(self, inputs: Any) -> Any:
        return self.beta * keras.ops.relu(inputs) - self.alpha * keras.ops.relu(-inputs)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "alpha_initializer": keras.initializers.serialize(self.alpha_initializer),
                "beta_initializer": keras.initializers.serialize(self.beta_initializer),
                "shared_axes": self.shared_axes,
            }
        )
        return config
