"""Heads and encoders of built models: a new head for another class count, a frozen encoder.

- :func:`replace_head` swaps the output convolution(s) for ones with ``num_classes`` channels (sigmoid for 1,
  softmax otherwise). Every other layer, and its weights, is shared with the input model. Models whose output
  feeds other layers (``net2d3d``'s 2D logits feed its 3D pyramid) are rebuilt by their entry instead, copying every
  layer whose weight shapes still match.
- :func:`freeze_encoder` freezes every layer that runs before the model's deepest downsampling (found in the graph, so
  it works for every encoder-decoder family), or the layers named explicitly.

Graph surgery only (no training): :func:`emzoo.finetune` uses it, and :mod:`emzoo.training.transfer` re-exports it
beside the pipelines that call :func:`emzoo.finetune`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from emzoo.blocks import output_activation

__all__ = ["replace_head", "freeze_encoder", "encoder_layers", "weight_shapes"]


def weight_shapes(layer_or_model: Any) -> list[tuple[int, ...]]:
    """The shapes of a layer's (or model's) weights, in order: equal lists mean the weights can be copied across.

    Examples
    --------
    >>> import emzoo
    >>> weight_shapes(emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16)))[0]
    (3, 3, 1, 4)
    """
    return [tuple(int(d) for d in w.shape) for w in layer_or_model.weights]


_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _producer(tensor: Any) -> Any:
    return tensor._keras_history.operation


def _node_inputs(layer: Any) -> list[Any]:
    node = layer._inbound_nodes[0]
    return list(node.input_tensors)


def _consumers(model: keras.Model, layer: Any) -> int:
    """How many layers of ``model`` read ``layer``'s output."""
    count = 0
    for other in model.layers:
        if other is layer or not getattr(other, "_inbound_nodes", None):
            continue
        count += sum(_producer(t) is layer for t in _node_inputs(other))
    return count


def _swap_head(model: keras.Model, num_classes: int) -> keras.Model | None:
    """Graph surgery on single-output models ending in a conv (optionally followed by an activation layer)."""
    if len(model.outputs) != 1:
        return None
    last = _producer(model.outputs[0])
    act_layer = None
    if isinstance(last, keras.layers.Activation):
        act_layer, last = last, _producer(_node_inputs(last)[0])
        if _consumers(model, last) != 1:
            return None
    if not isinstance(last, _CONV) or len(last._inbound_nodes) != 1:
        return None
    config = last.get_config()
    config["filters"] = num_classes
    if act_layer is None and config.get("activation") in ("sigmoid", "softmax"):
        config["activation"] = output_activation(num_classes)
    x = last.__class__.from_config(config)(_node_inputs(last)[0])
    if act_layer is not None:
        act_config = act_layer.get_config()
        if act_config.get("activation") in ("sigmoid", "softmax"):
            act_config["activation"] = output_activation(num_classes)
        x = act_layer.__class__.from_config(act_config)(x)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, x, name=model.name)


def _rebuild(model: keras.Model, num_classes: int, entry: str | None,
             build_kwargs: dict[str, Any] | None) -> keras.Model:
    from emzoo.registry import build, list_models

    entry = entry or (model.name if model.name in list_models() else None)
    if entry is None:
        raise ValueError(f"cannot replace the head of {model.name!r}: its output is not a final convolution and it is "
                         "not a zoo entry; pass entry=<name> (and build_kwargs=) so it can be rebuilt.")
    new = build(entry, input_shape=tuple(model.input_shape[1:]), num_classes=num_classes, **(build_kwargs or {}))
    old = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        src = old.get(layer.name)
        if src is None or not layer.weights:
            continue
        if weight_shapes(src) == weight_shapes(layer):
            layer.set_weights(src.get_weights())
    return new


