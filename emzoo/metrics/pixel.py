"""Pixel-wise overlap metrics: the confusion-matrix scores of EM-stellar, Dice/IoU variants, multi-class IoU.

Conventions (``METRICS.md`` §1-2):

- Argument order: ``(image_true, image_test)``, ground truth first, as in scikit-image, for every function of
  :mod:`emzoo.metrics` (the old keyword names ``ground_truth=`` / ``prediction=`` still work, with a
  ``DeprecationWarning``; see :mod:`emzoo.metrics._order`).
- Binarisation is :func:`binarize`: ``value > threshold`` (strict) for both the ground truth and the prediction;
  the anti-aliased 8-bit ground truths of EM datasets need it too. Floats are compared as float32 against the
  float64 threshold, as EM-stellar does. Boolean inputs (or integers in {0, 1}) are used as they are. The same
  function binarises ensemble members (:class:`emzoo.inference.Ensemble`) and validation scores
  (:func:`emzoo.training.evaluate.score`).
- Counts are *pooled*: one confusion matrix over all pixels of all images (micro average), like EM-stellar.
  ``aggregate="mean"`` instead averages per item (per 2D slice of a stack), as Franco-Barranco et al. report.
- Empty masks (one rule, also followed by :func:`emzoo.training.evaluate.score` and
  :class:`emzoo.training.evaluate.PixelF1`): two masks that are both empty agree perfectly, so F1 = Dice =
  Jaccard = 1 for that item (likewise ``iou_background`` = 1 when neither mask has background). F1 is computed
  from counts, F1 = 2TP / (2TP + FP + FN), so it is 0 (not NaN as in EM-stellar) when one mask is empty and
  the other is not. EM-stellar / scikit-learn give 0 or NaN for two empty masks; emzoo does not.
- Any other ratio whose denominator is zero (e.g. sensitivity with no foreground in the ground truth) is
  undefined: with ``aggregate="pooled"`` it takes ``zero_division`` (default NaN), without a warning; with
  ``aggregate="mean"`` the items where it is undefined are left out of the mean (never averaged in as 0), and
  ``zero_division`` is returned only when no item defines it. An item with no evaluated pixels (all masked
  out) is undefined for every metric.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from emzoo.metrics._order import true_test_order
from emzoo.metrics._validate import as_array, as_labels, as_probability, check_same_shape, threshold_float32

__all__ = [
    "binarize",
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


def binarize(prob: Any, threshold: float = 0.5) -> np.ndarray:
    """The one binarisation rule of emzoo: foreground is ``prob > threshold`` (strict).

    Every metric binarises its inputs with it, and so do ensemble majority votes
    (:class:`emzoo.inference.Ensemble`) and validation scores (:func:`emzoo.training.evaluate.score`): a pixel
    whose probability equals the threshold is background everywhere.

    Parameters
    ----------
    prob : array_like
        Probabilities in [0, 1], any shape, or a binary mask (bool, or integers in {0, 1}).
    threshold : float
        Finite threshold. Floats are compared in float32 against the exact float64 threshold, as Fiji and
        EM-stellar do (:func:`emzoo.metrics._validate.threshold_float32`).

    Returns
    -------
    ndarray of bool
        Same shape. A boolean mask (or 0/1 integers) is returned as it is, whatever the threshold.

    Raises
    ------
    ValueError
        Empty input, NaN/Inf or values outside [0, 1], integers other than {0, 1}, a non-finite threshold.

    Examples
    --------
    >>> binarize(np.array([0.2, 0.5, 0.51, 1.0])).tolist()
    [False, False, True, True]
    >>> binarize(np.array([0.2, 0.5]), threshold=0.1).tolist()
    [True, True]
    """
    return _binarise(as_probability(prob, "prob"), threshold)


def _masks(
    image_true: Any, image_test: Any, threshold: float, mask: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and binarise both inputs (and the optional evaluation mask)."""
    true = as_probability(image_true, "image_true")
    pred = as_probability(image_test, "image_test")
    check_same_shape(true, pred, ("image_true", "image_test"))
    valid = None
    if mask is not None:
        valid = as_array(mask, "mask")
        check_same_shape(true, valid, ("image_true", "mask"))
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


