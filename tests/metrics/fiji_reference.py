"""Plain-Python reference of ``METRICS.md`` §3-4, written literally from the text: slow, obviously correct.

The vectorised implementation in :mod:`emzoo.metrics` is checked against it pixel for pixel.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)
_NEIGHBOURS = ((0, -1), (-1, 0), (0, 1), (1, 0))  # left, up, right, down as (dy, dx)
_UNSET, _PROVISIONAL = -1, -2


def fifo_flood(foreground: np.ndarray) -> np.ndarray:
    """§4.2 step 3, one pixel at a time: basins, column-major seeding, FIFO propagation, leftovers."""
    height, width = foreground.shape
    basins, nbasins = ndimage.label(foreground, structure=_CROSS)
    labels = np.where(foreground, basins, _UNSET).astype(np.int64)
    queued = foreground.copy()
    queue: deque[tuple[int, int]] = deque()
    for x in range(width):  # column-major scan: x outer, y inner
        for y in range(height):
            if foreground[y, x]:
                continue
            for dy, dx in _NEIGHBOURS:
                yy, xx = y + dy, x + dx
                if 0 <= yy < height and 0 <= xx < width and foreground[yy, xx]:
                    queue.append((y, x))
                    queued[y, x] = True
                    break
    while queue:
        y, x = queue.popleft()
        current, final = _UNSET, False
        for dy, dx in _NEIGHBOURS:
            yy, xx = y + dy, x + dx
            if not (0 <= yy < height and 0 <= xx < width):
                continue
            value = labels[yy, xx]
            if value > 0:  # a basin label
                if final:
                    continue
                if current in (_UNSET, _PROVISIONAL):
                    current = value
                elif current != value:
                    current, final = 0, True
            elif value == 0:  # a watershed line
                if current == _UNSET:
                    current = _PROVISIONAL
            elif not queued[yy, xx]:
                queued[yy, xx] = True
                queue.append((yy, xx))
        labels[y, x] = current if current > 0 else 0
    left = labels == _UNSET
    if left.any():
        extra = ndimage.label(left, structure=_CROSS)[0]
        labels[left] = extra[left] + nbasins
    return labels


def slice_scores(true_labels: np.ndarray, test_labels: np.ndarray) -> tuple[float, float]:
    """§3 with probabilities, exactly as written (singleton rule included)."""
    inside = true_labels > 0
    n = int(inside.sum())
    if n == 0:
        return float("nan"), float("nan")
    a, b = true_labels[inside], test_labels[inside]
    s0 = np.count_nonzero(b == 0) / n
    pairs = np.unique(np.stack([a[b > 0], b[b > 0]]), axis=1, return_counts=True)[1] / n
    pa = np.unique(a, return_counts=True)[1] / n
    pb = np.unique(b[b > 0], return_counts=True)[1] / n
    sum_a, sum_b, sum_p = (pa**2).sum(), (pb**2).sum() + s0 / n, (pairs**2).sum() + s0 / n
    vrand = 2 * sum_p / (sum_a + sum_b)
    h_a = -(pa * np.log(pa)).sum()
    h_b = -(pb * np.log(pb)).sum() + s0 * np.log(n)
    h_ab = -(pairs * np.log(pairs)).sum() + s0 * np.log(n)
    vinfo = 0.0 if h_a == 0 or h_b == 0 else 2 * (h_a + h_b - h_ab) / (h_a + h_b)
    return float(vrand), float(vinfo)


def thinned_curves(prediction: np.ndarray, truth: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Per-threshold slice means of (V_Rand, V_Info), shape (T, 2); inputs float32 (Z, Y, X)."""
    out = np.zeros((len(thresholds), 2))
    for k, t in enumerate(thresholds):
        per_slice = []
        for z in range(prediction.shape[0]):
            true_labels = ndimage.label(truth[z].astype(np.float64) > t, structure=_CROSS)[0]
            per_slice.append(slice_scores(true_labels, fifo_flood(prediction[z].astype(np.float64) > t)))
        out[k] = np.mean(per_slice, axis=0)
    return out
