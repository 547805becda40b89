"""Instance segmentation from probability maps: connected components, distance watershed, boundary watershed.

A semantic map says *which* pixels are mitochondria (or membrane); :func:`instances` says which pixels form *one*
object, as a uint32 label image (0 = background, objects 1..N). Every step is a scikit-image / SciPy function;
this module only chooses the seeds and checks the arguments.

- ``"cc"``: connected components of the foreground ``prob > threshold`` (:func:`emzoo.metrics.binarize`).
- ``"distance_ws"``: the same foreground, split where objects touch: a watershed of the negated Euclidean distance
  transform, seeded by its h-maxima (one seed per "centre" that stands at least ``h`` above the neck joining it to
  another centre).
- ``"boundary_ws"``: ``prob`` is a *boundary* (membrane) map; objects are the regions between boundaries: seeds are
  the connected low-boundary regions (``prob <= threshold``), grown over the boundaries by a watershed of ``prob``.

Examples
--------
>>> import numpy as np
>>> yy, xx = np.mgrid[:32, :48]
>>> discs = ((yy - 16) ** 2 + (xx - 15) ** 2 < 100) | ((yy - 16) ** 2 + (xx - 32) ** 2 < 100)
>>> prob = discs * 0.9  # two touching discs
>>> int(instances(prob, "cc").max()), int(instances(prob, "distance_ws").max())
(1, 2)
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["METHODS", "instances"]

METHODS = ("cc", "distance_ws", "boundary_ws")


def _check_method(method: Any) -> str:
    """``method`` if it is one of :data:`METHODS`, else a ValueError listing them (and the closest spelling)."""
    if isinstance(method, str) and method in METHODS:
        return method
    close = difflib.get_close_matches(str(method), METHODS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    choices = ", ".join(repr(m) for m in METHODS)
    raise ValueError(f"method must be one of {choices}, got {method!r}{hint}")


def _as_prob(prob: Any) -> np.ndarray:
    """``prob`` as a 2D/3D float32 (or bool) array: trailing singleton channel dropped, NaN/Inf and [0, 1] checked."""
    from emzoo.metrics._validate import as_probability

    array = np.asarray(prob)
    # (Y, X, 1) and (Z, Y, X, 1), as predict() returns them for a one-channel model; a (Z, Y, 1) volume one pixel
    # wide is not an EM image, so the trailing 1 of a 3D array is a channel too.
    if array.ndim in (3, 4) and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 4:
        raise ValueError(f"prob must be 2D (Y, X) or 3D (Z, Y, X), optionally with a trailing channel of 1, got shape "
                         f"{array.shape}; pick one class first, e.g. emzoo.inference.foreground(prob).")
    if array.ndim not in (2, 3):
        raise ValueError(f"prob must be 2D (Y, X) or 3D (Z, Y, X), optionally with a trailing channel of 1, got shape "
                         f"{array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"prob holds {bad} NaN/Inf value(s); fix the model output (or np.nan_to_num it) first.")
    return as_probability(array, "prob")


def _check_sampling(sampling: Any, ndim: int) -> tuple[float, ...] | None:
    """None, or one positive finite spacing per axis."""
    if sampling is None:
        return None
    values = np.atleast_1d(np.asarray(sampling, dtype=float)) if not isinstance(sampling, str) else np.array([])
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"sampling must be a positive number or {ndim} of them (one per axis), got {sampling!r}")
    return tuple(float(v) for v in values)


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Objects of fewer than ``min_size`` pixels set to 0 (skimage's ``remove_small_objects``, any version)."""
    from skimage.morphology import remove_small_objects

    if min_size <= 1:
        return labels
    with warnings.catch_warnings():
        # An image holding a single object is legitimate here; skimage warns because it suspects a boolean mask.
        warnings.filterwarnings("ignore", message="Only one label was provided", category=UserWarning)
        try:  # scikit-image >= 0.26 removes sizes <= max_size
            return remove_small_objects(labels, max_size=min_size - 1)
        except TypeError:  # older releases remove sizes < min_size
            return remove_small_objects(labels, min_size=min_size)