@true_test_order(("ground_truth", "prediction"))
def confusion_matrix(
    image_true: Any, image_test: Any, *, threshold: float = 0.5, mask: Any = None
) -> ConfusionCounts:
    """Pooled TP, FP, TN, FN of a binary segmentation.

    Parameters
    ----------
    image_true, image_test : array_like
        Ground truth, then prediction (scikit-image's order; formerly ``ground_truth=``, ``prediction=``). Same
        shape, any dimensionality: probabilities in [0, 1] or binary masks (bool / ints in {0, 1}).
    threshold : float
        Foreground is ``value > threshold`` (:func:`binarize`; ignored for boolean inputs).
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
    true, pred, valid = _masks(image_true, image_test, threshold, mask)
    counts = _item_counts(true, pred, valid, 1)
    return ConfusionCounts(*(int(c[0]) for c in counts))


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def _count_metrics(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Every binary metric from (arrays of) counts; the formulas of ``METRICS.md`` §2, NaN where undefined.

    The empty rule: an overlap score (F1, Jaccard, background IoU) of two masks that are both empty for its
    class is 1, provided the item has evaluated pixels; an item without any is NaN throughout.
    """
    nan = np.nan
    counted = tp + fp + tn + fn > 0
    f1 = np.where(counted, _ratio(2 * tp, 2 * tp + fp + fn, 1.0), nan)
    iou_fg = np.where(counted, _ratio(tp, tp + fp + fn, 1.0), nan)
    iou_bg = np.where(counted, _ratio(tn, tn + fp + fn, 1.0), nan)
    return {
        "f1": f1,
        "jaccard": iou_fg,
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn, nan),
        "sensitivity": _ratio(tp, tp + fn, nan),
        "specificity": _ratio(tn, tn + fp, nan),
        "ppv": _ratio(tp, tp + fp, nan),
        "npv": _ratio(tn, tn + fn, nan),
        "dice": f1,
        "iou_background": iou_bg,
        # Mean of the foreground and background IoU (both defined whenever a pixel is counted).
        "iou_overall": (iou_fg + iou_bg) / 2.0,
    }


def _fill(value: np.ndarray, zero_division: float) -> float:
    value = float(value)
    return float(zero_division) if np.isnan(value) else value


