"""Segmentation losses of the zoo's source papers, written with ``keras.ops`` only (every Keras backend).

Formulas: ``TRAINING.md`` §2. Conventions shared by every function here:

- ``y_pred`` holds probabilities (every zoo entry ends in a sigmoid or softmax), channels last. One channel means a
  sigmoid (binary) output; C > 1 channels a softmax over C classes.
- ``y_true`` is either the class index map with one channel (0/1 for binary, 0..C-1 for C classes) or, for C > 1,
  a one-hot map with C channels.
- ``weights`` (optional) is a per-pixel map with one channel, broadcast over the classes. 0 ignores a pixel
  (HighRes3DZMNet's artefact and annotation-border masks); other values weight it (Guay's error-weight volumes).
- Sums run over every pixel of the batch (EM-stellar's "Σ over the pixels of a batch"). Where a paper sums and
  Keras averages (BCE, focal, cross-entropy) the mean is used: it only rescales the loss.

:class:`PackedLoss` adapts any of them to ``model.compile``: Keras passes one ``y_true`` tensor, so a weight map
travels as a second channel after the labels (``concat([labels, weights], -1)``) and is unpacked there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

__all__ = [
    "binary_crossentropy",
    "balanced_softmax_crossentropy",
    "jaccard_log_loss",
    "focal_loss",
    "dice_loss",
    "bce_dice_loss",
    "masked_dice_loss",
    "weighted_crossentropy",
    "multi_output_weighted_loss",
    "LOSSES",
    "get_loss",
    "PackedLoss",
]

_EPS = 1e-7


def _as_float(x: Any) -> Any:
    return ops.cast(x, "float32")


def _probabilities(y_pred: Any) -> Any:
    """``(..., C)`` class probabilities, clipped away from 0 and 1; a sigmoid's one channel becomes [1 - p, p]."""
    p = ops.clip(_as_float(y_pred), _EPS, 1.0 - _EPS)
    if p.shape[-1] == 1:
        p = ops.concatenate([1.0 - p, p], axis=-1)
    return p


def _one_hot(y_true: Any, num_classes: int) -> Any:
    """One-hot ``(..., C)`` from a one-channel index map (a C-channel map is taken as already one-hot)."""
    if y_true.shape[-1] == num_classes and num_classes > 1 and y_true.shape[-1] != 1:
        return _as_float(y_true)
    index = ops.cast(ops.round(_as_float(y_true[..., 0])), "int32")
    return ops.one_hot(index, num_classes, dtype="float32")


