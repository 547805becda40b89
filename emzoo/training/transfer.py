"""Transfer learning: a new head for another class count, a frozen encoder, and Mekuč et al.'s binary → multi-class.

- :func:`replace_head` swaps the output convolution(s) for ones with ``num_classes`` channels (sigmoid for 1,
  softmax otherwise). Every other layer, and its weights, is shared with the input model. Models whose output
  feeds other layers (``net2d3d``'s 2D logits feed its 3D pyramid) are rebuilt by their entry instead, copying every
  layer whose weight shapes still match.
- :func:`freeze_encoder` freezes every layer that runs before the model's deepest downsampling (found in the graph, so
  it works for every encoder-decoder family), or the layers named explicitly.
- :func:`binary_to_multiclass` is the HighRes3DZMNet pipeline (``TRAINING.md`` §4.1): train "any compartment vs
  background", then transfer all weights but the last layer to the multi-class model and train that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from emzoo.blocks import output_activation

__all__ = ["replace_head", "freeze_encoder", "encoder_layers", "binary_to_multiclass"]

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
        weights = src.get_weights()
        if [w.shape for w in weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(weights)
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


def binary_to_multiclass(
    model_or_name: Any,
    train: Any,
    val: Any = None,
    *,
    num_classes: int = 3,
    binary_steps: int,
    steps: int,
    binary_classes: int = 2,
    binary_class_probabilities: Sequence[float] | None = (0.2, 0.8),
    out_dir: str | Path | None = None,
    **finetune_kwargs: Any,
) -> tuple[keras.Model, dict[str, Any]]:
    """Mekuč et al.'s transfer: "any compartment vs background" first, then ``num_classes`` from those weights.

    Parameters
    ----------
    model_or_name : str or keras.Model
        Entry name (``"highres3dzmnet"``) or model to start from.
    train, val : data
        Multi-class training (and validation) data, in any form :func:`emzoo.finetune` accepts; the binary stage sees
        ``labels > 0``.
    num_classes : int
        Classes of the final model (background included).
    binary_steps, steps : int
        Steps of the binary and of the multi-class stage.
    binary_classes : int
        Output channels of the binary stage: 2 (softmax, as Mekuč et al.) or 1 (sigmoid).
    binary_class_probabilities : sequence of float, optional
        Window sampling probabilities of background and foreground in the binary stage (UNVERIFIED, proposal
        0.2/0.8); None keeps the recipe's sampler.
    out_dir : path, optional
        The final preset folder; the binary stage is written beside it as ``<out_dir>_binary``.
    **finetune_kwargs
        Passed to both :func:`emzoo.finetune` calls (``seed``, ``batch_size``, ``patch_size``, ``recipe``...).

    Returns
    -------
    model : keras.Model
        The multi-class model.
    history : dict
        ``{"binary": ..., "multiclass": ...}`` histories of the two stages.

    Examples
    --------
    >>> model, hist = binary_to_multiclass("highres3dzmnet", "urocell/", binary_steps=2000,
    ...                                    steps=4000)  # doctest: +SKIP
    """
    from emzoo.training.data import load_pairs
    from emzoo.training.finetune import finetune
    from emzoo.training.sampling import ClassBalancedSampler

    volumes, source = load_pairs(train)
    binary_train = [(v.raw, (v.labels > 0).astype(np.uint8)) + ((v.weights,) if v.weights is not None else ())
                    for v in volumes]
    binary_val = None
    if val is not None:
        val_volumes, _ = load_pairs(val, split="val")
        binary_val = [(v.raw, (v.labels > 0).astype(np.uint8)) + ((v.weights,) if v.weights is not None else ())
                      for v in val_volumes]
    stage1_kwargs = dict(finetune_kwargs)
    if binary_class_probabilities is not None:
        stage1_kwargs["sampler"] = ClassBalancedSampler(list(binary_class_probabilities))
    binary_dir = None if out_dir is None else Path(out_dir).with_name(Path(out_dir).name + "_binary")
    binary_model, binary_history = finetune(model_or_name, binary_train, binary_val, steps=binary_steps,
                                            num_classes=binary_classes, out_dir=binary_dir, **stage1_kwargs)
    multi = replace_head(binary_model, num_classes)
    model, multi_history = finetune(multi, [(v.raw, v.labels) + ((v.weights,) if v.weights is not None else ())
                                            for v in volumes],
                                    None if val is None else [(v.raw, v.labels) for v in val_volumes],
                                    steps=steps, num_classes=num_classes, out_dir=out_dir, **finetune_kwargs)
    multi_history["training_data_name"] = source.name
    return model, {"binary": binary_history, "multiclass": multi_history}
