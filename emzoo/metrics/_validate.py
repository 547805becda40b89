"""Input checks shared by every metric: one place, one wording (skimage's ``check_shape_equality`` idea).

Each check raises a standard exception with a one-line message that says what was wrong, what was received and
what to do instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "as_array",
    "check_same_shape",
    "as_probability",
    "as_labels",
    "check_ndim",
    "threshold_float32",
]


def _preview(values: np.ndarray, limit: int = 8) -> str:
    """Print at most ``limit`` unique values, e.g. ``[0, 1, 2, ...] (17 values)``."""
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:limit].tolist())
    return f"[{shown}]" if values.size <= limit else f"[{shown}, ...] ({values.size} values)"


def as_array(data: Any, name: str) -> np.ndarray:
    """``np.asarray`` plus the checks every metric needs: not empty, numeric dtype."""
    array = np.asarray(data)
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass a non-empty image or stack.")
    if array.dtype.kind not in "buif":
        raise TypeError(f"{name} must be a numeric or boolean array, got dtype {array.dtype}.")
    return array


def check_same_shape(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` naming both shapes when they differ."""
    if first.shape != second.shape:
        raise ValueError(
            f"shape mismatch: {names[0]} has shape {first.shape} but {names[1]} has shape {second.shape}; "
            "pass arrays of the same shape (2D (Y, X) or a (Z, Y, X) stack)."
        )


def check_ndim(array: np.ndarray, name: str, ndims: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``array.ndim`` is one of ``ndims``."""
    if array.ndim not in ndims:
        wanted = " or ".join(f"{n}D" for n in ndims)
        raise ValueError(
            f"{name} must be {wanted} ((Y, X) or a (Z, Y, X) stack of 2D slices), got shape {array.shape}; "
            "squeeze channel axes first."
        )


def as_probability(data: Any, name: str) -> np.ndarray:
    """Validate a probability map or binary mask.

    Returns a boolean array unchanged, an integer array with values in {0, 1} as ``bool``, and a float array
    as ``float32`` (the precision Fiji and EM-stellar compare thresholds in; see :func:`threshold_float32`).
    """
    array = as_array(data, name)
    kind = array.dtype.kind
    if kind == "b":
        return array
    if kind in "ui":
        low, high = array.min(), array.max()
        if low < 0 or high > 1:
            raise ValueError(
                f"{name} holds integer values {_preview(np.unique(array))}, not a binary mask or "
                "probabilities; "
                "pass `labels > 0` for a label image, or `image.astype(np.float32) / 255` for an 8-bit "
                "probability map."
            )
        return array.astype(bool)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise ValueError(
            f"{name} contains {bad} NaN/Inf value(s); fix the model output (or np.nan_to_num it) "
            "before scoring."
        )
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{name} has values outside [0, 1] (min {low:g}, max {high:g}); pass probabilities: apply a "
            "sigmoid to logits, or divide an 8-bit map as `image.astype(np.float32) / 255`."
        )
    return array.astype(np.float32, copy=False)


def as_labels(data: Any, name: str) -> np.ndarray:
    """Validate a label image: integer (or boolean) dtype, no negative labels."""
    array = as_array(data, name)
    if array.dtype.kind == "f":
        raise TypeError(
            f"{name} must hold integer labels, got dtype {array.dtype}; binarise probabilities first "
            "(e.g. `skimage.measure.label(prob > 0.5)`) or cast integral floats with `.astype(int)`."
        )
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "i" and array.min() < 0:
        raise ValueError(
            f"{name} has negative labels (min {int(array.min())}); relabel to non-negative integers "
            "(e.g. skimage.segmentation.relabel_sequential)."
        )
    return array


def threshold_float32(threshold: float) -> np.float32:
    """The float32 ``c`` for which ``x > c`` equals the float64 comparison ``float(x) > threshold``.

    Fiji compares float32 pixel values with float64 thresholds. NumPy 2 would round a Python float threshold
    to float32 (NEP 50), which flips pixels lying exactly on it (k = 51, 102, 153 of an 8-bit map at 0.2,
    0.4, 0.6).
    The largest float32 not above ``threshold`` gives the float64 result without a float64 copy of the image.

    Examples
    --------
    >>> x = np.float32(51) / np.float32(255)
    >>> bool(x > np.float32(0.2)), bool(x > threshold_float32(0.2))
    (False, True)
    """
    value = float(threshold)
    if not np.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
    candidate = np.float32(value)
    if float(candidate) > value:
        candidate = np.nextafter(candidate, np.float32(-np.inf))
    return np.float32(candidate)