def _binary(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    if y_pred.shape[-1] != 1:
        raise ValueError(
            f"this loss is binary and needs a one-channel sigmoid output, got {y_pred.shape[-1]} channels; use "
            "'balanced_ce' or 'dice' for softmax outputs."
        )
    return _as_float(y_true), ops.clip(_as_float(y_pred), _EPS, 1.0 - _EPS)


def _weighted_mean(values: Any, weights: Any | None) -> Any:
    if weights is None:
        return ops.mean(values)
    w = _as_float(weights)
    return ops.sum(values * w) / ops.maximum(ops.sum(w), _EPS)


def binary_crossentropy(y_true: Any, y_pred: Any, *, weights: Any | None = None) -> Any:
    """Binary cross-entropy, averaged over the pixels of the batch (EM-stellar eq. 1).

    ``-mean[g log p + (1 - g) log(1 - p)]``; with ``weights`` the mean is weighted.

    Parameters
    ----------
    y_true : tensor
        ``(..., 1)`` labels in {0, 1}.
    y_pred : tensor
        ``(..., 1)`` sigmoid probabilities.
    weights : tensor, optional
        ``(..., 1)`` per-pixel weights (0 ignores a pixel).

    Returns
    -------
    scalar tensor

    Examples
    --------
    >>> import numpy as np
    >>> round(float(binary_crossentropy(np.array([[1.0]]), np.array([[0.5]]))), 4)
    0.6931
    """
    g, p = _binary(y_true, y_pred)
    values = -(g * ops.log(p) + (1.0 - g) * ops.log(1.0 - p))
    return _weighted_mean(values, weights)


def balanced_softmax_crossentropy(y_true: Any, y_pred: Any, *, weights: Any | None = None) -> Any:
    """CDeep3M's class-balanced cross-entropy: per-batch class weights ``w_c = min_k n_k / n_c``.

    The rarest class of the batch gets weight 1, a class n times more frequent gets 1/n (``TRAINING.md`` §3.4). The
    weights are constants of the batch (no gradient flows through the counts). When a class is absent from the batch
    (Caffe aborts there) the plain, unweighted cross-entropy is used. The result is the mean over pixels of
    ``w_{y_i} * CE_i``. A one-channel sigmoid output is treated as the two classes [1 - p, p].

    Parameters
    ----------
    y_true : tensor
        ``(..., 1)`` class indices or ``(..., C)`` one-hot.
    y_pred : tensor
        ``(..., C)`` softmax probabilities (or ``(..., 1)`` sigmoid).
    weights : tensor, optional
        ``(..., 1)`` extra per-pixel weights (0 ignores a pixel, also in the class counts).

    Returns
    -------
    scalar tensor

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[0], [0], [0], [1]], "float32")
    >>> p = np.array([[0.9, 0.1]] * 4, "float32")
    >>> round(float(balanced_softmax_crossentropy(y, p)), 4)  # (3 * 0.1054 / 3 + 2.3026) / 4
    0.602
    """
    p = _probabilities(y_pred)
    num_classes = p.shape[-1]
    onehot = _one_hot(y_true, num_classes)
    ce = -ops.sum(onehot * ops.log(p), axis=-1)
    pixel_w = None if weights is None else _as_float(weights)[..., 0]
    counted = onehot if pixel_w is None else onehot * pixel_w[..., None]
    counts = ops.sum(ops.reshape(counted, (-1, num_classes)), axis=0)
    present = ops.all(counts > 0)
    class_w = ops.min(counts) / ops.maximum(counts, _EPS)
    class_w = ops.where(present, class_w, ops.ones_like(class_w))
    class_w = ops.stop_gradient(class_w)
    w = ops.sum(onehot * class_w, axis=-1)
    if pixel_w is not None:
        w = w * pixel_w
        return ops.sum(w * ce) / ops.maximum(ops.sum(pixel_w), _EPS)
    return ops.mean(w * ce)


def jaccard_log_loss(y_true: Any, y_pred: Any, *, weights: Any | None = None, smooth: float = 1.0) -> Any:
    """Jaccard log-loss (EM-stellar eq. 3): ``-log[(Σgp + δ) / (Σp + Σg - Σgp + δ)]``, δ = ``smooth`` (1).

    Sums run over the whole batch; ``weights`` multiply each pixel's terms.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(jaccard_log_loss(np.ones((2, 1)), np.ones((2, 1)))), 5)
    0.0
    """
    g, p = _binary(y_true, y_pred)
    w = 1.0 if weights is None else _as_float(weights)
    inter = ops.sum(w * g * p)
    union = ops.sum(w * p) + ops.sum(w * g) - inter
    return -ops.log((inter + smooth) / (union + smooth))


def focal_loss(
    y_true: Any, y_pred: Any, *, weights: Any | None = None, alpha: float = 0.25, gamma: float = 2.0
) -> Any:
    """Binary focal loss (Lin et al.; EM-stellar eq. 4), averaged over pixels.

    ``-mean[α (1-p)^γ g log p + (1-α) p^γ (1-g) log(1-p)]`` with α = 0.25, γ = 2.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(focal_loss(np.array([[1.0]]), np.array([[0.5]]))), 5)  # 0.25 * 0.25 * log 2
    0.04332
    """
    g, p = _binary(y_true, y_pred)
    values = -(
        alpha * ops.power(1.0 - p, gamma) * g * ops.log(p)
        + (1.0 - alpha) * ops.power(p, gamma) * (1.0 - g) * ops.log(1.0 - p)
    )
    return _weighted_mean(values, weights)


def dice_loss(
    y_true: Any, y_pred: Any, *, weights: Any | None = None, smooth: float = 1.0, variant: str = "standard"
) -> Any:
    """Dice loss over the batch.

    ``variant="standard"``: ``1 - (2Σgp + δ) / (Σp + Σg + δ)`` (the recommended default, in [0, 1]).
    ``variant="emstellar"``: EM-stellar eq. 6 as printed, ``-(Σgp + δ) / (Σp + Σg + δ)`` (no factor 2, in
    [-0.5, 0]). For a softmax output the foreground classes (1..C-1) are pooled into the sums.

    Parameters
    ----------
    y_true, y_pred : tensor
        Labels and probabilities (see the module conventions).
    weights : tensor, optional
        ``(..., 1)`` per-pixel weights (0 ignores a pixel).
    smooth : float
        δ.
    variant : {"standard", "emstellar"}

    Examples
    --------
    >>> import numpy as np
    >>> round(float(dice_loss(np.array([[1.0], [0.0]]), np.array([[1.0], [0.0]]), smooth=0.0)), 5)
    0.0
    """
    if variant not in ("standard", "emstellar"):
        raise ValueError(f"unknown Dice variant {variant!r}; choose 'standard' or 'emstellar'.")
    if y_pred.shape[-1] == 1:
        g, p = _binary(y_true, y_pred)
    else:
        p = _probabilities(y_pred)[..., 1:]
        g = _one_hot(y_true, y_pred.shape[-1])[..., 1:]
    w = 1.0 if weights is None else _as_float(weights)
    inter = ops.sum(w * g * p)
    total = ops.sum(w * p) + ops.sum(w * g)
    if variant == "emstellar":
        return -(inter + smooth) / (total + smooth)
    return 1.0 - (2.0 * inter + smooth) / (total + smooth)


def bce_dice_loss(
    y_true: Any, y_pred: Any, *, weights: Any | None = None, smooth: float = 1.0, dice_weight: float = 1.0
) -> Any:
    """Cross-entropy plus ``dice_weight`` × the standard soft Dice loss (the short-run default of emzoo).

    Binary cross-entropy for a sigmoid output, categorical for a softmax one (Dice pools the foreground classes).

    BCE alone is minimised early by predicting background when the foreground is sparse; the Dice term is
    normalised by the foreground's size, so missing it costs the same at 1 % foreground as at 40 %.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(bce_dice_loss(np.array([[1.0], [0.0]]), np.array([[0.5], [0.5]]), smooth=0.0)), 4)
    1.1931
    """
    if y_pred.shape[-1] == 1:
        ce = binary_crossentropy(y_true, y_pred, weights=weights)
    else:
        g, p = _one_hot(y_true, y_pred.shape[-1]), _probabilities(y_pred)
        ce = _weighted_mean(-ops.sum(g * ops.log(p), axis=-1, keepdims=True), weights)
    return ce + dice_weight * dice_loss(y_true, y_pred, weights=weights, smooth=smooth)


def masked_dice_loss(
    y_true: Any, y_pred: Any, *, weights: Any | None = None, variant: str = "mekuc", epsilon: float = 1e-5
) -> Any:
    """Multi-class Dice with a voxel mask, background included (HighRes3DZMNet, ``TRAINING.md`` §4.4).

    ``variant="mekuc"`` (Mekuč eq. 8, pooled over classes and voxels):
    ``1 - 2 Σ_l Σ_n w_n p_ln r_ln / Σ_l Σ_n w_n (p_ln + r_ln)``.
    ``variant="niftynet"`` (NiftyNet's own, per sample and per class, squared denominator):
    ``1 - mean_{b,c} (2 Σ w p g + ε) / (Σ w p² + Σ w g + ε)``.
    A one-channel sigmoid output counts as the two classes [1 - p, p].

    Parameters
    ----------
    y_true : tensor
        ``(N, ..., 1)`` class indices or ``(N, ..., C)`` one-hot.
    y_pred : tensor
        ``(N, ..., C)`` probabilities.
    weights : tensor, optional
        ``(N, ..., 1)`` mask: 0 drops a voxel (artefacts, annotation borders), 1 keeps it. None keeps all.
    variant : {"mekuc", "niftynet"}
    epsilon : float
        NiftyNet's smoothing term (the Mekuč form has none; ``epsilon`` only guards an all-masked batch).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[[0], [1]]], "float32"); p = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
    >>> round(float(masked_dice_loss(y, p)), 5)
    0.0
    """
    if variant not in ("mekuc", "niftynet"):
        raise ValueError(f"unknown masked-Dice variant {variant!r}; choose 'mekuc' or 'niftynet'.")
    p = _probabilities(y_pred) if y_pred.shape[-1] == 1 else _as_float(y_pred)
    r = _one_hot(y_true, p.shape[-1])
    w = ops.ones_like(r[..., :1]) if weights is None else _as_float(weights)
    if variant == "mekuc":
        num = 2.0 * ops.sum(w * p * r)
        den = ops.sum(w * (p + r))
        return 1.0 - num / ops.maximum(den, epsilon)
    axes = tuple(range(1, len(p.shape) - 1))
    num = 2.0 * ops.sum(w * p * r, axis=axes) + epsilon
    den = ops.sum(w * p * p, axis=axes) + ops.sum(w * r, axis=axes) + epsilon
    return 1.0 - ops.mean(num / den)


def weighted_crossentropy(
    y_true: Any, y_pred: Any, *, weights: Any | None = None, floor: float = 0.0, reduction: str = "mean"
) -> Any:
    """Per-voxel weighted categorical cross-entropy (Guay's loss term), ``Σ_v (W_v + floor) CE_v``.

    Parameters
    ----------
    y_true : tensor
        ``(..., 1)`` class indices or ``(..., C)`` one-hot.
    y_pred : tensor
        ``(..., C)`` softmax probabilities.
    weights : tensor, optional
        ``(..., 1)`` error weights W (None: all 1).
    floor : float
        Added to every weight (Guay: 0.01, so zero-weight voxels still count a little).
    reduction : {"mean", "sum"}
        ``"sum"`` is Guay's form (a sum over the window); ``"mean"`` divides by the voxel count (same optimum, a
        learning rate that does not depend on the window size).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(weighted_crossentropy(np.array([[1]]), np.array([[0.5, 0.5]]), reduction="sum")), 4)
    0.6931
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    p = _probabilities(y_pred)
    ce = -ops.sum(_one_hot(y_true, p.shape[-1]) * ops.log(p), axis=-1)
    w = ops.ones_like(ce) if weights is None else _as_float(weights)[..., 0]
    total = ops.sum((w + floor) * ce)
    return total if reduction == "sum" else total / ops.cast(ops.size(ce), "float32")


def multi_output_weighted_loss(
    y_true: Any,
    y_pred_3d: Any,
    y_pred_2d: Any,
    *,
    weights: Any | None = None,
    aux_weight: float = 0.33,
    floor: float = 0.01,
    reduction: str = "sum",
) -> Any:
    """Guay et al.'s 2D-3D loss: ``Σ w·CE(3D) + 0.33·Σ w·CE(2D)``, ``w = W + 0.01`` (``TRAINING.md`` §5.3).

    Both heads are trained against the same label window. With ``model.compile`` the same loss is obtained by
    giving :func:`weighted_crossentropy` (as a :class:`PackedLoss`) to both outputs with ``loss_weights=[1, 0.33]``,
    which is what :mod:`emzoo.training.finetune` does for the ``net2d3d`` recipe.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[0]]); p = np.array([[0.5, 0.5]])
    >>> round(float(multi_output_weighted_loss(y, p, p, floor=0.0)), 4)  # 1.33 * log 2
    0.9219
    """
    main = weighted_crossentropy(y_true, y_pred_3d, weights=weights, floor=floor, reduction=reduction)
    aux = weighted_crossentropy(y_true, y_pred_2d, weights=weights, floor=floor, reduction=reduction)
    return main + aux_weight * aux


# name -> (function, needs a weight map)
LOSSES: dict[str, Callable[..., Any]] = {
    "bce": binary_crossentropy,
    "balanced_ce": balanced_softmax_crossentropy,
    "jaccard": jaccard_log_loss,
    "focal": focal_loss,
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
    "masked_dice": masked_dice_loss,
    "weighted_ce": weighted_crossentropy,
}


def get_loss(name: str) -> Callable[..., Any]:
    """The loss function called ``name`` (one of :data:`LOSSES`).

    Examples
    --------
    >>> get_loss("bce").__name__
    'binary_crossentropy'
    """
    if name not in LOSSES:
        import difflib

        close = difflib.get_close_matches(name, list(LOSSES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown loss {name!r}.{hint} Choose one of {sorted(LOSSES)}.")
    return LOSSES[name]


@keras.saving.register_keras_serializable(package="emzoo")
class PackedLoss(keras.losses.Loss):
    """Adapts a loss of this module to ``model.compile``; a weight map may travel as a second ``y_true`` channel.

    Parameters
    ----------
    loss : str
        A name of :data:`LOSSES`.
    weighted : bool
        ``y_true`` is ``concat([labels, weights], -1)`` (two channels); otherwise it is the labels alone.
    options : dict, optional
        Keyword arguments of the loss (``smooth``, ``variant``, ``floor``...).
    **kwargs
        ``keras.losses.Loss`` arguments (``name``...).

    Examples
    --------
    >>> import numpy as np
    >>> loss = PackedLoss("bce", weighted=True)
    >>> y = np.array([[1.0, 1.0], [0.0, 0.0]], "float32")  # second channel: weights (the 2nd pixel is ignored)
    >>> round(float(loss(y, np.array([[0.5], [0.9]], "float32"))), 4)
    0.6931
    """

    def __init__(self, loss: str = "bce", weighted: bool = False, options: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("name", loss)
        kwargs.setdefault("reduction", None)
        super().__init__(**kwargs)
        self.loss = loss
        self.weighted = bool(weighted)
        self.options = dict(options or {})
        self._fn = get_loss(loss)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        if self.weighted:
            return self._fn(y_true[..., :1], y_pred, weights=y_true[..., 1:2], **self.options)
        return self._fn(y_true, y_pred, **self.options)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"loss": self.loss, "weighted": self.weighted, "options": self.options})
        return config
