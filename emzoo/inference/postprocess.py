"""An object-length prior learned from the training labels: predicted objects far longer than any labelled one go.

A pixel classifier sees a window of its receptive field (107 px for ``unet2d_fb``, 247 px for ``emnet_v1_bn``), so it
cannot tell the middle of a mitochondrion from the middle of a myelin band a micrometre long. The training labels
can: on cdeep3m_mito no labelled mitochondrion is longer than 392 px, while the largest false positives on its val/
slices are 680-1160 px long (``benchmarks/sparse_diagnosis.py``). :func:`length_prior` reads the longest labelled
object; :func:`remove_long_objects` sets the foreground probability of every predicted object more than
:data:`LENGTH_MARGIN` times longer to 0.

The prior is recorded in a preset (``emzoo.json`` ``postprocess``) by :func:`emzoo.finetune` and applied by
:func:`emzoo.predict` unless ``postprocess=False``. There is no prior where the labels do not bound the objects'
size: the longest object spans at least half of the training image (membranes, neuron boundaries: one network), or
the model has more than two classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LENGTH_MARGIN", "length_prior", "remove_long_objects", "apply_postprocess"]

#: Objects up to this many times the longest labelled one are kept: labels at the image border understate lengths.
LENGTH_MARGIN = 1.5
# A longest object spanning at least this share of the image's smaller side is not bounded by the data.
_BOUNDED_SHARE = 0.5


def _objects(mask: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
    """Connected objects of a 2D or 3D mask: the label image and each label's major-axis length (px)."""
    from skimage.measure import label, regionprops

    objects = label(mask)
    return objects, {r.label: float(r.axis_major_length) for r in regionprops(objects)}


def length_prior(labels: Sequence[np.ndarray], *, per_slice: bool) -> dict[str, Any] | None:
    """The object-length prior of binary training labels, or None where they do not bound object length.

    Parameters
    ----------
    labels : sequence of ndarray
        ``(Z, Y, X)`` label volumes; values > 0 are foreground.
    per_slice : bool
        Objects are 2D, one slice at a time (2D and multi-frame models), else 3D.

    Returns
    -------
    dict or None
        ``{"remove_longer_than": L, "longest_training_object": l, "margin": m, "per": "slice"|"volume",
        "objects": n}``, lengths in pixels; None without foreground or when the longest object spans at least half
        of the smaller image side.

    Examples
    --------
    >>> lab = np.zeros((1, 64, 64), np.uint8); lab[0, 10:14, 10:20] = 1
    >>> prior = length_prior([lab], per_slice=True)
    >>> round(prior["longest_training_object"], 1), round(prior["remove_longer_than"], 1)
    (11.5, 17.2)
    >>> lab[0, 30, :] = 1  # a line across the image: lengths are not bounded by these labels
    >>> length_prior([lab], per_slice=True) is None
    True
    """
    longest, count, side = 0.0, 0, np.inf
    for volume in labels:
        volume = np.asarray(volume) > 0
        parts = list(volume) if per_slice else [volume]
        for part in parts:
            side = min(side, *part.shape[-2:]) if per_slice else min(side, *part.shape)
            if not part.any():
                continue
            lengths = _objects(part)[1].values()
            count += len(lengths)
            longest = max(longest, *lengths)
    if count == 0 or longest >= _BOUNDED_SHARE * side:
        return None
    return {"remove_longer_than": LENGTH_MARGIN * longest, "longest_training_object": longest,
            "margin": LENGTH_MARGIN, "per": "slice" if per_slice else "volume", "objects": count}


def remove_long_objects(foreground: np.ndarray, max_length: float, *, per_slice: bool,
                        threshold: float = 0.5) -> tuple[np.ndarray, int]:
    """Foreground probabilities with every object longer than ``max_length`` px set to 0.

    Objects are the connected components of ``foreground > threshold``, in each ``(Y, X)`` slice when ``per_slice``
    (a ``(Y, X)`` image is one slice), else in the whole ``(Z, Y, X)`` volume.

    Returns
    -------
    foreground : ndarray
        A copy, float32.
    removed : int
        How many objects were removed.

    Examples
    --------
    >>> p = np.zeros((32, 32), np.float32); p[2:4, 2:30] = 0.9; p[10:14, 10:14] = 0.8
    >>> q, n = remove_long_objects(p, 10.0, per_slice=True)
    >>> n, float(q[3, 5]), float(q[12, 12])
    (1, 0.0, 0.800000011920929)
    """
    out = np.array(foreground, dtype=np.float32, copy=True)
    if not max_length > 0:
        raise ValueError(f"max_length must be > 0 px, got {max_length}.")
    parts = [out] if out.ndim == 2 or not per_slice else list(out)
    removed = 0
    for part in parts:
        objects, lengths = _objects(part > threshold)
        long_ids = [i for i, length in lengths.items() if length > max_length]
        if long_ids:
            part[np.isin(objects, long_ids)] = 0.0
            removed += len(long_ids)
    return out, removed


def apply_postprocess(prob: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """A prediction ``(..., C)`` (1-channel sigmoid or 2-class softmax) with a recorded prior applied.

    The foreground channel loses the removed objects; a 2-class background channel becomes 1 - foreground there.
    Anything else passes through unchanged.
    """
    if not spec or "remove_longer_than" not in spec or prob.shape[-1] > 2:
        return prob
    per_slice = spec.get("per", "slice") == "slice"
    fg, removed = remove_long_objects(prob[..., -1], float(spec["remove_longer_than"]), per_slice=per_slice)
    if not removed:
        return prob
    out = np.array(prob, copy=True)
    out[..., -1] = fg
    if prob.shape[-1] == 2:
        out[..., 0] = np.where(fg != prob[..., -1], 1.0 - fg, prob[..., 0])
    return out
