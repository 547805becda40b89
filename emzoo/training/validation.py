"""Validation during fine-tuning: whole-image scores, foreground fractions, and the collapse check.

Validation runs on whole images, un-augmented, normalised with the *training* statistics (EM-stellar bugs 2 and 3
fixed), through a copy of the model with a free (or the image's) input size whose weights are synced before each
run. A model that predicts (almost) one class everywhere although its labels hold both has *collapsed*:
:func:`collapse_message` says so and what to try, and :class:`CollapseWarning` carries it.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from emzoo._reshape import free_input_shape
from emzoo.inference.postprocess import apply_postprocess
from emzoo.training.data import PatchDataset, TrainingVolume
from emzoo.training.evaluate import at_input_shape, predict_whole, score

__all__ = ["Validator", "CollapseWarning", "collapse_message", "window_metrics", "free_copy",
           "foreground_fractions"]


def _divisor(entry: str | None, ndim: int) -> tuple[int, ...]:
    if entry is not None:
        from emzoo.registry import get_entry

        div = get_entry(entry).info.divisor
        if div:
            return tuple(div)
    return (1,) * ndim


def free_copy(model: keras.Model, mode: str, entry: str | None, build_kwargs: dict[str, Any]) -> keras.Model | None:
    """The model with a free spatial input size (the frames of a multi-frame model stay), or None.

    ``mode`` is the model's kind in training's spelling (it follows from the model; kept for callers).
    """
    try:
        return at_input_shape(model, free_input_shape(model), entry=entry, build_kwargs=build_kwargs)
    except ValueError:
        return None  # architectures with static sizes (CDeep3M multi-frame, net2d3d crops)


def foreground_fractions(labels: np.ndarray, probabilities: np.ndarray,
                         mask: np.ndarray | None = None) -> dict[str, float]:
    """Shares of predicted and labelled foreground (``(N,)`` labels, ``(N, C)`` probabilities; mask > 0 counts)."""
    fg = probabilities[:, -1] > 0.5 if probabilities.shape[-1] <= 2 else probabilities.argmax(-1) > 0
    keep = slice(None) if mask is None else mask > 0
    return {"predicted_fraction": float(np.mean(fg[keep])) if fg[keep].size else 0.0,
            "label_fraction": float(np.mean(labels[keep] > 0)) if labels[keep].size else 0.0}


class Validator:
    """Whole-image validation with a copy of the model at a free (or the image's) size, weights synced each time."""

    def __init__(self, volumes: list[TrainingVolume], mode: str, entry: str | None,
                 build_kwargs: dict[str, Any], postprocess: dict[str, Any] | None = None) -> None:
        self.volumes = volumes
        #: The object-length prior applied to each prediction before scoring (:mod:`emzoo.inference.postprocess`).
        self.postprocess = postprocess
        self.mode = mode
        self.entry = entry
        self.build_kwargs = build_kwargs
        self.copies: dict[Any, keras.Model] = {}
        #: (raw, foreground probability, labels) of the first volume's middle slice at the last call: the picture a
        #: preset's card shows (``save_preset(cover=...)``); None until called or for odd shapes.
        self.cover: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.labels = np.concatenate([v.labels.ravel() for v in volumes])
        masks = [v.weights for v in volumes]
        self.mask = None if all(m is None for m in masks) else np.concatenate(
            [(np.ones(v.labels.shape) if m is None else m).ravel() for v, m in zip(volumes, masks, strict=True)])

    def _copy(self, model: keras.Model, volume: TrainingVolume) -> keras.Model:
        if "free" not in self.copies:
            self.copies["free"] = free_copy(model, self.mode, self.entry, self.build_kwargs)
        if self.copies["free"] is not None:
            return self.copies["free"]
        # Sizes fixed by the architecture (CDeep3M's multi-frame squeeze): one copy per image size.
        shape = tuple(model.input_shape[1:])
        div = _divisor(self.entry, len(shape) - 1)
        spatial = volume.raw.shape if self.mode == "3d" else volume.raw.shape[1:]
        sized = tuple(-(-n // d) * d for n, d in zip(spatial, div[-len(spatial):], strict=True))
        target = (*sized, shape[-1]) if self.mode != "multiframe" else (shape[0], *sized, shape[-1])
        if target not in self.copies:
            try:
                self.copies[target] = at_input_shape(model, target, entry=self.entry, build_kwargs=self.build_kwargs)
            except ValueError:
                self.copies[target] = model  # tiled at the training size by emzoo.predict
        return self.copies[target]

    def __call__(self, model: keras.Model) -> dict[str, float]:
        weights = model.get_weights()
        probs = []
        synced: set[int] = set()
        for vol in self.volumes:
            copy = self._copy(model, vol)
            if copy is not model and id(copy) not in synced:
                copy.set_weights(weights)
                synced.add(id(copy))
            probs.append(apply_postprocess(predict_whole(copy, vol.raw, mode=self.mode), self.postprocess))
        self.cover = _middle_slice(self.volumes[0], probs[0])
        flat = np.concatenate([p.reshape(-1, p.shape[-1]) for p in probs])
        metrics = score(self.labels, flat, mask=self.mask)
        metrics.update(foreground_fractions(self.labels, flat, self.mask))
        return metrics


def _middle_slice(volume: TrainingVolume, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The middle slice of a volume with its foreground probability (the last of 1-2 channels, else 1 - background)."""
    raw, labels = np.asarray(volume.raw), np.asarray(volume.labels)
    fg = prob[..., -1] if prob.shape[-1] <= 2 else 1.0 - prob[..., 0]
    if raw.ndim == 3 and fg.ndim == 3 and labels.ndim == 3:
        mid = raw.shape[0] // 2
        raw, fg, labels = raw[mid], fg[mid], labels[mid]
    if raw.ndim != 2 or fg.shape != raw.shape or labels.shape != raw.shape:
        return None
    return raw, fg.astype(np.float32), labels


class CollapseWarning(UserWarning):
    """A model predicts (almost) one class everywhere although its labels hold both."""


def window_metrics(model: keras.Model, windows: PatchDataset, n: int) -> dict[str, float]:
    """Scores and foreground fractions of the model on ``n`` un-augmented training windows."""
    labels, probs = [], []
    for i in range(min(n, len(windows))):
        x, y = windows[i]
        y = y[0] if isinstance(y, (list, tuple)) else y
        p = model.predict_on_batch(x)
        p = p[0] if isinstance(p, (list, tuple)) else p
        p = np.asarray(keras.ops.convert_to_numpy(p), np.float32)
        labels.append(np.asarray(y)[..., 0].reshape(-1))
        probs.append(p.reshape(-1, p.shape[-1]))
    lab, prob = np.concatenate(labels), np.concatenate(probs)
    bad = int((~np.isfinite(prob)).sum())
    if bad:
        raise RuntimeError(f"the trained model predicts {bad} NaN/inf values on {len(labels)} un-augmented training "
                           "window(s); no preset was written. Lower the learning rate, or train in float32 "
                           "(mixed_precision=False).")
    metrics = score(lab, prob)
    metrics.update(foreground_fractions(lab, prob))
    return metrics


def collapse_message(metrics: dict[str, float]) -> str | None:
    """Why a model has collapsed to one class on data whose labels hold both, or None when it has not.

    Collapsed: the labels hold foreground, and the model finds almost none of it (F1 < 0.05), predicts under a
    tenth of the labelled foreground, or predicts foreground almost everywhere (under a tenth of the labelled
    background left).

    Examples
    --------
    >>> collapse_message({"f1": 0.0, "predicted_fraction": 0.0, "label_fraction": 0.08}) is not None
    True
    >>> collapse_message({"f1": 0.8, "predicted_fraction": 0.07, "label_fraction": 0.08}) is None
    True
    """
    true, pred, f1 = metrics.get("label_fraction"), metrics.get("predicted_fraction"), metrics.get("f1")
    if true is None or pred is None or not 0.0 < true < 1.0:
        return None
    if pred < 0.1 * true or (f1 is not None and f1 < 0.05 and pred <= true):
        what = f"predicts {100 * pred:.2f} % foreground where the labels have {100 * true:.1f} % (F1 {f1:.3f})"
    elif (1.0 - pred) < 0.1 * (1.0 - true) or (f1 is not None and f1 < 0.05):
        what = f"predicts {100 * pred:.1f} % foreground where the labels have {100 * true:.1f} % (F1 {f1:.3f})"
    else:
        return None
    return (f"the model has collapsed: it {what}. Try: more steps, sampler='foreground', loss='bce_dice', a "
            "learning rate 3-10x lower (or higher if the loss did not move), or the default recipe "
            "(recipe=None).")
