"""Pixel-wise overlap metrics: the confusion-matrix scores of EM-stellar, Dice/IoU variants, multi-class IoU.

Conventions (``METRICS.md`` §1-2):

- Binarisation is ``value > threshold`` (strict) for both the ground truth and the prediction; the
  anti-aliased 8-bit ground truths of EM datasets need it too. Floats are compared as float32 against the
  float64 threshold, as EM-stellar does. Boolean inputs (or integers in {0, 1}) are used as they are.
- Counts are *pooled*: one confusion matrix over all pixels of all images (micro average), like EM-stellar.
  ``aggregate="mean"`` instead averages per item (per 2D slice of a stack), as Franco-Barranco et al. report.
- A ratio whose denominator is zero (e.g. sensitivity with no foreground in the ground truth) takes
  ``zero_division`` (default NaN), without a warning. F1 is computed from counts,
  F1 = Dice = 2TP / (2TP + FP + FN), so it is 0 (not NaN as in EM-stellar) when one mask is empty and the
  other is not, and ``zero_division`` only when both are empty (scikit-learn's convention). EM-stellar's
  Jaccard returns 0.0 on a zero denominator (scikit-learn's default); pass ``zero_division=0.0`` to get that.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from emzoo.metrics._validate import as_array, as_labels, as_probability, check_same_shape, threshold_float32

__all__ = [
    "ConfusionCounts",
    "confusion_matrix",
    "metrics_from_counts",
    "pixel_metrics",
    "class_confusion_matrix",
    "per_class_iou",
    "mean_iou",
]

_AGGREGATES = ("pooled", "mean")


class ConfusionCounts(NamedTuple):
    """Pooled binary confusion counts (foreground = positive class)."""

    tp: int
    fp: int
    tn: int
    fn: int


def _binarise(array: np.ndarray, threshold: float) -> np.ndarray:
    return array if array.dtype == bool else array > threshold_float32(threshold)


def _masks(
    ground_truth: Any, prediction: Any, threshold: float, mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and binarise both inputs (and the optional evaluation mask)."""
    true = as_probability(ground_truth, "ground_truth")
    pred = as_probability(prediction, "prediction")
    check_same_shape(true, pred, ("ground_truth", "prediction"))
    valid = None
    if mask is not None:
        valid = as_array(mask, "mask")
        check_same_shape(true, valid, ("ground_truth", "mask"))
        valid = valid != 0
    return _binarise(true, threshold), _binarise(pred, threshold), valid


