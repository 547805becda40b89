"""A built model at another input size: the free shape it may take, and its rebuild from its config.

A leaf module (it imports nothing from emzoo): training (:func:`emzoo.training.evaluate.at_input_shape`), the FLOP
counter and inference rebuild models at another input shape, and all of them can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["free_input_shape", "rebuild_from_config"]


def free_input_shape(model: Any) -> tuple[int | None, ...]:
    """The model's input shape (no batch axis) with free spatial sides; a multi-frame model keeps its frames.

    Examples
    --------
    >>> import emzoo
    >>> free_input_shape(emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16)))
    (None, None, 1)
    """
    shape = tuple(model.inputs[0].shape[1:])
    outputs = model.outputs
    out_rank = len((outputs[0] if isinstance(outputs, (list, tuple)) else outputs).shape)
    if len(shape) == 4 and out_rank == 4:  # multi-frame (3D -> 2D): the frames stay
        return (shape[0], None, None, shape[-1])
    return (None,) * (len(shape) - 1) + (shape[-1],)


def rebuild_from_config(model: Any, input_shape: Sequence[int | None]) -> Any:
    """A new single-input functional model from ``model``'s config with another input shape (no weights copied).

    Raises
    ------
    ValueError
        If ``model`` is not a single-input functional model.
    """
    config = model.get_config()
    inputs = [layer for layer in config.get("layers", []) if layer.get("class_name") == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError("not a single-input functional model")
    inputs[0]["config"]["batch_shape"] = [None, *input_shape]
    return model.__class__.from_config(config)