def metrics_from_counts(counts: ConfusionCounts, *, zero_division: float = np.nan) -> dict[str, float]:
    """The binary metrics of :func:`pixel_metrics` from already pooled counts.

    Parameters
    ----------
    counts : ConfusionCounts
        From :func:`confusion_matrix`, or summed over several calls.
    zero_division : float
        Value of a ratio whose denominator is 0 (not of F1 / Jaccard of two empty masks, which are 1; see the
        module notes).

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
    return {key: _fill(value, zero_division) for key, value in _count_metrics(tp, fp, tn, fn).items()}


@true_test_order(("ground_truth", "prediction"))
def pixel_metrics(
    image_true: Any,
    image_test: Any,
    *,
    threshold: float = 0.5,
    mask: Any = None,
    zero_division: float = np.nan,
    aggregate: str = "pooled",
) -> dict[str, float]:
    """Binary pixel metrics: EM-stellar's seven confusion-matrix scores plus Dice and IoU variants.

    Parameters
    ----------
    image_true, image_test : array_like
        Ground truth, then prediction (scikit-image's order; the old keywords ``ground_truth=`` and
        ``prediction=`` still work, with a ``DeprecationWarning``). Same shape: probabilities in [0, 1] or
        binary masks (bool / ints in {0, 1}). A 2D image is one item; for 3D and higher, axis 0 indexes the
        items (slices of a (Z, Y, X) stack, volumes of a batch).
    threshold : float
        Foreground is ``value > threshold`` for both inputs (:func:`binarize`; ignored for boolean inputs).
    mask : array_like, optional
        Pixels where ``mask == 0`` are excluded from every count (Mekuč et al.'s masked scores).
    zero_division : float
        Value of an undefined ratio (denominator 0; default NaN). It never applies to F1 / Jaccard of two
        empty masks (1, see Notes) and is never averaged in: with ``aggregate="mean"`` it is only returned
        when no item defines the metric.
    aggregate : {"pooled", "mean"}
        ``"pooled"``: one confusion matrix over all pixels (EM-stellar). ``"mean"``: each metric per item,
        then averaged over the items where it is defined (undefined items are skipped, not counted as 0).

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
    The empty rule: two masks that are both empty agree perfectly, so for an empty prediction and an empty
    ground truth ``f1``, ``dice``, ``jaccard``, ``accuracy``, ``specificity``, ``iou_background`` and
    ``iou_overall`` are 1, while ``sensitivity`` and ``ppv`` are undefined (``zero_division``). For an
    all-foreground pair, ``iou_background`` is 1 and ``specificity`` and ``npv`` are undefined. With
    ``aggregate="mean"`` a slice that is empty in both stacks therefore counts as F1 = 1, and a slice where a
    metric is undefined is left out of that metric's mean, whatever ``zero_division`` is. EM-stellar reports
    NaN (F1) and 0 (Jaccard) for two empty masks; emzoo does not. The background dominates ``iou_overall``:
    report ``jaccard`` next to it.

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
    true, pred, valid = _masks(image_true, image_test, threshold, mask)
    items = 1 if aggregate == "pooled" or true.ndim <= 2 else true.shape[0]
    tp, fp, tn, fn = _item_counts(true, pred, valid, items)
    if aggregate == "pooled":
        return metrics_from_counts(
            ConfusionCounts(*(int(c.sum()) for c in (tp, fp, tn, fn))), zero_division=zero_division
        )
    result = {}
    for key, values in _count_metrics(tp, fp, tn, fn).items():
        defined = values[~np.isnan(values)]
        result[key] = float(defined.mean()) if defined.size else float(zero_division)
    return result


@true_test_order(("ground_truth", "prediction_labels"))
def class_confusion_matrix(
    image_true: Any, image_test: Any, *, num_classes: int, mask: Any = None
) -> np.ndarray:
    """K x K confusion matrix of class label images (rows = true class, columns = predicted class).

    Parameters
    ----------
    image_true, image_test : array_like of int
        True, then predicted class labels (formerly ``ground_truth=``, ``prediction_labels=``) in
        ``0 .. num_classes - 1``, same shape (take ``probabilities.argmax(-1)`` for a softmax output).
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
    true = as_labels(image_true, "image_true")
    pred = as_labels(image_test, "image_test")
    check_same_shape(true, pred, ("image_true", "image_test"))
    for name, labels in (("image_true", true), ("image_test", pred)):
        if int(labels.max()) >= num_classes:
            found = np.unique(labels)
            raise ValueError(
                f"{name} has labels {found[found >= num_classes].tolist()[:8]} outside 0..{num_classes - 1}; "
                f"pass num_classes={int(found.max()) + 1} or map those labels to a class."
            )
    if mask is not None:
        valid = as_array(mask, "mask")
        check_same_shape(true, valid, ("image_true", "mask"))
        true, pred = true[valid != 0], pred[valid != 0]
    true = true.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    cells = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes)


@true_test_order(("ground_truth", "prediction_labels"))
def per_class_iou(
    image_true: Any,
    image_test: Any,
    *,
    num_classes: int,
    mask: Any = None,
    zero_division: float = np.nan,
) -> np.ndarray:
    """IoU of every class: IoU_c = M_cc / (Σ_j M_cj + Σ_i M_ic - M_cc) from :func:`class_confusion_matrix`.

    Parameters
    ----------
    image_true, image_test : array_like of int
        True, then predicted class labels in ``0 .. num_classes - 1``, same shape.
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
    matrix = class_confusion_matrix(image_true, image_test, num_classes=num_classes, mask=mask)
    hits = np.diag(matrix)
    return _ratio(hits, matrix.sum(axis=0) + matrix.sum(axis=1) - hits, zero_division)


@true_test_order(("ground_truth", "prediction_labels"))
def mean_iou(
    image_true: Any,
    image_test: Any,
    *,
    num_classes: int,
    classes: Any = None,
    mask: Any = None,
) -> float:
    """Mean IoU over the classes present in either image (TensorFlow ``mean_iou`` semantics).

    Parameters
    ----------
    image_true, image_test : array_like of int
        True, then predicted class labels in ``0 .. num_classes - 1``, same shape. Pool the whole evaluated volume in one call.
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
    iou = per_class_iou(image_true, image_test, num_classes=num_classes, mask=mask)
    if classes is not None:
        selected = np.asarray(classes, dtype=np.int64).reshape(-1)
        if selected.size == 0 or selected.min() < 0 or selected.max() >= iou.size:
            raise ValueError(f"classes must be a non-empty subset of 0..{iou.size - 1}, got {classes!r}.")
        iou = iou[selected]
    defined = iou[~np.isnan(iou)]
    return float(defined.mean()) if defined.size else float("nan")