def _item_counts(
    true: np.ndarray, pred: np.ndarray, valid: np.ndarray | None, items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, TN, FN per item, as int64 arrays of length ``items``."""
    true = true.reshape(items, -1)
    pred = pred.reshape(items, -1)
    if valid is None:
        total = np.full(items, true.shape[1], np.int64)
    else:
        valid = valid.reshape(items, -1)
        true, pred = true & valid, pred & valid
        total = np.count_nonzero(valid, axis=1).astype(np.int64)
    tp = np.count_nonzero(true & pred, axis=1).astype(np.int64)
    fp = np.count_nonzero(pred, axis=1) - tp
    fn = np.count_nonzero(true, axis=1) - tp
    tn = total - tp - fp - fn
    return tp, fp, tn, fn


def confusion_matrix(
    ground_truth: Any, prediction: Any, *, threshold: float = 0.5, mask: Any = None
) -> ConfusionCounts:
    """Pooled TP, FP, TN, FN of a binary segmentation.

    Parameters
    ----------
    ground_truth, prediction : array_like
        Same shape, any dimensionality: probabilities in [0, 1] or binary masks (bool / ints in {0, 1}).
    threshold : float
        Foreground is ``value > threshold`` (ignored for boolean inputs).
    mask : array_like, optional
        Pixels where ``mask == 0`` are not counted (artefacts, unlabelled borders).

    Returns
    -------
    ConfusionCounts
        ``(tp, fp, tn, fn)`` as Python ints.

    Raises
    ------
    ValueError
        Shape mismatch, empty input, NaN/Inf or values outside [0, 1], integer labels other than {0, 1}.

    Examples
    --------
    >>> confusion_matrix(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.7, 0.1]))
    ConfusionCounts(tp=1, fp=1, tn=1, fn=1)
    """
    true, pred, valid = _masks(ground_truth, prediction, threshold, mask)
    counts = _item_counts(true, pred, valid, 1)
    return ConfusionCounts(*(int(c[0]) for c in counts))


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def _count_metrics(
    tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray, zero_division: float
) -> dict[str, np.ndarray]:
    """Every binary metric from (arrays of) counts; the formulas of ``METRICS.md`` §2."""
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, zero_division)
    iou_fg = _ratio(tp, tp + fp + fn, zero_division)
    iou_bg = _ratio(tn, tn + fp + fn, zero_division)
    # Overall IoU = mean over the classes whose IoU is defined (TensorFlow mean_iou semantics).
    defined = (tp + fp + fn > 0).astype(np.float64) + (tn + fp + fn > 0)
    both = np.where(tp + fp + fn > 0, iou_fg, 0.0) + np.where(tn + fp + fn > 0, iou_bg, 0.0)
    return {
        "f1": f1,
        "jaccard": iou_fg,
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn, zero_division),
        "sensitivity": _ratio(tp, tp + fn, zero_division),
        "specificity": _ratio(tn, tn + fp, zero_division),
        "ppv": _ratio(tp, tp + fp, zero_division),
        "npv": _ratio(tn, tn + fn, zero_division),
        "dice": f1,
        "iou_background": iou_bg,
        "iou_overall": _ratio(both, defined, zero_division),
    }


def metrics_from_counts(counts: ConfusionCounts, *, zero_division: float = np.nan) -> dict[str, float]:
    """The binary metrics of :func:`pixel_metrics` from already pooled counts.

    Parameters
    ----------
    counts : ConfusionCounts
        From :func:`confusion_matrix`, or summed over several calls.
    zero_division : float
        Value of a ratio whose denominator is 0.

    Returns
    -------
    dict of str to float
        Same keys as :func:`pixel_metrics`.

    Examples
    --------
    >>> metrics_from_counts(ConfusionCounts(tp=3, fp=1, tn=5, fn=1))["f1"]
    0.75
    """
    tp, fp, tn, fn = (np.int64(c) for c in counts)
    return {key: float(value) for key, value in _count_metrics(tp, fp, tn, fn, zero_division).items()}


def pixel_metrics(
    ground_truth: Any,
    prediction: Any,
    *,
    threshold: float = 0.5,
    mask: Any = None,
    zero_division: float = np.nan,
    aggregate: str = "pooled",
) -> dict[str, float]:
    """Binary pixel metrics: EM-stellar's seven confusion-matrix scores plus Dice and IoU variants.

    Parameters
    ----------
    ground_truth, prediction : array_like
        Same shape: probabilities in [0, 1] or binary masks (bool / ints in {0, 1}). A 2D image is one item;
        for 3D and higher, axis 0 indexes the items (slices of a (Z, Y, X) stack, volumes of a batch).
    threshold : float
        Foreground is ``value > threshold`` for both inputs (ignored for boolean inputs).
    mask : array_like, optional
        Pixels where ``mask == 0`` are excluded from every count (Mekuč et al.'s masked scores).
    zero_division : float
        Value of a ratio whose denominator is 0 (default NaN; EM-stellar's Jaccard uses 0.0).
    aggregate : {"pooled", "mean"}
        ``"pooled"``: one confusion matrix over all pixels (EM-stellar). ``"mean"``: each metric per item,
        then averaged over the items where it is defined (NaN results are skipped; all NaN gives NaN).

    Returns
    -------
    dict of str to float
        ``f1``, ``jaccard`` (= foreground IoU), ``accuracy``, ``sensitivity`` (recall), ``specificity``,
        ``ppv`` (precision), ``npv``, ``dice`` (= ``f1``), ``iou_background`` (TN / (TN + FP + FN)) and
        ``iou_overall`` (mean of foreground and background IoU over the classes whose IoU is defined).

    Raises
    ------
    ValueError
        Shape mismatch (both shapes are named), empty input, NaN/Inf or values outside [0, 1], integer labels
        other than {0, 1}, an unknown ``aggregate``.

    Notes
    -----
    For an empty prediction and an empty ground truth, ``f1``, ``jaccard``, ``sensitivity`` and ``ppv`` are
    ``zero_division`` while ``accuracy`` and ``iou_background`` are 1. For an all-foreground pair,
    ``specificity``, ``npv`` and ``iou_background`` are ``zero_division``. The background dominates
    ``iou_overall``: report ``jaccard`` next to it.

    Examples
    --------
    >>> gt = np.array([[0, 1, 1, 0]])
    >>> pred = np.array([[0.1, 0.8, 0.4, 0.6]])
    >>> m = pixel_metrics(gt, pred)
    >>> m["f1"], m["jaccard"], m["accuracy"]
    (0.5, 0.3333333333333333, 0.5)
    """
    if aggregate not in _AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; choose one of {_AGGREGATES}.")
    true, pred, valid = _masks(ground_truth, prediction, threshold, mask)
    items = 1 if aggregate == "pooled" or true.ndim <= 2 else true.shape[0]
    tp, fp, tn, fn = _item_counts(true, pred, valid, items)
    if aggregate == "pooled":
        return metrics_from_counts(
            ConfusionCounts(*(int(c.sum()) for c in (tp, fp, tn, fn))), zero_division=zero_division
        )
    result = {}
    for key, values in _count_metrics(tp, fp, tn, fn, zero_division).items():
        defined = values[~np.isnan(values)]
        result[key] = float(defined.mean()) if defined.size else float("nan")
    return result


def class_confusion_matrix(
    ground_truth: Any, prediction_labels: Any, *, num_classes: int, mask: Any = None
) -> np.ndarray:
    """K x K confusion matrix of class label images (rows = true class, columns = predicted class).

    Parameters
    ----------
    ground_truth, prediction_labels : array_like of int
        Class labels in ``0 .. num_classes - 1``, same shape (take ``probabilities.argmax(-1)`` for a softmax
        output).
    num_classes : int
        K.
    mask : array_like, optional
        Pixels where ``mask == 0`` are not counted.

    Returns
    -------
    ndarray of int64, shape (K, K)

    Examples
    --------
    >>> class_confusion_matrix(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), num_classes=3)
    array([[1, 0, 0],
           [0, 0, 1],
           [0, 0, 2]])
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    num_classes = int(num_classes)
    true = as_labels(ground_truth, "ground_truth")
    pred = as_labels(prediction_labels, "prediction_labels")
    check_same_shape(true, pred, ("ground_truth", "prediction_labels"))
    for name, labels in (("ground_truth", true), ("prediction_labels", pred)):
        if int(labels.max()) >= num_classes:
            found = np.unique(labels)
            raise ValueError(
                f"{name} has labels {found[found >= num_classes].tolist()[:8]} outside 0..{num_classes - 1}; "
                f"pass num_classes={int(found.max()) + 1} or map those labels to a class."
            )
    if mask is not None:
        valid = as_array(mask, "mask")
        check_same_shape(true, valid, ("ground_truth", "mask"))
        true, pred = true[valid != 0], pred[valid != 0]
    true = true.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    cells = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes)


