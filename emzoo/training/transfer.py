"""Transfer learning: a new head for another class count, a frozen encoder, and Mekuč et al.'s binary → multi-class.

- :func:`replace_head` and :func:`freeze_encoder` (re-exported from :mod:`emzoo.training.heads`, which describes
  them): a new head, a frozen encoder.
- :func:`binary_to_multiclass` is the HighRes3DZMNet pipeline (``TRAINING.md`` §4.1): train "any compartment vs
  background", then transfer all weights but the last layer to the multi-class model and train that.

The graph surgery (:func:`replace_head`, :func:`freeze_encoder`, :func:`encoder_layers`) lives in
:mod:`emzoo.training.heads`, below :func:`emzoo.finetune` (which uses it); the pipeline here sits above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from emzoo.training.heads import encoder_layers, freeze_encoder, replace_head

__all__ = ["replace_head", "freeze_encoder", "encoder_layers", "binary_to_multiclass"]


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
