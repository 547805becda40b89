"""Leak-free splits: a held-out slab for validation, and K-fold cross-validation with fresh weights per fold.

EM stacks are serial sections: neighbouring slices are near-duplicates, so a random split of slices puts the same
structures on both sides. Splits here are contiguous slabs along z with a ``gap`` of dropped slices on each side of the
validation slab (at least the model's z context), and a stack with several volumes is split by whole volumes. The
gap is counted in slices *within* a volume; between separate volumes it is 0 (no slice of one volume neighbours a
slice of another), so several volumes are never thinned out by the gap. The training side is returned as separate
pieces, so no training window straddles the removed slab. The benchmark harness holds out its validation slab with
the same :func:`holdout_split`.

EM-stellar's K-fold reused one model object across folds (``TRAINING.md`` §1.3 bug 1): fold k started from fold
k-1's weights and optimiser state. :func:`kfold` builds every fold's model and optimiser from scratch, with its own
seed, and records a hash of each fold's initial weights so that this can be checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from emzoo.training.data import TrainingVolume, load_pairs

__all__ = ["slab_folds", "split_volumes", "holdout_split", "kfold", "KFoldResult"]


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
        return TrainingVolume(vol.raw[sl], vol.labels[sl], None if vol.weights is None else vol.weights[sl])

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


@dataclass
class KFoldResult:
    """What :func:`kfold` returns.

    Attributes
    ----------
    models, histories : list
        One trained model and :func:`emzoo.finetune` history per fold.
    folds : list of dict
        The train/validation indices of each fold (slices, or volumes when several were given).
    metrics : list of dict
        Validation scores of each fold on its held-out slab.
    mean_metrics : dict
        Mean of each score over the folds.
    ensemble : emzoo.inference.Ensemble
        Mean of the fold models' probabilities, each fold normalising with its own training statistics (for new
        data only: every training slice was seen by k-1 of the folds).
    test_metrics : dict or None
        With ``test=``: ``{"fold0": {...}, ..., "ensemble": {...}}``.
    """

    models: list[Any]
    histories: list[dict[str, Any]]
    folds: list[dict[str, Any]]
    metrics: list[dict[str, float]]
    mean_metrics: dict[str, float]
    ensemble: Any
    test_metrics: dict[str, dict[str, float]] | None = field(default=None)


def _default_gap(model_name: Any, patch_size: Any) -> int:
    """One slice for 2D models; the input depth for multi-frame and 3D ones."""
    from emzoo.registry import get_entry

    if not isinstance(model_name, str):
        return 1
    meta = get_entry(model_name).info
    if meta.dims == "2D":
        return 1
    if meta.dims == "3D->2D":
        return int(meta.input_shape[0])
    if patch_size is not None and not isinstance(patch_size, int) and len(patch_size) == 3:
        return int(patch_size[0])
    from emzoo.training.recipes import default_recipe

    return int(default_recipe(model_name).patch_size[0])


def kfold(
    model_name: str | Callable[[], keras.Model],
    data: Any,
    *,
    k: int = 5,
    gap: int | None = None,
    test: Any = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    **finetune_kwargs: Any,
) -> KFoldResult:
    """K-fold cross-validation over contiguous slabs, with a freshly built model and optimiser per fold.

    Parameters
    ----------
    model_name : str or callable
        Entry name (each fold calls ``emzoo.build``), or a function returning a *new* model each call.
    data : data
        Training data in any form :func:`emzoo.finetune` accepts.
    k : int
        Number of folds.
    gap : int, optional
        Slices dropped on each side of a validation slab within a volume (default: 1 for 2D models, the input
        depth for 3D and multi-frame ones). With several volumes, folds are whole volumes and the gap between
        them is 0.
    test : data, optional
        Held-out test data, scored by every fold model and by the fold-mean ensemble.
    seed : int
        Fold ``i`` trains with seed ``seed + i`` (different initial weights and batches per fold).
    out_dir : path, optional
        Each fold's preset goes to ``out_dir/fold{i}``; a summary to ``out_dir/kfold.json``.
    **finetune_kwargs
        Passed to :func:`emzoo.finetune` (``steps``, ``batch_size``, ``patch_size``, ``recipe``...).

    Returns
    -------
    KFoldResult

    Examples
    --------
    >>> result = kfold("emnet_v1_bn", "cardiac_mito/", k=5, steps=2000)  # doctest: +SKIP
    >>> result.mean_metrics["f1"]  # doctest: +SKIP
    """
    from emzoo.training.data import prepare_labels
    from emzoo.training.evaluate import score
    from emzoo.training.finetune import finetune

    volumes, source = load_pairs(data)
    if gap is None:
        gap = _default_gap(model_name, finetune_kwargs.get("patch_size"))
    gap = _unit_gap(volumes, gap)
    n = _units(volumes)
    folds = slab_folds(n, k, gap=gap)
    unit = "slice" if len(volumes) == 1 else "volume"
    finetune_kwargs.setdefault("data_name", source.name)
    models, histories, metrics, records = [], [], [], []
    for i, (train_idx, val_idx) in enumerate(folds):
        train, val = split_volumes(volumes, train_idx, val_idx)
        # A fresh model per fold: a name is rebuilt by finetune; a factory is called again.
        start = model_name if isinstance(model_name, str) else model_name()
        fold_dir = None if out_dir is None else Path(out_dir) / f"fold{i}"
        model, history = finetune(
            start, [(v.raw, v.labels) + ((v.weights,) if v.weights is not None else ()) for v in train],
            [(v.raw, v.labels) for v in val], seed=seed + i, out_dir=fold_dir, **finetune_kwargs)
        history["fold"] = i
        models.append(model)
        histories.append(history)
        metrics.append(dict(history.get("val_metrics") or {}))
        records.append({"fold": i, "unit": unit, "train": train_idx.tolist(), "val": val_idx.tolist(), "gap": gap,
                        "initial_weights_sha256": history["initial_weights_sha256"]})
    keys = set.intersection(*(set(m) for m in metrics)) if metrics and all(metrics) else set()
    mean = {key: float(np.mean([m[key] for m in metrics])) for key in sorted(keys)}
    from emzoo.inference import Ensemble, predict

    ensemble = Ensemble(models, mode="average")
    test_metrics = None
    if test is not None:
        test_volumes, _ = load_pairs(test, split="test")
        labels = np.concatenate([prepare_labels(v.labels, histories[0]["num_classes"]).ravel() for v in test_volumes])

        def scored(member: Any) -> dict[str, float]:
            # normalization="auto": each model applies the spec it was trained with (its emzoo_metadata).
            probs = [np.asarray(predict(member, v.raw, progress=False)) for v in test_volumes]
            return score(labels, np.concatenate([p.reshape(-1, p.shape[-1]) for p in probs]))

        test_metrics = {f"fold{i}": scored(m) for i, m in enumerate(models)}
        test_metrics["ensemble"] = scored(ensemble)
    result = KFoldResult(models=models, histories=histories, folds=records, metrics=metrics, mean_metrics=mean,
                         ensemble=ensemble, test_metrics=test_metrics)
    if out_dir is not None:
        from emzoo.io.atomic import atomic_file

        summary = {"k": k, "gap": gap, "unit": unit, "seed": seed, "training_data": {"name": source.name,
                                                                                        "sha256": source.sha256},
                   "folds": [{**r, "metrics": m} for r, m in zip(records, metrics, strict=True)],
                   "mean_metrics": mean, "test_metrics": test_metrics}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with atomic_file(Path(out_dir) / "kfold.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return result