def per_class_iou(
    ground_truth: Any,
    prediction_labels: Any,
    *,
    num_classes: int,
    mask: Any = None,
    zero_division: float = np.nan,
) -> np.ndarray:
    """IoU of every class: IoU_c = M_cc / (Σ_j M_cj + Σ_i M_ic - M_cc) from :func:`class_confusion_matrix`.

    Parameters
    ----------
    ground_truth, prediction_labels : array_like of int
        Class labels in ``0 .. num_classes - 1``, same shape.
    num_classes : int
        K.
    mask : array_like, optional
        Pixels where ``mask == 0`` are not counted (e.g. outside labelled cells).
    zero_division : float
        IoU of a class absent from both images (default NaN).

    Returns
    -------
    ndarray of float64, shape (K,)

    Examples
    --------
    >>> per_class_iou(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), num_classes=4)
    array([1.        , 0.        , 0.66666667,        nan])
    """
    matrix = class_confusion_matrix(ground_truth, prediction_labels, num_classes=num_classes, mask=mask)
    hits = np.diag(matrix)
    return _ratio(hits, matrix.sum(axis=0) + matrix.sum(axis=1) - hits, zero_division)


def mean_iou(
    ground_truth: Any,
    prediction_labels: Any,
    *,
    num_classes: int,
    classes: Any = None,
    mask: Any = None,
) -> float:
    """Mean IoU over the classes present in either image (TensorFlow ``mean_iou`` semantics).

    Parameters
    ----------
    ground_truth, prediction_labels : array_like of int
        Class labels in ``0 .. num_classes - 1``, same shape. Pool the whole evaluated volume in one call.
    num_classes : int
        K.
    classes : sequence of int, optional
        Average over these classes only, e.g. ``range(2, 7)`` for Guay et al.'s organelle MIoU.
    mask : array_like, optional
        Pixels where ``mask == 0`` are not counted.

    Returns
    -------
    float
        The mean of IoU_c over the selected classes whose denominator is non-zero; NaN if there is none.

    Examples
    --------
    >>> mean_iou(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), num_classes=4)
    0.5555555555555555
    """
    iou = per_class_iou(ground_truth, prediction_labels, num_classes=num_classes, mask=mask)
    if classes is not None:
        selected = np.asarray(classes, dtype=np.int64).reshape(-1)
        if selected.size == 0 or selected.min() < 0 or selected.max() >= iou.size:
            raise ValueError(f"classes must be a non-empty subset of 0..{iou.size - 1}, got {classes!r}.")
        iou = iou[selected]
    defined = iou[~np.isnan(iou)]
    return float(defined.mean()) if defined.size else float("nan")
