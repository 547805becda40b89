"""Segmentation metrics for EM, in pure Python and checked against Fiji / EM-stellar reference values.

Every function takes ``(image_true, image_test)``: ground truth first, as in scikit-image (the old keyword
names and the thinned scores' old prediction-first order are deprecated, see :mod:`emzoo.metrics._order`).
Every binarisation is :func:`binarize` (``prob > threshold``).

- :mod:`emzoo.metrics.pixel`: pooled confusion-matrix metrics (F1/Dice, Jaccard, accuracy, sensitivity,
  specificity, PPV, NPV, background/overall IoU) and multi-class IoU.
- :mod:`emzoo.metrics.rand_info`: Fiji's thinned V_Rand / V_Info (EM-stellar's "VRand" / "VInfo") and the
  scikit-image adapted Rand error / variation of information for instance label volumes.
- :mod:`emzoo.metrics.instance`: object-level precision, recall and F1 of instance label images (one-to-one
  matching by IoU).
- :mod:`emzoo.metrics.watershed`: Fiji's boundary thinning (FIFO watershed) used by the thinned scores.

:func:`all_metrics` gives one EM-stellar table row.

Examples
--------
>>> import numpy as np
>>> from emzoo.metrics import all_metrics
>>> gt = np.zeros((8, 8)); gt[1:3, 1:7] = 1; gt[5:7, 1:7] = 1
>>> row = all_metrics(gt, gt * 0.8)
>>> row["f1"], row["vrand"], row["vinfo"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

from emzoo.metrics._order import true_test_order
from emzoo.metrics.instance import MatchingScores, matching_scores
from emzoo.metrics.pixel import (
    ConfusionCounts,
    binarize,
    class_confusion_matrix,
    confusion_matrix,
    mean_iou,
    metrics_from_counts,
    per_class_iou,
    pixel_metrics,
)
from emzoo.metrics.rand_info import (
    AdaptedRandError,
    VariationOfInformation,
    adapted_rand_error,
    contingency_table,
    fiji_thresholds,
    rand_info_scores,
    rand_info_thinned,
    variation_of_information,
    vinfo_thinned,
    vrand_thinned,
)
from emzoo.metrics.watershed import thinned_labels

__all__ = [
    "all_metrics",
    "binarize",
    "ConfusionCounts",
    "confusion_matrix",
    "metrics_from_counts",
    "pixel_metrics",
    "class_confusion_matrix",
    "per_class_iou",
    "mean_iou",
    "fiji_thresholds",
    "rand_info_scores",
    "rand_info_thinned",
    "vrand_thinned",
    "vinfo_thinned",
    "contingency_table",
    "adapted_rand_error",
    "variation_of_information",
    "AdaptedRandError",
    "VariationOfInformation",
    "thinned_labels",
    "matching_scores",
    "MatchingScores",
]

# EM-stellar's table columns, in its order (emstellar_metrics.csv), then the winning thresholds.
_ROW_KEYS = ("f1", "vrand", "vinfo", "accuracy", "sensitivity", "specificity", "ppv", "npv", "jaccard")


@true_test_order(("ground_truth", "prediction"))
def all_metrics(image_true: Any, image_test: Any, *, threshold: float = 0.5) -> dict[str, float]:
    """One EM-stellar table row: the seven confusion-matrix metrics plus Fiji's thinned V_Rand and V_Info.

    Parameters
    ----------
    image_true, image_test : array_like, shape (Y, X) or (Z, Y, X)
        Ground truth, then prediction (scikit-image's order; the old keywords ``ground_truth=`` and
        ``prediction=`` still work, with a ``DeprecationWarning``). Probabilities in [0, 1] (8-bit images:
        ``image.astype(np.float32) / 255``) or binary masks.
    threshold : float
        Binarisation of both maps for the confusion-matrix metrics (:func:`binarize`, pooled over all
        slices). V_Rand / V_Info sweep their own thresholds (:func:`emzoo.metrics.rand_info_thinned`).

    Returns
    -------
    dict of str to float
        ``f1``, ``vrand``, ``vinfo``, ``accuracy``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``,
        ``jaccard`` (EM-stellar's column order), then ``vrand_threshold`` and ``vinfo_threshold``. F1 and
        Jaccard of two empty masks are 1; other ratios with a zero denominator are NaN (see
        :mod:`emzoo.metrics.pixel`).

    Raises
    ------
    ValueError
        Shape mismatch, not 2D/3D, empty input, NaN/Inf or values outside [0, 1], integer labels other than
        {0, 1}.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((8, 8)); gt[1:3, 1:7] = 1; gt[5:7, 1:7] = 1
    >>> pred = gt * 0.9; pred[3:5, 3] = 0.7  # a bridge merges the two objects below t = 0.7
    >>> row = all_metrics(gt, pred)
    >>> row["f1"], row["vrand"], row["vrand_threshold"]
    (0.96, 1.0, 0.7)
    """
    pixel = pixel_metrics(image_true, image_test, threshold=threshold)
    thinned = rand_info_thinned(image_true=image_true, image_test=image_test)
    row = {key: pixel[key] if key in pixel else thinned[key] for key in _ROW_KEYS}
    row["vrand_threshold"] = thinned["vrand_threshold"]
    row["vinfo_threshold"] = thinned["vinfo_threshold"]
    return row
