"""Leak-free splits of serial sections: contiguous slabs along z with a gap, or whole volumes.

EM stacks are serial sections: neighbouring slices are near-duplicates, so a random split of slices puts the same
structures on both sides. Splits here are contiguous slabs along z with a ``gap`` of dropped slices on each side of the
validation slab (at least the model's z context), and a stack with several volumes is split by whole volumes. The
gap is counted in slices *within* a volume; between separate volumes it is 0 (no slice of one volume neighbours a
slice of another), so several volumes are never thinned out by the gap. The training side is returned as separate
pieces, so no training window straddles the removed slab.

numpy only: fine-tuning (its automatic validation slab), K-fold cross-validation (:mod:`emzoo.training.folds`) and the
benchmark harness all split with these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from emzoo.training.data import TrainingVolume

__all__ = ["slab_folds", "split_volumes", "holdout_split", "auto_validation", "AUTO_VAL_FRACTION"]


def slab_folds(n: int, k: int, *, gap: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` contiguous validation slabs over ``n`` slices; training keeps every slice farther than ``gap`` from them.

    Parameters
    ----------
    n : int
        Number of slices (or volumes).
    k : int
        Number of folds (2 <= k <= n).
    gap : int
        Slices dropped on each side of the validation slab.

    Returns
    -------
    list of (train indices, validation indices)

    Raises
    ------
    ValueError
        If ``k`` does not fit ``n`` or a fold would have no training slices.

    Examples
    --------
    >>> train, val = slab_folds(10, 5, gap=1)[1]
    >>> train.tolist(), val.tolist()
    ([0, 5, 6, 7, 8, 9], [2, 3])
    """
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of slices/volumes ({n}), got k={k}.")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}.")
    bounds = np.linspace(0, n, k + 1).round().astype(int)
    folds = []
    for i in range(k):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        val = np.arange(lo, hi)
        train = np.array([j for j in range(n) if j < lo - gap or j >= hi + gap], dtype=int)
        if train.size == 0:
            raise ValueError(f"fold {i} keeps no training slices with gap={gap}; use fewer folds or a smaller gap.")
        folds.append((train, val))
    return folds


def _runs(indices: np.ndarray) -> list[np.ndarray]:
    """Split sorted indices into runs of consecutive values."""
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    return np.split(indices, breaks)


def split_volumes(volumes: Sequence[TrainingVolume], train_idx: np.ndarray, val_idx: np.ndarray,
                  ) -> tuple[list[TrainingVolume], list[TrainingVolume]]:
    """Apply slab indices: z slices of a single volume, or whole volumes when there are several.

    Returns
    -------
    train, val : list of TrainingVolume
        The training side as one piece per run of consecutive slices (or per volume).
    """

    def cut(vol: TrainingVolume, idx: np.ndarray) -> TrainingVolume:
        sl = slice(int(idx[0]), int(idx[-1]) + 1)
        return replace(vol, raw=vol.raw[sl], labels=vol.labels[sl],
                       weights=None if vol.weights is None else vol.weights[sl])

    if len(volumes) == 1:
        vol = volumes[0]
        return [cut(vol, r) for r in _runs(np.sort(train_idx))], [cut(vol, r) for r in _runs(np.sort(val_idx))]
    return [volumes[int(i)] for i in train_idx], [volumes[int(i)] for i in val_idx]


def _units(volumes: Sequence[TrainingVolume]) -> int:
    return volumes[0].raw.shape[0] if len(volumes) == 1 else len(volumes)


def _unit_gap(volumes: Sequence[TrainingVolume], gap: int) -> int:
    """The gap in split units: ``gap`` slices within a single volume, 0 between whole volumes."""
    if int(gap) != gap or gap < 0:
        raise ValueError(f"gap must be an integer >= 0, got {gap!r}.")
    return int(gap) if len(volumes) == 1 else 0


def holdout_split(volumes: Sequence[TrainingVolume], fraction: float, *, gap: int = 1,
                  ) -> tuple[list[TrainingVolume], list[TrainingVolume], dict[str, Any]]:
    """Hold out the last ``fraction`` of the slices (or volumes) for validation, ``gap`` slices before it dropped.

    Parameters
    ----------
    volumes : sequence of TrainingVolume
        One volume (split into slices) or several (split into whole volumes).
    fraction : float
        Validation share, in (0, 1), of the slices (one volume) or of the volumes (several).
    gap : int
        Slices dropped before the validation slab *within* a volume. Separate volumes do not neighbour each
        other, so between volumes the gap is 0: no training volume is dropped.

    Returns
    -------
    train, val : list of TrainingVolume
    split : dict
        ``{"unit": "slice"|"volume", "train": [...], "val": [...], "gap": gap}`` (recorded in the history);
        ``gap`` is the gap applied, in units (0 for volumes).

    Examples
    --------
    >>> from emzoo.training.data import TrainingVolume
    >>> vol = TrainingVolume(np.zeros((10, 4, 4)), np.zeros((10, 4, 4)))
    >>> train, val, split = holdout_split([vol], 0.2)
    >>> split["train"], split["val"]
    ([0, 1, 2, 3, 4, 5, 6], [8, 9])
    >>> several = [TrainingVolume(np.zeros((4, 4, 4)), np.zeros((4, 4, 4))) for _ in range(3)]
    >>> holdout_split(several, 0.34, gap=1)[2]
    {'unit': 'volume', 'train': [0, 1], 'val': [2], 'gap': 0}
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}.")
    gap = _unit_gap(volumes, gap)
    n = _units(volumes)
    n_val = max(1, int(round(fraction * n)))
    val_idx = np.arange(n - n_val, n)
    train_idx = np.arange(0, max(0, n - n_val - gap))
    if train_idx.size == 0:
        raise ValueError(f"holding out {n_val} of {n} slices/volumes with gap={gap} leaves nothing to train on; "
                         "use a smaller fraction or more data.")
    train, val = split_volumes(volumes, train_idx, val_idx)
    split = {"unit": "slice" if len(volumes) == 1 else "volume", "train": train_idx.tolist(),
             "val": val_idx.tolist(), "gap": gap}
    return train, val, split


#: Automatic validation: this share of a stack's slices (the last slab, one slice of gap before it), at least one.
AUTO_VAL_FRACTION = 0.1
_AUTO_VAL_MIN_SLICES = 5


def auto_validation(volumes: list[TrainingVolume], dims: str,
                    ) -> tuple[list[TrainingVolume], list[TrainingVolume] | None, dict[str, Any] | None]:
    """Carve a validation slab from the training data when none is given (never the test split).

    2D models only: a stack of at least 5 slices gives its last 10 % (one slice of gap), several stacks their last
    one. 3D models and single images train on everything, without validation (recorded in the split record).
    """
    units = volumes[0].raw.shape[0] if len(volumes) == 1 else len(volumes)
    if dims != "2D" or (len(volumes) == 1 and units < _AUTO_VAL_MIN_SLICES) or (len(volumes) > 1 and units < 3):
        why = ("3D models keep every training voxel" if dims != "2D"
               else f"{units} slice(s)/volume(s) are too few to hold some out")
        return volumes, None, {"auto": True, "validation": None, "reason": why}
    train, val, split = holdout_split(volumes, AUTO_VAL_FRACTION, gap=1)
    split.update({"auto": True, "fraction": AUTO_VAL_FRACTION})
    return train, val, split