def replace_head(
    model: keras.Model, num_classes: int, *, entry: str | None = None, build_kwargs: dict[str, Any] | None = None
) -> keras.Model:
    """A model with a fresh ``num_classes``-channel head on the same (shared) body.

    Parameters
    ----------
    model : keras.Model
        A functional model (every zoo entry is one).
    num_classes : int
        New class count: 1 gives a sigmoid channel, more a softmax.
    entry : str, optional
        Registry entry to rebuild from when the head cannot be swapped in place (defaults to ``model.name``).
    build_kwargs : dict, optional
        Builder overrides the model was built with (only for the rebuild path).

    Returns
    -------
    keras.Model
        The new model (same name). On the swap path its body layers *are* the input model's layers.

    Examples
    --------
    >>> import emzoo
    >>> base = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    >>> replace_head(base, 3).output_shape
    (None, 32, 32, 3)
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    swapped = _swap_head(model, num_classes)
    return swapped if swapped is not None else _rebuild(model, num_classes, entry, build_kwargs)


def _ancestors(tensor: Any, seen: dict[int, Any]) -> None:
    stack = [tensor]
    while stack:
        layer = _producer(stack.pop())
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen[id(layer)] = layer
        stack.extend(_node_inputs(layer))


def encoder_layers(model: keras.Model) -> list[str]:
    """Names of the layers that run before the deepest downsampling of ``model`` (its encoder).

    The deepest downsampling is the first tensor, in graph order, with the smallest spatial size; the encoder is
    every layer it depends on (the pooling that produces it included).

    Raises
    ------
    ValueError
        If the model never downsamples (no encoder to find) or its spatial sizes are not static.

    Examples
    --------
    >>> import emzoo
    >>> names = encoder_layers(emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16)))
    >>> names[:2], "head_out" in names
    (['enc1_conv1', 'enc1_conv1_act'], False)
    """
    rank = len(model.input_shape)
    spatial = model.input_shape[1:-1]
    if None in spatial:
        raise ValueError(f"model {model.name!r} has no static input size {model.input_shape}; build it at a fixed "
                         "size or name the encoder layers explicitly.")
    best, best_size = None, int(np.prod(spatial))
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or not layer._inbound_nodes:
            continue
        for out in layer._inbound_nodes[0].output_tensors:
            shape = tuple(out.shape)
            if len(shape) == rank and None not in shape[1:-1] and int(np.prod(shape[1:-1])) < best_size:
                best, best_size = out, int(np.prod(shape[1:-1]))
    if best is None:
        raise ValueError(f"model {model.name!r} never downsamples, so it has no encoder to freeze; pass the layer "
                         "names to freeze explicitly.")
    seen: dict[int, Any] = {}
    _ancestors(best, seen)
    order = {id(layer): i for i, layer in enumerate(model.layers)}
    return [layer.name for layer in sorted(seen.values(), key=lambda la: order.get(id(la), 0))]


def freeze_encoder(model: keras.Model, layers: Sequence[str] | None = None) -> list[str]:
    """Freeze the encoder (``trainable = False``; frozen BatchNorm layers also switch to inference statistics).

    Parameters
    ----------
    model : keras.Model
        Model to modify in place (re-``compile`` it afterwards).
    layers : sequence of str, optional
        Names or name prefixes to freeze; default :func:`encoder_layers`.

    Returns
    -------
    list of str
        Names of the frozen layers.

    Examples
    --------
    >>> import emzoo
    >>> model = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    >>> frozen = freeze_encoder(model)
    >>> model.get_layer("enc1_conv1").trainable, model.get_layer("head_out").trainable
    (False, True)
    """
    if layers is None:
        names = set(encoder_layers(model))
    else:
        prefixes = tuple(layers)
        names = {layer.name for layer in model.layers if layer.name.startswith(prefixes)}
        if not names:
            raise ValueError(f"no layer of {model.name!r} matches {list(prefixes)}; see [l.name for l in "
                             "model.layers] for the names.")
    frozen = []
    for layer in model.layers:
        if layer.name in names and layer.weights:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen
