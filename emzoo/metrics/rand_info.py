"""V_Rand and V_Info: Fiji's thinned, foreground-restricted scores and scikit-image's SNEMI3D/CREMI variants.

Two families of segmentation scores live here; they are *not* interchangeable (``METRICS.md`` §5):

Every function takes ``(image_true, image_test)``: ground truth first, as in scikit-image. The thinned scores
used to take ``(prediction, ground_truth)``; the old keyword names still work with a ``DeprecationWarning``, and
two positional arguments in the clearly old order (a non-binary float probability map first, a binary mask
second) are swapped with a ``DeprecationWarning`` (:mod:`emzoo.metrics._order`). Pass ``image_true=`` and
``image_test=`` by keyword to score a soft (anti-aliased) ground truth against a binary proposal.

- :func:`vrand_thinned`, :func:`vinfo_thinned` and :func:`rand_info_thinned` reproduce what EM-stellar reports
  as "VRand" and "VInfo": Fiji's ``getMaximalVRandAfterThinning(0, 1, 0.1, perSliceAverage=true)`` and
  ``getMaximalVInfoAfterThinning(0, 1, 0.1)``. The probability map is binarised at 11 thresholds, each binary
  proposal is thinned by a FIFO watershed (:func:`emzoo.metrics.watershed.thinned_labels`), scored against the
  4-connected ground-truth components with the foreground-restricted Rand / information F-scores of
  Arganda-Carreras et al. (2015), averaged per slice, and maximised over thresholds. Clean-room implementation
  of the published definitions (``METRICS.md`` §3-4); it reproduces the EM-stellar fixture to 5 decimals.
- :func:`adapted_rand_error`, :func:`variation_of_information` and :func:`contingency_table` wrap scikit-image
  for instance label volumes (2D or 3D): no threshold sweep, no thinning, proposal label 0 is an ordinary
  segment.

References
----------
Arganda-Carreras I, Turaga SC, Berger DR, et al. Crowdsourcing the creation of image segmentation algorithms
for connectomics. Front. Neuroanat. 9:142 (2015). doi:10.3389/fnana.2015.00142
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import skimage.metrics
from scipy import ndimage

from emzoo.metrics._order import true_test_order
from emzoo.metrics._validate import (
    as_labels,
    as_probability,
    check_ndim,
    check_same_shape,
    threshold_float32,
)
from emzoo.metrics.watershed import BATCH_PIXELS, flood_stack

__all__ = [
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
]

_CROSS = ndimage.generate_binary_structure(2, 1)


class AdaptedRandError(NamedTuple):
    """scikit-image's adapted Rand error and its two ratios, named as scikit-image names them."""

    error: float
    precision: float
    recall: float


class VariationOfInformation(NamedTuple):
    """Conditional entropies in bits: ``split`` = H(test | true), ``merge`` = H(true | test)."""

    split: float
    merge: float


def fiji_thresholds(start: float = 0.0, stop: float = 1.0, step: float = 0.1) -> np.ndarray:
    """The thresholds Fiji sweeps: float64 repeated addition from ``start`` while ``<= stop``.

    Repeated addition (not ``np.arange`` or ``linspace``) gives Fiji's exact values, e.g. 0.30000000000000004
    and a last threshold 0.9999999999999999 (so pixels equal to 1.0 stay foreground).

    Parameters
    ----------
    start, stop, step : float
        First threshold, upper bound (inclusive), increment (> 0).

    Returns
    -------
    ndarray of float64

    Examples
    --------
    >>> t = fiji_thresholds()
    >>> len(t), float(t[3]), float(t[-1])
    (11, 0.30000000000000004, 0.9999999999999999)
    """
    if not (np.isfinite(start) and np.isfinite(stop) and np.isfinite(step)) or step <= 0:
        raise ValueError(f"need finite start/stop and step > 0, got start={start}, stop={stop}, step={step}.")
    values = []
    value = float(start)
    while value <= stop:
        values.append(value)
        value += step
    return np.array(values, dtype=np.float64)


def _pair_scores(true: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """V_Rand and V_Info (α = 0.5) of one slice from the labels of its ground-truth-foreground pixels.

    ``true`` holds small positive labels (``0 < label``, compact), ``test`` the proposal labels with 0 meaning
    "watershed line": each such pixel is its own one-pixel segment (``METRICS.md`` §3, singleton rule).
    """
    n = true.size
    if n == 0:
        return np.nan, np.nan
    lines = test == 0
    singles = int(np.count_nonzero(lines))
    true_sizes = np.bincount(true)
    true_sizes = true_sizes[true_sizes > 0].astype(np.float64)
    if singles < n:
        inner = ~lines
        true_in, test_in = true[inner], test[inner].astype(np.int64)
        test_in -= test_in.min()
        ntest, ntrue = int(test_in.max()) + 1, int(true.max()) + 1
        cells = test_in * ntrue + true_in
        if ntest * ntrue <= max(8 * n, 1 << 16):
            joint = np.bincount(cells, minlength=ntest * ntrue)
        else:
            joint = np.unique(cells, return_counts=True)[1]
        joint = joint[joint > 0].astype(np.float64)
        test_sizes = np.bincount(test_in)
        test_sizes = test_sizes[test_sizes > 0].astype(np.float64)
    else:
        joint = test_sizes = np.zeros(0)

    # Counts instead of probabilities: n^2 cancels in the Rand F-score.
    vrand = 2.0 * (joint @ joint + singles) / (true_sizes @ true_sizes + test_sizes @ test_sizes + singles)

    def entropy(sizes: np.ndarray) -> float:
        p = sizes / n
        return float(-(p @ np.log(p)))

    singleton_term = singles / n * np.log(n)
    h_true = entropy(true_sizes)
    h_test = entropy(test_sizes) + singleton_term
    h_joint = entropy(joint) + singleton_term
    mutual = h_true + h_test - h_joint
    # Fiji's special cases (either gives 0): H(true) = 0 (one GT component) or H(test) = 0 (one proposal
    # segment).
    vinfo = 0.0 if h_true == 0.0 or h_test == 0.0 else 2.0 * mutual / (h_true + h_test)
    return float(vrand), float(vinfo)


def rand_info_scores(image_true: Any, image_test: Any) -> dict[str, float]:
    """Foreground-restricted V_Rand and V_Info of two label images, without thresholding or thinning.

    These are the per-slice scores inside :func:`rand_info_thinned` (``METRICS.md`` §3): only pixels with
    ``image_true > 0`` count, and every such pixel with ``image_test == 0`` is its own one-pixel segment. The
    whole array is scored as one segmentation (no per-slice averaging).

    Parameters
    ----------
    image_true : array_like of int
        Ground-truth labels; 0 is background and is ignored.
    image_test : array_like of int
        Proposal labels, same shape; 0 marks boundary pixels (singletons).

    Returns
    -------
    dict
        ``{"vrand": float, "vinfo": float}``, NaN for both when ``image_true`` has no foreground.

    Notes
    -----
    V_Rand = 2 Σp_ij² / (Σa_i² + Σb_j²) and V_Info = 2 I(A;B) / (H(A) + H(B)), with the singletons added to
    the proposal sums; V_Info is 0 when H(A) = 0 or H(B) = 0. This is Fiji's "N²" pair counting (self-pairs
    included), not scikit-image's ``adapted_rand_error`` (see :func:`adapted_rand_error`).

    Examples
    --------
    One true object split in two halves:

    >>> true = np.array([[1, 1, 1, 1]])
    >>> test = np.array([[1, 1, 2, 2]])
    >>> rand_info_scores(true, test)["vrand"]
    0.6666666666666666
    """
    true = as_labels(image_true, "image_true")
    test = as_labels(image_test, "image_test")
    check_same_shape(true, test, ("image_true", "image_test"))
    inside = true > 0
    true_fg = np.unique(true[inside], return_inverse=True)[1].reshape(-1) + 1
    vrand, vinfo = _pair_scores(true_fg, test[inside].astype(np.int64))
    return {"vrand": vrand, "vinfo": vinfo}


def _check_pair(image_true: Any, image_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(prediction, truth)`` stacks, shape (Z, Y, X)."""
    true = as_probability(image_true, "image_true")
    pred = as_probability(image_test, "image_test")
    check_same_shape(true, pred, ("image_true", "image_test"))
    check_ndim(true, "image_true", (2, 3))
    if pred.ndim == 2:
        pred, true = pred[None], true[None]
    return pred, true


def _check_thresholds(thresholds: Any) -> np.ndarray:
    if thresholds is None:
        return fiji_thresholds()
    values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"thresholds must be a non-empty sequence of finite numbers, got {thresholds!r}.")
    return values


def _sweep(pred: np.ndarray, true: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-threshold, per-slice V_Rand and V_Info, shape ``(len(thresholds), Z)``; NaN where GT is empty."""
    nslices = pred.shape[0]
    cuts = [threshold_float32(t) for t in thresholds]
    vrand = np.full((len(cuts), nslices), np.nan)
    vinfo = np.full((len(cuts), nslices), np.nan)
    per_batch = max(1, BATCH_PIXELS // pred[0].size)
    batch: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
    copies: list[tuple[int, int, int]] = []  # (k, z, k_source): same masks as an earlier threshold

    def flush() -> None:
        if not batch:
            return
        proposals = np.stack([item[2] for item in batch])
        needed = np.stack([item[3] for item in batch])
        thinned = flood_stack(proposals, needed)
        for (k, z, _, _, true_labels), test_labels in zip(batch, thinned, strict=True):
            inside = true_labels > 0
            vrand[k, z], vinfo[k, z] = _pair_scores(true_labels[inside], test_labels[inside])
        batch.clear()

    for z in range(nslices):
        previous = None
        for k, cut in enumerate(cuts):
            proposal = pred[z] > cut
            truth = true[z] > cut
            if (
                previous is not None
                and np.array_equal(proposal, previous[1])
                and np.array_equal(truth, previous[2])
            ):
                copies.append((k, z, previous[0]))
                continue
            if previous is not None and np.array_equal(truth, previous[2]):
                true_labels = previous[3]  # the GT is often (almost) binary: label it once per distinct mask
            else:
                true_labels = ndimage.label(truth, structure=_CROSS)[0]
            previous = (k, proposal, truth, true_labels)
            batch.append((k, z, proposal, truth, true_labels))
            if len(batch) >= per_batch:
                flush()
    flush()
    for k, z, source in copies:
        vrand[k, z], vinfo[k, z] = vrand[source, z], vinfo[source, z]
    return vrand, vinfo


def _best(curve: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """Fiji's maximum: starts from 0, NaN never wins, the earliest threshold wins ties."""
    valid = ~np.isnan(curve)
    if not valid.any():
        return 0.0, float("nan")
    index = int(np.flatnonzero(valid)[np.argmax(curve[valid])])
    return max(0.0, float(curve[index])), float(thresholds[index])


@true_test_order(("prediction", "ground_truth"), detect_swap=True)
def rand_info_thinned(
    image_true: Any, image_test: Any, *, thresholds: Any = None, return_curves: bool = False
) -> dict[str, Any]:
    """Fiji's V_Rand and V_Info after border thinning, from one shared threshold sweep.

    For each threshold t: binarise both maps (``value > t``), label the ground truth by 4-connected
    components, thin the binary proposal with Fiji's FIFO watershed, score each 2D slice (``METRICS.md`` §3)
    and average over slices. Each score is then maximised over the thresholds independently.

    Parameters
    ----------
    image_true : array_like, shape (Y, X) or (Z, Y, X)
        Ground truth (formerly ``ground_truth=``, the *second* argument): probabilities in [0, 1] (float) or a
        binary mask (bool, or ints in {0, 1}); binarised at each threshold too (Fiji does not fix it at 0.5).
        Floats are compared as float32, as in Fiji: convert 8-bit maps with ``image.astype(np.float32) / 255``.
    image_test : array_like, same shape
        Probability map (formerly ``prediction=``, the first argument), same conventions.
    thresholds : sequence of float, optional
        Defaults to :func:`fiji_thresholds` (0.0, 0.1, ..., 0.9999999999999999).
    return_curves : bool
        Also return the per-threshold slice means and the per-slice scores.

    Returns
    -------
    dict
        ``vrand``, ``vrand_threshold``, ``vinfo``, ``vinfo_threshold`` (floats). With ``return_curves``:
        ``thresholds`` (T,), ``vrand_curve`` and ``vinfo_curve`` (T,), ``vrand_per_slice`` and
        ``vinfo_per_slice`` (T, Z).

    Raises
    ------
    ValueError
        Shape mismatch, not 2D/3D, empty input, NaN/Inf or values outside [0, 1], non-binary integer labels.

    Warns
    -----
    DeprecationWarning
        Old keyword names, or two positional arguments in the clearly old order (a non-binary float map first,
        a binary mask second), which are then swapped.

    Notes
    -----
    The score is asymmetric (the ground truth is labelled, the proposal thinned): swapped arguments give a
    different, plausible number. A slice whose ground truth is empty at a threshold scores NaN there, which makes that threshold's mean
    NaN; such thresholds are skipped. The maximum starts at 0 and the earliest threshold wins ties; when every
    threshold is skipped the score is 0.0 and the threshold NaN. Identical consecutive binarisations are
    scored once. Slices are independent, so their order does not matter.

    Examples
    --------
    >>> gt = np.zeros((8, 8)); gt[1:3, 1:7] = 1; gt[5:7, 1:7] = 1
    >>> pred = gt * 0.9
    >>> scores = rand_info_thinned(gt, pred)
    >>> scores["vrand"], scores["vinfo"], scores["vrand_threshold"]
    (1.0, 1.0, 0.0)
    """
    pred, true = _check_pair(image_true, image_test)
    values = _check_thresholds(thresholds)
    vrand, vinfo = _sweep(pred, true, values)
    vrand_curve, vinfo_curve = vrand.mean(axis=1), vinfo.mean(axis=1)
    result: dict[str, Any] = {}
    result["vrand"], result["vrand_threshold"] = _best(vrand_curve, values)
    result["vinfo"], result["vinfo_threshold"] = _best(vinfo_curve, values)
    if return_curves:
        result.update(
            thresholds=values,
            vrand_curve=vrand_curve,
            vinfo_curve=vinfo_curve,
            vrand_per_slice=vrand,
            vinfo_per_slice=vinfo,
        )
    return result


@true_test_order(("prediction", "ground_truth"), detect_swap=True)
def vrand_thinned(
    image_true: Any, image_test: Any, *, thresholds: Any = None, return_threshold: bool = False
) -> float | tuple[float, float]:
    """Fiji's maximal foreground-restricted Rand F-score after border thinning (EM-stellar's "VRand").

    Parameters
    ----------
    image_true, image_test, thresholds
        As in :func:`rand_info_thinned`: ground truth first (the old prediction-first order is deprecated).
    return_threshold : bool
        Also return the threshold that gave the maximum.

    Returns
    -------
    float or (float, float)
        The score in [0, 1], and the winning threshold if asked.

    Examples
    --------
    >>> gt = np.zeros((6, 6)); gt[1:5, 1:3] = 1; gt[1:5, 4:6] = 1
    >>> pred = gt.copy(); pred[2, 3] = 1  # a one-pixel bridge merges the two objects
    >>> round(vrand_thinned(gt, pred), 4)
    0.6667
    """
    result = rand_info_thinned(image_true=image_true, image_test=image_test, thresholds=thresholds)
    if return_threshold:
        return result["vrand"], result["vrand_threshold"]
    return result["vrand"]


@true_test_order(("prediction", "ground_truth"), detect_swap=True)
def vinfo_thinned(
    image_true: Any, image_test: Any, *, thresholds: Any = None, return_threshold: bool = False
) -> float | tuple[float, float]:
    """Fiji's maximal foreground-restricted information F-score after border thinning (EM-stellar's "VInfo").

    Parameters
    ----------
    image_true, image_test, thresholds
        As in :func:`rand_info_thinned`: ground truth first.
    return_threshold : bool
        Also return the threshold that gave the maximum.

    Returns
    -------
    float or (float, float)
        The score in [0, 1], and the winning threshold if asked.

    Examples
    --------
    >>> gt = np.zeros((6, 6)); gt[1:5, 1:3] = 1; gt[1:5, 4:6] = 1
    >>> pred = gt.copy(); pred[2, 3] = 1  # one merged segment: H(proposal) = 0, so V_Info = 0
    >>> vinfo_thinned(gt, pred, return_threshold=True)
    (0.0, 0.0)
    >>> vinfo_thinned(gt, gt)
    1.0
    """
    result = rand_info_thinned(image_true=image_true, image_test=image_test, thresholds=thresholds)
    if return_threshold:
        return result["vinfo"], result["vinfo_threshold"]
    return result["vinfo"]


def _check_labels(image_true: Any, image_test: Any) -> tuple[np.ndarray, np.ndarray]:
    true = as_labels(image_true, "image_true")
    test = as_labels(image_test, "image_test")
    check_same_shape(true, test, ("image_true", "image_test"))
    return true, test


def contingency_table(
    image_true: Any, image_test: Any, *, ignore_labels: Any = None, normalize: bool = False
) -> Any:
    """Sparse overlap table: ``table[i, j]`` counts pixels labelled i in ``image_true``, j in ``image_test``.

    Thin validated wrapper of ``skimage.metrics.contingency_table``; pass the result as ``table=`` to
    :func:`adapted_rand_error` (counts) or :func:`variation_of_information` (``normalize=True``) to score
    one table several times.

    Parameters
    ----------
    image_true, image_test : array_like of int
        Label images of the same shape, any dimensionality, non-negative labels.
    ignore_labels : sequence of int, optional
        True labels whose pixels are not counted (e.g. ``(0,)`` for background).
    normalize : bool
        Divide by the number of counted pixels.

    Returns
    -------
    scipy.sparse.csr_array
        Rows are true labels, columns test labels (0 .. max label).

    Examples
    --------
    >>> contingency_table(np.array([1, 1, 2]), np.array([1, 2, 2])).toarray()
    array([[0., 0., 0.],
           [0., 1., 1.],
           [0., 0., 1.]])
    """
    true, test = _check_labels(image_true, image_test)
    return skimage.metrics.contingency_table(
        true, test, ignore_labels=ignore_labels, normalize=normalize, sparse_type="array"
    )


def adapted_rand_error(
    image_true: Any = None,
    image_test: Any = None,
    *,
    table: Any = None,
    ignore_labels: Any = (0,),
    alpha: float = 0.5,
) -> AdaptedRandError:
    """SNEMI3D adapted Rand error of two instance label images (2D or 3D), via scikit-image.

    Parameters
    ----------
    image_true, image_test : array_like of int
        Ground-truth and proposal labels, same shape. Ignored when ``table`` is given.
    table : scipy.sparse.csr_array, optional
        Counts from :func:`contingency_table` (already restricted by its ``ignore_labels``).
    ignore_labels : sequence of int
        True labels excluded from the counts (default: background 0).
    alpha : float
        Weight of the two ratios in the F-score (0.5: harmonic mean).

    Returns
    -------
    AdaptedRandError
        ``(error, precision, recall)`` exactly as ``skimage.metrics.adapted_rand_error`` returns them.

    Notes
    -----
    This is **not** EM-stellar's / Fiji's V_Rand (``METRICS.md`` §5): no threshold sweep and no thinning;
    test label 0 is one big segment (Fiji: one-pixel singletons); pairs of *distinct* pixels are counted (n² −
    n; Fiji counts n², self-pairs included); no per-slice averaging. scikit-image's "precision" is Σp²/Σa²
    with a the *true* marginal, which Fiji calls recall (split score). 1 − error of plain 4-connected
    components differs from Fiji's VRand by 0.005-0.037 on the EM-stellar fixture; use :func:`vrand_thinned`
    to compare with published EM-stellar numbers. When no two counted pixels share a segment of one side (every object
    one pixel), that side's ratio is 0/0: NaN, without a numpy warning (the error is NaN only when both sides are).

    Examples
    --------
    >>> true = np.array([[1, 1, 2, 2]])
    >>> test = np.array([[1, 1, 1, 1]])
    >>> adapted_rand_error(true, test).error
    0.5
    """
    # A ratio is 0/0 when no two counted pixels share a segment (e.g. every object is one pixel): NaN, emzoo's
    # zero-division rule, without numpy's RuntimeWarning reaching the user.
    with np.errstate(divide="ignore", invalid="ignore"):
        if table is None:
            if image_true is None or image_test is None:
                raise ValueError("pass both image_true and image_test, or a contingency table as table=.")
            true, test = _check_labels(image_true, image_test)
            error, precision, recall = skimage.metrics.adapted_rand_error(
                true, test, ignore_labels=ignore_labels, alpha=alpha
            )
        else:
            error, precision, recall = skimage.metrics.adapted_rand_error(table=table, alpha=alpha)
    return AdaptedRandError(float(error), float(precision), float(recall))


def variation_of_information(
    image_true: Any = None, image_test: Any = None, *, table: Any = None, ignore_labels: Any = ()
) -> VariationOfInformation:
    """Split and merge parts of the variation of information (bits) of two label images, via scikit-image.

    Parameters
    ----------
    image_true, image_test : array_like of int
        Ground-truth and proposal labels, same shape. Ignored when ``table`` is given.
    table : scipy.sparse.csr_array, optional
        A *normalised* table from ``contingency_table(..., normalize=True)``.
    ignore_labels : sequence of int
        True labels excluded (default none; CREMI uses ``(0,)`` for background).

    Returns
    -------
    VariationOfInformation
        ``split`` = H(test | true) (over-segmentation), ``merge`` = H(true | test) (under-segmentation);
        VI = split + merge.

    Notes
    -----
    Not Fiji's V_Info (``METRICS.md`` §5): these are unnormalised conditional entropies in bits, every label
    including 0 is an ordinary segment, and there is no sweep or thinning. Use :func:`vinfo_thinned` for
    EM-stellar's "VInfo".

    Examples
    --------
    >>> true = np.array([[1, 1, 2, 2]])
    >>> test = np.array([[1, 1, 1, 1]])
    >>> variation_of_information(true, test)
    VariationOfInformation(split=0.0, merge=1.0)
    """
    if table is None:
        if image_true is None or image_test is None:
            raise ValueError(
                "pass both image_true and image_test, or a normalised contingency table as table=."
            )
        true, test = _check_labels(image_true, image_test)
        split, merge = skimage.metrics.variation_of_information(true, test, ignore_labels=ignore_labels)
    else:
        # scikit-image 0.26 checks the image shapes even when given a table: two empty arrays satisfy it.
        split, merge = skimage.metrics.variation_of_information(np.zeros(0), np.zeros(0), table=table)
    return VariationOfInformation(float(split), float(merge))
