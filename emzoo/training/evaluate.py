"""Validation during training: whole-image prediction, pixel scores, and the per-batch F1 shown in the progress bar.

Whole images are predicted by :func:`emzoo.inference.predict` (one window per image, the model rebuilt with a free
input size) and scored by :func:`emzoo.metrics.pixel_metrics` (pooled over all pixels, binarised by
:func:`emzoo.metrics.binarize` at ``threshold``, default 0.5). Both :func:`score` and :class:`PixelF1` follow the
metrics' empty rule: two empty masks agree perfectly, so their F1 is 1 (never 0, never NaN).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from emzoo._reshape import rebuild_from_config

__all__ = ["PixelF1", "at_input_shape", "predict_whole", "score", "recalibrate_batchnorm"]


@keras.saving.register_keras_serializable(package="emzoo")
class PixelF1(keras.metrics.Metric):
    """Foreground F1 (Dice) of a batch at threshold 0.5; softmax outputs count every class but 0 as foreground.

    Foreground is ``probability > threshold`` (strict, as :func:`emzoo.metrics.binarize`). When neither the labels
    nor the prediction hold any foreground pixel, the F1 is 1 (the empty rule of :func:`emzoo.metrics.pixel_metrics`).

    Parameters
    ----------
    threshold : float
        Probability threshold of a sigmoid output.
    weighted : bool
        ``y_true`` carries a weight/mask channel after the labels; pixels of weight 0 are not counted.
    name : str
        Metric name.

    Examples
    --------
    >>> m = PixelF1()
    >>> m.update_state(np.array([[1.0], [0.0]]), np.array([[0.9], [0.8]]))
    >>> round(float(m.result()), 4)
    0.6667
    """

    def __init__(self, threshold: float = 0.5, weighted: bool = False, name: str = "f1", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.weighted = bool(weighted)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_pred = ops.cast(y_pred, "float32")
        labels = ops.cast(y_true[..., 0], "float32")
        if y_pred.shape[-1] == 1:
            pred = ops.cast(y_pred[..., 0] > self.threshold, "float32")
        else:
            pred = ops.cast(ops.argmax(y_pred, axis=-1) > 0, "float32")
        true = ops.cast(labels > 0.5, "float32")
        keep = ops.cast(y_true[..., 1] > 0, "float32") if self.weighted else ops.ones_like(true)
        self.tp.assign_add(ops.sum(pred * true * keep))
        self.fp.assign_add(ops.sum(pred * (1.0 - true) * keep))
        self.fn.assign_add(ops.sum((1.0 - pred) * true * keep))

    def result(self) -> Any:
        denom = 2.0 * self.tp + self.fp + self.fn
        # Two empty masks agree perfectly: 1, as emzoo.metrics.pixel_metrics.
        return ops.where(denom > 0, 2.0 * self.tp / ops.maximum(denom, 1e-12), 1.0)

    def reset_state(self) -> None:
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"threshold": self.threshold, "weighted": self.weighted})
        return config


def _batchnorm_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            out.append(layer)
        out.extend(_batchnorm_layers(layer))
    return out


def recalibrate_batchnorm(model: keras.Model, batches: Any) -> int:
    """Re-estimate every trainable BatchNorm layer's moving statistics as the plain mean over ``batches``.

    "Precise BN": the moving averages (momentum 0.99) lag behind the weights, by hundreds of steps, so a model
    validated or saved early in training predicts with statistics of older weights; whole-image predictions suffer
    most. Each batch runs forward in training mode with the momentum set so that batch k gets weight 1/(k+1);
    the weights are not changed and the momenta are restored afterwards.

    Parameters
    ----------
    model : keras.Model
    batches : iterable
        Input batches (``x`` arrays, or ``(x, y)`` pairs).

    Returns
    -------
    int
        Number of BatchNorm layers recalibrated (0: nothing to do).

    References
    ----------
    Wu Y, Johnson J. Rethinking "batch" in BatchNorm. arXiv:2105.07576, 2021.

    Examples
    --------
    >>> import emzoo
    >>> model = emzoo.build("unet_bn", input_shape=(32, 32, 1), widths=(4, 8, 16))
    >>> recalibrate_batchnorm(model, [np.zeros((2, 32, 32, 1), "float32")])
    13
    """
    layers = _batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for k, batch in enumerate(batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = k / (k + 1.0)
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


def at_input_shape(model: keras.Model, input_shape: Sequence[int | None], *, entry: str | None = None,
                   build_kwargs: dict[str, Any] | None = None) -> keras.Model:
    """The same model with another input shape (no batch axis), weights copied, not compiled (no optimiser).

    A zoo entry is rebuilt by its builder (which knows the layers that depend on the input size, such as CDeep3M's
    z squeeze); any other functional model from its config. The copy is checked symbolically at a size its free
    axes may take, so a copy that would fail at prediction time is refused here.

    Parameters
    ----------
    model : keras.Model
        A functional model.
    input_shape : sequence of int or None
        New input shape, ``None`` for free axes.
    entry : str, optional
        Registry entry the model was built from.
    build_kwargs : dict, optional
        Builder overrides it was built with.

    Raises
    ------
    ValueError
        When the model cannot be rebuilt at that shape.

    Examples
    --------
    >>> import emzoo
    >>> at_input_shape(emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16)), (None, None, 1)).input_shape
    (None, None, None, 1)
    """
    shape = tuple(input_shape)
    old_shape = tuple(model.input_shape[1:])
    if old_shape == shape:
        return model
    # Free axes are checked at twice the old size (a size the architecture accepted) or 64.
    probe = tuple((2 * o if o else 64) if s is None else s for s, o in zip(shape, old_shape, strict=True))
    errors = []
    for how in (("builder", "config") if entry is not None else ("config",)):
        try:
            rebuilt = _rebuild(model, shape, how, entry, build_kwargs)
            rebuilt.set_weights(model.get_weights())
            rebuilt.compute_output_spec(keras.KerasTensor((1, *probe)))
            return rebuilt
        except Exception as exc:  # noqa: BLE001 - any failure means "not rebuildable this way"
            errors.append(f"{how}: {exc}")
    raise ValueError(f"model {model.name!r} cannot be rebuilt with input shape {shape} ({'; '.join(errors)}).")


def _rebuild(model: keras.Model, shape: tuple[int | None, ...], how: str, entry: str | None,
             build_kwargs: dict[str, Any] | None) -> keras.Model:
    if how == "builder":
        from emzoo.registry import build

        out = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
        rebuilt = build(entry, input_shape=shape, num_classes=int(out[-1]), **(build_kwargs or {}))
        frozen = {layer.name for layer in model.layers if not layer.trainable}
        for layer in rebuilt.layers:
            if layer.name in frozen:
                layer.trainable = False
        return rebuilt
    return rebuild_from_config(model, shape)


def predict_whole(model: keras.Model, raw: np.ndarray, *, mode: str) -> np.ndarray:
    """Probabilities ``(Z, Y, X, C)`` of a normalised ``(Z, Y, X)`` volume, each image (2D, multi-frame) or the
    volume (3D) in one window, through :func:`emzoo.inference.predict` (no halo: the window is the whole image).

    Parameters
    ----------
    model : keras.Model
        Model with a free input size (a fixed-size model is tiled at its size with the default halo instead).
    raw : ndarray
        Normalised raw ``(Z, Y, X)``.
    mode : str
        Model kind, in any spelling of :func:`emzoo.registry.model_kind` (``"2d"``, ``"multiframe"``, ``"3D"``...).

    Returns
    -------
    ndarray
        float32 probabilities, channels last.
    """
    from emzoo.inference import predict
    from emzoo.registry import model_kind

    raw = np.asarray(raw, np.float32)
    free = None in tuple(model.input_shape[1:-1])
    tile = tuple(raw.shape) if model_kind(mode) == "3D" else tuple(raw.shape[1:])
    kwargs: dict[str, Any] = {"tile": tile, "halo": 0} if free else {}
    with warnings.catch_warnings():
        # A window the size of the image has no room for a halo, and needs none.
        warnings.filterwarnings("ignore", message="halo along")
        warnings.filterwarnings("ignore", message=".*analytic receptive field")
        return np.asarray(predict(model, raw, normalization=None, progress=False, **kwargs), np.float32)


def score(labels: np.ndarray, probabilities: np.ndarray, *, mask: np.ndarray | None = None,
          threshold: float = 0.5) -> dict[str, float]:
    """Pooled pixel scores (:func:`emzoo.metrics.pixel_metrics`) of a prediction.

    Parameters
    ----------
    labels : ndarray
        Class indices (0 = background), any shape.
    probabilities : ndarray
        ``labels.shape + (C,)`` probabilities (C = 1: sigmoid).
    mask : ndarray, optional
        ``labels.shape``; pixels where it is 0 are not scored.
    threshold : float
        Foreground is ``probability > threshold`` (:func:`emzoo.metrics.binarize`) of a sigmoid output (C = 1) or
        of class 1 of a 2-class softmax; more classes are binarised by arg-max (foreground = arg-max > 0), which
        takes no threshold (any other value than 0.5 is refused).

    Returns
    -------
    dict
        Foreground-vs-background ``f1``, ``jaccard``, ``accuracy``, ``sensitivity``, ``specificity``, ``ppv``,
        ``npv``... (a softmax's foreground is every arg-max but 0); with more than two classes also ``f1_class{c}``
        (one class vs the rest) and ``mean_f1`` over the foreground classes. Empty rule of
        :func:`emzoo.metrics.pixel_metrics`: with no foreground in the labels nor the prediction, ``f1`` and
        ``jaccard`` are 1 (a class absent from both gets ``f1_class{c}`` = 1).

    Examples
    --------
    >>> score(np.array([[0, 1]]), np.array([[[0.2], [0.9]]]))["f1"]
    1.0
    """
    from emzoo.metrics import binarize, pixel_metrics

    labels = np.asarray(labels)
    prob = np.asarray(probabilities, np.float32)
    arg = None
    if prob.shape[-1] in (1, 2):
        fg = binarize(prob[..., -1], threshold)
    else:
        if float(threshold) != 0.5:
            raise ValueError(f"threshold={threshold!r} applies to sigmoid and 2-class outputs; {prob.shape[-1]} classes "
                             "are binarised by arg-max (leave threshold at 0.5).")
        arg = prob.argmax(-1)
        fg = arg > 0
    # 1D arrays: one pooled item whatever the input layout.
    keep = None if mask is None else np.asarray(mask).ravel()
    out = {k: float(v) for k, v in pixel_metrics(labels.ravel() > 0, fg.ravel(), mask=keep).items()}
    if arg is not None and prob.shape[-1] > 2:
        per = {f"f1_class{c}": float(pixel_metrics(labels.ravel() == c, arg.ravel() == c, mask=keep)["f1"])
               for c in range(1, prob.shape[-1])}
        out.update(per)
        out["mean_f1"] = float(np.nanmean(list(per.values())))
    return out
