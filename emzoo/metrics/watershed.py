"""Fiji's boundary thinning: a FIFO flooding watershed on a two-level relief, vectorised with NumPy.

Fiji's ``RandError`` / ``VariationOfInformation`` (Trainable Segmentation) do not score a binarised proposal
as plain connected components. They first *thin* the proposal: each 4-connected foreground component becomes a
basin, and a Vincent-Soille flood (4-connectivity, FIFO queue) absorbs the background into the basins, leaving
one-pixel watershed lines where two floods meet. ``METRICS.md`` §4.2 step 3 gives the procedure; this module
is a clean-room implementation of that description (no GPL code was read or translated).

How the FIFO queue is reproduced without a Python loop over pixels
-------------------------------------------------------------------
The queue visits background pixels in breadth-first layers: layer ``d`` holds the pixels at 4-connected
distance ``d`` from the nearest foreground pixel. Fiji decides a pixel's label when it is popped, from the
labels its four neighbours carry at that moment: the neighbours one layer closer (all decided) and the
same-layer neighbours that were popped before it. So the loop here runs over *layers*, and within a layer:

1. Every pixel takes the basin label its previous-layer neighbours agree on; two different labels make it a
   watershed line for good; only-line neighbours leave it "provisional".
2. Only where same-layer neighbours disagree (different labels, or a provisional pixel) does the order inside
   the layer matter. That order is the queue order, which is carried from layer to layer exactly: the next
   layer is listed in the order its pixels are first pushed (pixel by pixel in queue order, neighbours left,
   up, right, down), with the first push of each pixel kept, and each pixel stores its queue position
   (increasing from layer to layer, so "same layer" is a range test). The few disagreeing pixels are then
   settled by iterating the label rule to its fixed point (the dependency "popped earlier" is acyclic, so the
   fixed point is unique).

The first layer is seeded column by column (x outer, y inner) as Fiji scans it; the arrays are therefore kept
transposed, so NumPy's C order is Fiji's scan order. The result equals a literal pixel-by-pixel FIFO flood
(the test-suite checks this against a plain-Python flood on random images) and runs a 512² slice in a few
milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from emzoo.metrics._validate import as_array, check_ndim

__all__ = ["thinned_labels"]

# Pixels flooded in one call (slices are grouped up to this): amortises the per-layer Python overhead while
# keeping the working set (about 25 bytes a pixel) near 50 MB and in cache longer.
BATCH_PIXELS = 2**21
# Queue position of a pixel not visited yet: above every real one (at most 5 positions are handed out per
# pixel, so they stay below 2**30 for floods of < 2**27 pixels).
_UNSEEN = np.int32(2**30)
# In-plane 4-connectivity for a (slice, x, y) stack: slices never connect.
_CROSS_2D_IN_3D = np.zeros((3, 3, 3), bool)
_CROSS_2D_IN_3D[1] = ndimage.generate_binary_structure(2, 1)


def thinned_labels(foreground: Any) -> np.ndarray:
    """Label a binary proposal the way Fiji does before computing V_Rand / V_Info.

    Each 4-connected component of ``foreground`` becomes a segment; every background pixel is absorbed into an
    adjacent segment by a 4-connected FIFO flood, except the thin watershed lines (label 0) where two floods
    meet. A slice without any foreground becomes one segment.

    Parameters
    ----------
    foreground : array_like of bool, shape (Y, X) or (Z, Y, X)
        Binarised proposal (``probability > threshold``). A 3D stack is treated slice by slice.

    Returns
    -------
    labels : ndarray of int32, same shape
        Segment labels ``1..N`` (unique across the whole stack) and 0 on watershed lines.

    Notes
    -----
    Follows ``METRICS.md`` §4.2 step 3 exactly, including Fiji's column-major seeding order and neighbour
    order (left, up, right, down), which decide who wins a tie. scikit-image's
    ``watershed(..., watershed_line=True)`` breaks such ties differently (about 5e-4 in V_Rand on the
    EM-stellar fixture).

    Examples
    --------
    Two foreground dots; the background between them is split by a line at equal distance:

    >>> fg = np.zeros((1, 7), bool)
    >>> fg[0, [1, 5]] = True
    >>> thinned_labels(fg)
    array([[1, 1, 1, 0, 2, 2, 2]], dtype=int32)
    """
    array = as_array(foreground, "foreground")
    check_ndim(array, "foreground", (2, 3))
    stack = array.astype(bool, copy=False)
    slices = stack[None] if stack.ndim == 2 else stack
    per_batch = max(1, BATCH_PIXELS // slices[0].size)
    parts, offset = [], 0
    for start in range(0, slices.shape[0], per_batch):
        part = flood_stack(slices[start : start + per_batch])
        part[part > 0] += offset  # keep labels unique across batches
        offset = max(offset, int(part.max()))
        parts.append(part)
    labels = np.concatenate(parts)
    return labels[0] if stack.ndim == 2 else labels


def flood_stack(foreground: np.ndarray, needed: np.ndarray | None = None) -> np.ndarray:
    """Thin each slice of a ``(B, H, W)`` boolean stack in one vectorised pass; unique labels.

    ``needed`` (same shape, optional) marks the pixels whose labels the caller will read. The flood of a slice
    stops once all of its needed background pixels are labelled, since later layers cannot change them; labels
    outside ``needed`` are then undefined. The metrics pass the ground-truth foreground here.
    """
    nslices, height, width = foreground.shape
    if nslices * (height + 2) * (width + 2) >= 2**27:
        raise ValueError(
            f"stack of shape {foreground.shape} is too large for one flood (int32 queue positions); "
            "split it into batches of fewer slices."
        )
    column = height + 2  # transposed, padded layout: flat index = slice, x, y (Fiji's scan order)
    shape = (nslices, width + 2, height + 2)
    slice_size = column * (width + 2)
    fg = np.zeros(shape, bool)
    fg[:, 1:-1, 1:-1] = foreground.transpose(0, 2, 1)

    # One int64 word per pixel holds (label, queue position) so a single gather fetches both. Queue positions
    # grow from layer to layer, so "same layer" is a range test and "not visited yet" is _UNSEEN.
    state = np.empty((fg.size, 2), np.int32)
    label = state[:, 0]
    order = state[:, 1]
    # Basins: 4-connected foreground components, labelled straight into the label half of the state.
    nbasins = ndimage.label(fg, structure=_CROSS_2D_IN_3D, output=state.reshape(*shape, 2)[..., 0])
    order3d = state.reshape(*shape, 2)[..., 1]
    order3d[...] = _UNSEEN
    order3d[:, [0, -1], :] = -1
    order3d[:, :, [0, -1]] = -1
    order3d[fg] = -1
    words = state.view(np.int64).reshape(-1)
    offsets = np.array([-column, -1, column, 1], np.int32)[:, None]  # left, up, right, down (Fiji's order)

    flat_fg = fg.reshape(-1)
    seed = np.zeros_like(flat_fg)
    seed[column:] |= flat_fg[:-column]
    seed[:-column] |= flat_fg[column:]
    seed[1:] |= flat_fg[:-1]
    seed[:-1] |= flat_fg[1:]
    seed &= order == _UNSEEN
    front = np.flatnonzero(seed).astype(np.int32)  # ascending flat index = column-major scan
    del seed
    order[front] = np.arange(front.size, dtype=np.int32)
    base, span = 0, front.size

    if needed is not None:
        need = np.zeros(shape, bool)
        need[:, 1:-1, 1:-1] = needed.transpose(0, 2, 1)
        need &= ~fg
        remaining = need.sum(axis=(1, 2))
        done = remaining == 0
        need = need.reshape(-1)
        front = front[~done[front // slice_size]]

    while front.size:
        count = front.size
        neighbours = front + offsets
        fetched = np.take(words, neighbours, mode="clip").view(np.int32).reshape(4, count, 2)
        near_label = fetched[:, :, 0]  # 0 for lines and for pixels not decided yet
        near_order = fetched[:, :, 1]
        # Previous-layer neighbours are the only decided ones among the four: max and min positive label.
        high = near_label.max(axis=0)
        low = (near_label.view(np.uint32) - np.uint32(1)).min(axis=0).view(np.int32) + 1
        decided = np.where(low != high, 0, np.where(high == 0, -1, high))  # -1: provisional line
        label[front] = decided
        unseen = near_order == _UNSEEN
        # Same-layer neighbours to the right and below: each adjacent same-layer pair is examined once.
        same_layer = (near_order[2:] >= base) & ~unseen[2:]
        _settle_ties(front, decided, neighbours, same_layer, base, words, label, order, offsets)

        if needed is not None:
            reached = front[np.take(need, front, mode="clip")]
            if reached.size:
                remaining -= np.bincount(reached // slice_size, minlength=nslices)
                finished = (remaining == 0) & ~done
                if finished.any():
                    # Later layers cannot change labels already decided: stop flooding these slices.
                    done |= finished
                    keep = ~done[front // slice_size]
                    neighbours, unseen = neighbours[:, keep], unseen[:, keep]

        pushed = neighbours.T[unseen.T]  # pixel-major, neighbour-minor: the order Fiji appends to its queue
        if pushed.size == 0:
            break
        base += span
        span = pushed.size
        rank = np.arange(base, base + span, dtype=np.int32)
        np.minimum.at(order, pushed, rank)
        front = pushed[np.take(words, pushed, mode="clip").view(np.int32)[1::2] == rank]

    labels = np.ascontiguousarray(label.reshape(shape)[:, 1:-1, 1:-1].transpose(0, 2, 1))
    empty = ~foreground.reshape(nslices, -1).any(axis=1)
    if empty.any():
        # No basin: the whole slice is one unreached 4-connected region, hence one segment.
        labels[empty] = (nbasins + 1 + np.arange(int(empty.sum()), dtype=np.int32))[:, None, None]
    return labels


def _settle_ties(
    front: np.ndarray,
    decided: np.ndarray,
    neighbours: np.ndarray,
    same_layer: np.ndarray,
    base: int,
    words: np.ndarray,
    label: np.ndarray,
    order: np.ndarray,
    offsets: np.ndarray,
) -> None:
    """Apply the same-layer part of Fiji's label rule, where the queue order inside the layer matters.

    A pixel's label can only change because of a same-layer neighbour popped before it if the two disagree:
    two different basin labels (the later one becomes a line), or a provisional pixel (it takes the label of
    an earlier labelled neighbour). ``same_layer`` flags the right and down neighbours in the current layer,
    so each adjacent pair is checked once; all other pixels keep the label ``decided`` from the previous
    layer, and provisional ones become lines. Queue positions (``order``) of the current layer start at
    ``base``.
    """
    involved = []
    labelled = decided != 0
    for row, direction in ((0, 2), (1, 3)):  # right, down
        rows = np.flatnonzero(same_layer[row] & labelled)
        if rows.size == 0:
            continue
        other = neighbours[direction, rows]
        other_label = np.take(words, other, mode="clip").view(np.int32)[0::2]
        mine = decided[rows]
        clash = (other_label != 0) & ((other_label != mine) | (other_label == -1))
        if clash.any():
            involved.append(front[rows[clash]])
            involved.append(other[clash])
    provisional = decided == -1
    if provisional.any():
        label[front[provisional]] = 0
    if not involved:
        return
    pixels = np.concatenate(involved)  # a pixel listed twice gets the same result twice: no need to dedupe
    around = pixels + offsets
    near = order[around]
    earlier = (near >= base) & (near < order[pixels])
    verdict = label[pixels]  # the previous-layer verdict (provisional already reset to 0)
    current = verdict
    while True:
        seen = np.where(earlier, label[around], 0)
        high = seen.max(axis=0)
        low = (seen.view(np.uint32) - np.uint32(1)).min(axis=0).view(np.int32) + 1
        several = low != high  # two different labels among the earlier same-layer neighbours
        keep = np.where((high > 0) & (several | (high != verdict)), 0, verdict)
        adopt = np.where(several, 0, high)
        updated = np.where(verdict > 0, keep, adopt)
        if np.array_equal(updated, current):
            return
        current = updated
        label[pixels] = updated
