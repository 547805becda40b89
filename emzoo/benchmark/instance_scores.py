"""Instance (object-level) columns of the leaderboard: objects decoded from the prediction, scored against the
ground-truth objects.

Predicted objects come from :func:`emzoo.inference.instances.instances` (``"cc"`` by default); ground-truth objects
are the label image itself when it holds more than two values (instance labels), else the connected components
(face connectivity) of its foreground. A (Z, Y, X) stack is labelled slice by slice (each slice's objects are its
own, as in EM-stellar's per-slice protocol and in datasets whose test slices come from different stacks) unless
``volume=True``; the scores are then computed once over the whole stack.

Columns (:data:`INSTANCE_COLUMNS`):

- ``inst_f1``: F1 of objects matched one to one at IoU > 0.5 (:func:`emzoo.metrics.matching_scores`);
- ``inst_iou``: the mean IoU of those matched pairs;
- ``are``: scikit-image's adapted Rand error over the ground-truth object voxels (lower is better);
- ``vi_split`` / ``vi_merge``: the two halves of the variation of information in bits, background being one more
  segment on both sides (lower is better).

Empty ground truth (no object anywhere): ``inst_f1`` is 1.0 when the prediction has no object either and 0.0
otherwise; ``inst_iou`` is NaN (no matched pair); ``are`` is NaN (it is defined over ground-truth object voxels, and
there are none); ``vi_split`` / ``vi_merge`` are defined as usual (``vi_merge`` is 0). No NumPy warning is raised.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["INSTANCE_COLUMNS", "score_instances", "truth_instances"]

INSTANCE_COLUMNS = ("inst_f1", "inst_iou", "are", "vi_split", "vi_merge")


def _per_slice(image: np.ndarray, label: Any, volume: bool) -> np.ndarray:
    """``label(image)``, slice by slice for a stack (ids offset so that they stay unique), in uint32."""
    if image.ndim == 2 or volume:
        return np.asarray(label(image), np.uint32)
    out = np.zeros(image.shape, np.uint32)
    offset = 0
    for z in range(image.shape[0]):
        ids = np.asarray(label(image[z]), np.uint32)
        out[z] = np.where(ids > 0, ids + np.uint32(offset), 0)
        offset += int(ids.max())
    return out


def truth_instances(labels: Any, *, volume: bool = False) -> np.ndarray:
    """Ground-truth objects: the labels as they are if they hold more than two values, else connected components.

    Examples
    --------
    >>> truth_instances(np.array([[1, 1, 0, 1]])).tolist()
    [[1, 1, 0, 2]]
    >>> truth_instances(np.array([[3, 3, 0, 7]])).tolist()
    [[3, 3, 0, 7]]
    """
    from skimage.measure import label

    array = np.asarray(labels)
    if np.unique(array).size > 2:
        return array.astype(np.uint32)
    return _per_slice(array > 0, lambda m: label(m, connectivity=1), volume)


def score_instances(labels: Any, prob: Any, *, method: str = "cc", threshold: float = 0.5, objects: str = "foreground",
                    volume: bool = False, min_size: int = 0) -> dict[str, float]:
    """The instance columns of one prediction (see the module docstring for their definitions).

    Parameters
    ----------
    labels : array_like
        Ground truth: binary (objects = connected components) or instance labels.
    prob : array_like
        Foreground probability, same shape.
    method : {"cc", "distance_ws", "boundary_ws"}
        How objects are decoded from ``prob`` (:func:`~emzoo.inference.instances.instances`).
    threshold : float
        Its threshold.
    objects : {"foreground", "background"}
        ``"background"``: the labels mark boundaries and the objects are the regions between them; the
        ground truth is then ``labels == 0`` and ``"cc"`` / ``"distance_ws"`` decode ``1 - prob``
        (``"boundary_ws"`` takes the boundary map ``prob`` as it is).
    volume : bool
        Label a (Z, Y, X) stack in 3D instead of slice by slice.
    min_size : int
        Predicted objects of fewer pixels (voxels with ``volume``) are dropped before matching (0 keeps all); the
        ground truth is kept as it is.

    Returns
    -------
    dict
        ``{"inst_f1", "inst_iou", "are", "vi_split", "vi_merge"}`` as floats.

    Examples
    --------
    >>> gt = np.zeros((8, 8), np.uint8); gt[1:3, 1:4] = 1; gt[5:7, 2:7] = 1
    >>> s = score_instances(gt, gt * 0.9)
    >>> s["inst_f1"], s["inst_iou"], s["are"]
    (1.0, 1.0, 0.0)
    """
    from emzoo.inference.instances import instances
    from emzoo.metrics import adapted_rand_error, matching_scores, variation_of_information

    truth = np.asarray(labels)
    prob = np.asarray(prob, np.float32)
    if objects == "background":
        truth = (truth == 0).astype(np.uint8)
        if method != "boundary_ws":
            prob = 1 - prob
    true_ids = truth_instances(truth, volume=volume)
    test_ids = _per_slice(prob, lambda p: instances(p, method, threshold=threshold, min_size=min_size), volume)
    match = matching_scores(true_ids, test_ids, iou_threshold=0.5)
    if true_ids.any():
        are = adapted_rand_error(true_ids, test_ids).error
    else:
        are = math.nan  # defined over ground-truth object voxels; there are none (skimage would divide by zero)
    vi = variation_of_information(true_ids, test_ids)
    return {"inst_f1": float(match.f1), "inst_iou": float(match.mean_matched_iou), "are": float(are),
            "vi_split": float(vi.split), "vi_merge": float(vi.merge)}