def _distance_seeds(foreground: np.ndarray, components: np.ndarray, h: float,
                    sampling: tuple[float, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Distance transform of ``foreground`` and its watershed markers (h-maxima, one per seedless component)."""
    from scipy import ndimage
    from skimage.measure import label
    from skimage.morphology import h_maxima

    distance = ndimage.distance_transform_edt(foreground, sampling=sampling)
    # h-maxima rather than peak_local_max: a ridge or plateau of equal distance (an elongated mitochondrion) is one
    # regional maximum, where min_distance-spaced peaks would cut it into pieces.
    peaks = h_maxima(distance, h).astype(bool) & foreground
    markers = label(peaks, connectivity=foreground.ndim)
    # A component whose centre is less than h deep (a thin or small object) has no h-maximum; it is one object.
    seedless = foreground & ~np.isin(components, np.unique(components[peaks]))
    if seedless.any():
        extra = label(seedless, connectivity=1)
        markers = np.where(seedless, extra + markers.max() * (extra > 0), markers)
    return distance, markers


def instances(
    prob: Any,
    method: str = "cc",
    *,
    threshold: float = 0.5,
    min_size: int = 0,
    h: float = 2.0,
    connectivity: int = 1,
    sampling: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Label the objects of a probability map: uint32 instance labels, 0 = background.

    Parameters
    ----------
    prob : array_like, shape (Y, X) or (Z, Y, X), optionally with a trailing channel of 1
        Probabilities in [0, 1] (or a binary mask), e.g. ``emzoo.inference.foreground(emzoo.predict(...))``:
        the object (foreground) probability for ``"cc"`` and ``"distance_ws"``, the boundary (membrane)
        probability for ``"boundary_ws"``. A (Z, Y, X) stack is labelled in 3D (objects continue across slices);
        label slice by slice to get 2D objects.
    method : {"cc", "distance_ws", "boundary_ws"}
        ``"cc"``: connected components of ``prob > threshold``. ``"distance_ws"``: the same foreground, with
        touching objects split by a seeded watershed of the distance transform. ``"boundary_ws"``: regions
        between boundaries, seeded by the connected components of ``prob <= threshold`` and grown over the
        boundaries by a watershed of ``prob``, so every pixel belongs to an object (until ``min_size`` removes
        some).
    threshold : float
        Strictly between 0 and 1. ``"cc"`` / ``"distance_ws"``: foreground is ``prob > threshold``
        (:func:`emzoo.metrics.binarize`, emzoo's one binarisation rule). ``"boundary_ws"``: seeds are where
        ``prob <= threshold``; lower it (0.2-0.3) when weak gaps in the membranes merge cells.
    min_size : int
        Objects of fewer than ``min_size`` pixels (voxels) become background (0); 0 keeps everything. The
        remaining objects are numbered 1..N without gaps.
    h : float
        ``"distance_ws"`` only: the seed depth. Each seed is a maximum of the distance transform (an object
        "centre") that stands at least ``h`` above the lowest point on the way to any higher centre
        (``skimage.morphology.h_maxima``). Two touching discs of radius r joined by a neck of half-width w are
        split when r - w >= h. Larger values merge more (fewer false splits of irregular objects), smaller ones
        split more. In pixels, or in the units of ``sampling``. Objects thinner than ``h`` keep one seed each.
    connectivity : int
        Neighbourhood of connected components and watershed: 1 (faces; default, so diagonal touches do not merge)
        up to ``prob.ndim`` (faces, edges and corners).
    sampling : float or sequence of float, optional
        ``"distance_ws"`` only: voxel spacing per axis for the distance transform, e.g. ``(6, 1, 1)`` for a stack
        cut 6x thicker than its pixel size (``h`` is then in in-plane pixels). Default: isotropic 1.

    Returns
    -------
    numpy.ndarray of uint32
        Labels, shape of ``prob`` without the channel: 0 = background, objects 1..N (consecutive, by
        ``skimage.segmentation.relabel_sequential``).

    Raises
    ------
    ValueError
        One line naming the argument: an unknown ``method`` (the choices are listed), ``threshold`` not strictly
        between 0 and 1, ``min_size`` not an integer >= 0, ``h`` not a positive number, ``connectivity`` outside
        1..ndim, a bad ``sampling``, ``prob`` not 2D/3D or holding NaN/Inf or values outside [0, 1].

    Examples
    --------
    >>> prob = np.zeros((8, 12)); prob[1:4, 1:4] = 0.9; prob[5:7, 6:11] = 0.8; prob[6, 1] = 0.7
    >>> labels = instances(prob)
    >>> labels.dtype, int(labels.max()), int(instances(prob, min_size=2).max())
    (dtype('uint32'), 3, 2)
    """
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential, watershed

    from emzoo._validate import check_int, check_probability
    from emzoo.metrics import binarize

    method = _check_method(method)
    threshold = check_probability(threshold, "threshold")
    min_size = check_int(min_size, "min_size", minimum=0)
    if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) or not 0 < h < np.inf:
        raise ValueError(f"h must be a positive number (the seed depth, in pixels), got {h!r}")
    array = _as_prob(prob)
    connectivity = check_int(connectivity, "connectivity", minimum=1)
    if connectivity > array.ndim:
        raise ValueError(f"connectivity must be an integer from 1 to {array.ndim} for {array.ndim}D prob, got "
                         f"{connectivity}")
    spacing = _check_sampling(sampling, array.ndim)

    if method == "boundary_ws":
        # Seeds are the pixels that are *not* boundary by the shared rule, so a threshold means the same thing
        # in every method: boundary = prob > threshold.
        markers = label(~binarize(array, threshold), connectivity=connectivity)
        labels = watershed(array.astype(np.float32, copy=False), markers, connectivity=connectivity)
    else:
        foreground = binarize(array, threshold)
        labels = label(foreground, connectivity=connectivity)
        if method == "distance_ws" and labels.max() > 0:
            distance, markers = _distance_seeds(foreground, labels, float(h), spacing)
            labels = watershed(-distance, markers, mask=foreground, connectivity=connectivity)
    labels = _remove_small(labels, min_size)
    return relabel_sequential(labels)[0].astype(np.uint32, copy=False)
