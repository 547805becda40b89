"""Object-level scores of instance label images: one-to-one matching by IoU, then precision, recall and F1.

A true object and a predicted object match when their intersection over union exceeds ``iou_threshold``; each
object matches at most one other, and among several candidates the matching that maximises the total IoU is
taken (``scipy.optimize.linear_sum_assignment``). Then TP = matched pairs, FP = unmatched predicted objects,
FN = unmatched true objects; this is the matching of the cell-tracking / DSB 2018 / StarDist evaluations.
Label 0 is background in both images and is never an object.

Examples
--------
>>> import numpy as np
>>> true = np.array([[1, 1, 0, 2, 2]])
>>> matching_scores(true, true).f1
1.0
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["MatchingScores", "matching_scores"]


class MatchingScores(NamedTuple):
    """Object-level scores at one IoU threshold, and the counts they come from."""

    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    tp: int
    fp: int
    fn: int


def _iou_pairs(table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The overlapping (true, test) object pairs of a count table, their IoU, and the two object counts.

    Only the non-zero entries of the sparse table are visited, so the cost grows with the overlaps, not with
    (true objects) x (test objects).
    """
    true_sizes = np.asarray(table.sum(axis=1)).ravel()
    test_sizes = np.asarray(table.sum(axis=0)).ravel()
    coo = table.tocoo()
    keep = (coo.row > 0) & (coo.col > 0) & (coo.data > 0)  # row / column 0 is background
    rows, cols, overlap = coo.row[keep], coo.col[keep], coo.data[keep].astype(float)
    iou = overlap / (true_sizes[rows] + test_sizes[cols] - overlap)
    n_true = int(np.count_nonzero(true_sizes[1:]))
    n_test = int(np.count_nonzero(test_sizes[1:]))
    return rows, cols, iou, n_true, n_test


def matching_scores(image_true: Any, image_test: Any, *, iou_threshold: float = 0.5) -> MatchingScores:
    """Precision, recall and F1 of matched objects, and their mean IoU, for two instance label images.

    Parameters
    ----------
    image_true, image_test : array_like of int
        Ground-truth and predicted labels (e.g. from :func:`emzoo.instances`), same shape, any dimensionality,
        non-negative; 0 is background. Label ids need not be consecutive, and only ids that occur are objects.
    iou_threshold : float
        Pairs match when IoU > ``iou_threshold``, in [0, 1). From 0.5 up every object has at most one candidate,
        so the matching is unique; below it, the one-to-one matching with the largest total IoU is used.

    Returns
    -------
    MatchingScores
        ``precision`` = TP / (TP + FP), ``recall`` = TP / (TP + FN), ``f1`` = 2 TP / (2 TP + FP + FN),
        ``mean_matched_iou`` (mean IoU of the TP pairs), and the counts ``tp``, ``fp``, ``fn``. As in
        :mod:`emzoo.metrics.pixel`, two images without objects agree perfectly (F1 = 1); a ratio with a zero
        denominator otherwise is NaN (precision without predicted objects, recall without true ones, the mean
        IoU without matches).

    Raises
    ------
    ValueError
        Shape mismatch, empty input, negative labels, ``iou_threshold`` outside [0, 1).
    TypeError
        Float (non-label) images.

    Examples
    --------
    >>> true = np.array([[1, 1, 1, 0, 2, 2, 2, 0, 3, 3]])
    >>> test = np.array([[5, 5, 5, 0, 6, 7, 7, 0, 0, 0]])  # object 2 split, object 3 missed
    >>> scores = matching_scores(true, test)
    >>> scores.tp, scores.fp, scores.fn
    (2, 1, 1)
    >>> round(scores.precision, 3), round(scores.recall, 3), round(scores.f1, 3), round(scores.mean_matched_iou, 3)
    (0.667, 0.667, 0.667, 0.833)
    """
    from scipy.optimize import linear_sum_assignment

    from emzoo.metrics.rand_info import contingency_table

    ok = isinstance(iou_threshold, (int, float, np.integer, np.floating)) and not isinstance(iou_threshold, bool)
    if not ok or not 0.0 <= float(iou_threshold) < 1.0:
        raise ValueError(f"iou_threshold must be a number in [0, 1) (pairs match when IoU > iou_threshold), got "
                         f"{iou_threshold!r}")
    rows, cols, iou, n_true, n_test = _iou_pairs(contingency_table(image_true, image_test))

    candidate = iou > iou_threshold
    rows, cols, iou = rows[candidate], cols[candidate], iou[candidate]
    if iou.size:
        # Assign only among objects that have a candidate: the dense matrix stays small however many objects.
        true_ids, r = np.unique(rows, return_inverse=True)
        test_ids, c = np.unique(cols, return_inverse=True)
        matrix = np.zeros((true_ids.size, test_ids.size))
        matrix[r, c] = iou
        picked_r, picked_c = linear_sum_assignment(matrix, maximize=True)
        matched = matrix[picked_r, picked_c]
        matched = matched[matched > iou_threshold]  # a zero entry can be assigned when it cannot be avoided
    else:
        matched = np.zeros(0)

    tp = int(matched.size)
    fp, fn = n_test - tp, n_true - tp
    nan = float("nan")
    return MatchingScores(
        precision=tp / (tp + fp) if tp + fp else nan,
        recall=tp / (tp + fn) if tp + fn else nan,
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        mean_matched_iou=float(matched.mean()) if tp else nan,
        tp=tp,
        fp=fp,
        fn=fn,
    )
