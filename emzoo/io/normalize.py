"""Intensity normalisation, as recorded with each model's weights (``emzoo.json`` -> ``"normalization"``).

A spec is a small JSON-able dict, so it travels with the preset and is applied identically at training and inference:

- ``{"method": "zscore", "mean": m, "std": s}``: statistics fitted on the training data;
- ``{"method": "minmax"}``: per-image min-max to [0, 1] (EM-stellar / EM-net: images / 255 is minmax with fixed
  ``"min": 0, "max": 255``);
- ``{"method": "percentile", "low": 1.0, "high": 99.0}``: per-image percentiles to [0, 1], clipped.
- ``None`` or ``{"method": "none"}``: cast to float32 only.

Per-image statistics (minmax without ``min``/``max``, percentile) depend on the whole image, so tiled and blockwise
inference first turn a spec into fixed numbers with :func:`resolve_normalization` (one pass over the data, or a
strided sample for lazy arrays) and then normalise every tile with the same numbers: the result does not depend on
how the image is cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["normalize", "fit_normalization", "resolve_normalization", "METHODS"]

METHODS = ("none", "zscore", "minmax", "percentile")


def _check(spec: dict[str, Any] | None) -> dict[str, Any]:
    if spec is None:
        return {"method": "none"}
    if isinstance(spec, str):
        spec = {"method": spec}
    method = spec.get("method")
    if method not in METHODS:
        raise ValueError(f"unknown normalisation method {method!r}; choose one of {METHODS}")
    return dict(spec)


def fit_normalization(image: Any, method: str = "zscore", **options: float) -> dict[str, Any]:
    """Fit a normalisation spec on training data.

    Parameters
    ----------
    image : array_like
        Training image(s), any shape.
    method : {"zscore", "minmax", "percentile", "none"}
        ``"zscore"`` stores the mean and std; ``"minmax"`` with ``fixed=True`` stores the data range, otherwise each
        image is scaled by its own range at use; ``"percentile"`` takes ``low``/``high`` (default 1/99).

    Returns
    -------
    dict
        The spec to store in the preset and pass to :func:`normalize`.

    Examples
    --------
    >>> fit_normalization(np.array([0.0, 2.0]), "zscore")
    {'method': 'zscore', 'mean': 1.0, 'std': 1.0}
    """
    spec = _check({"method": method})
    data = np.asarray(image, dtype=np.float64)
    if method == "zscore":
        std = float(data.std())
        spec.update(mean=float(data.mean()), std=std if std > 0 else 1.0)
    elif method == "minmax" and options.pop("fixed", False):
        spec.update(min=float(data.min()), max=float(data.max()))
    elif method == "percentile":
        spec.update(low=float(options.pop("low", 1.0)), high=float(options.pop("high", 99.0)))
    spec.update(options)
    return spec


def normalize(image: Any, spec: dict[str, Any] | str | None) -> np.ndarray:
    """Apply a normalisation spec; returns float32.

    Examples
    --------
    >>> normalize(np.array([0, 255], dtype=np.uint8), {"method": "minmax", "min": 0, "max": 255}).tolist()
    [0.0, 1.0]
    """
    spec = _check(spec)
    data = np.asarray(image, dtype=np.float32)
    method = spec["method"]
    if method == "zscore":
        return ((data - np.float32(spec["mean"])) / np.float32(spec["std"])).astype(np.float32)
    if method == "minmax":
        lo = spec.get("min", float(data.min()) if data.size else 0.0)
        hi = spec.get("max", float(data.max()) if data.size else 1.0)
        out = ((data - np.float32(lo)) / np.float32(hi - lo if hi > lo else 1.0)).astype(np.float32)
        # "clip" is set by resolve_normalization for a percentile spec turned into fixed numbers.
        return np.clip(out, 0.0, 1.0) if spec.get("clip") else out
    if method == "percentile":
        lo, hi = np.percentile(data, [spec.get("low", 1.0), spec.get("high", 99.0)])
        out = (data - np.float32(lo)) / np.float32(hi - lo if hi > lo else 1.0)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    return data


# Voxels read for a percentile estimate on a lazy array (a strided sample; the bound keeps memory flat).
_SAMPLE_VOXELS = 1 << 24


def _strided_sample(image: Any, limit: int) -> np.ndarray:
    shape = tuple(int(s) for s in image.shape)
    total = int(np.prod(shape, dtype=np.int64))
    step = 1
    while total > limit and step < max(shape):
        step += 1
        total = int(np.prod([-(-s // step) if s > 1 else 1 for s in shape], dtype=np.int64))
    sample = image[tuple(slice(None, None, step) for _ in shape)]
    return np.asarray(sample.compute() if hasattr(sample, "compute") else sample, dtype=np.float64)


def resolve_normalization(image: Any, spec: dict[str, Any] | str | None) -> dict[str, Any]:
    """Turn a spec into fixed numbers for ``image`` so that every tile of it is normalised identically.

    ``zscore`` and ``none`` (and minmax with ``min``/``max``) are returned unchanged. Per-image ``minmax`` gets the
    image's min and max (a chunked pass for lazy arrays); ``percentile`` becomes a clipped ``minmax`` between the
    image's percentiles. For arrays larger than 2**24 voxels the percentiles come from a regular strided sample,
    which is exact enough for intensity scaling and keeps memory bounded.

    Parameters
    ----------
    image : array_like
        numpy, dask, zarr or h5py array.
    spec : dict, str or None
        A normalisation spec.

    Returns
    -------
    dict
        A spec :func:`normalize` applies without looking at the data.

    Examples
    --------
    >>> resolve_normalization(np.array([2.0, 4.0]), "minmax")
    {'method': 'minmax', 'min': 2.0, 'max': 4.0}
    """
    spec = _check(spec)
    method = spec["method"]
    if method == "minmax" and ("min" not in spec or "max" not in spec):
        if hasattr(image, "compute") and hasattr(image, "dask"):
            import dask

            lo, hi = dask.compute(image.min(), image.max())
        elif isinstance(image, np.ndarray):
            lo, hi = image.min(), image.max()
        else:
            import dask.array as da

            arr = da.from_array(image, chunks="auto")
            lo, hi = da.compute(arr.min(), arr.max())
        return {**spec, "min": float(spec.get("min", lo)), "max": float(spec.get("max", hi))}
    if method == "percentile":
        if isinstance(image, np.ndarray) and image.size <= _SAMPLE_VOXELS:
            data = np.asarray(image, dtype=np.float64)
        else:
            data = _strided_sample(image, _SAMPLE_VOXELS)
        lo, hi = np.percentile(data, [spec.get("low", 1.0), spec.get("high", 99.0)])
        return {"method": "minmax", "min": float(lo), "max": float(hi), "clip": True}
    return spec
