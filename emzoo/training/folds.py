"""K-fold cross-validation with fresh weights per fold, over the leak-free slabs of :mod:`emzoo.training.splits`.

The split functions (:func:`slab_folds`, :func:`split_volumes`, :func:`holdout_split`) live in the numpy-only
:mod:`emzoo.training.splits`, below fine-tuning; they are re-exported here. Cross-validation sits above
:func:`emzoo.finetune`, which it calls once per fold.

EM-stellar's K-fold reused one model object across folds (``TRAINING.md`` §1.3 bug 1): fold k started from fold
k-1's weights and optimiser state. :func:`kfold` builds every fold's model and optimiser from scratch, with its own
seed, and records a hash of each fold's initial weights so that this can be checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from emzoo.training.data import load_pairs
from emzoo.training.splits import _unit_gap, _units, holdout_split, slab_folds, split_volumes

__all__ = ["slab_folds", "split_volumes", "holdout_split", "kfold", "KFoldResult"]


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
        Passed to :func:`emzoo.finetune` (``steps``, ``batch_size``, ``patch_size``, ``recipe``...). ``keep_best``
        defaults to False here: each fold keeps its last step's weights, so its validation slab scores weights it
        did not choose (``fold_score_of`` in each fold record says which).

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
    # A fold's score must come from weights its validation slab did not choose (the best checkpoint scored on the
    # slab that picked it is optimistic): the last step's weights, unless the caller asks otherwise.
    finetune_kwargs.setdefault("keep_best", False)
    chosen = ("the last step's weights (the validation slab chose nothing)" if not finetune_kwargs["keep_best"] else
              "the best checkpoint on the validation slab (optimistic: the slab chose the weights it scores)")
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
                        "initial_weights_sha256": history["initial_weights_sha256"], "fold_score_of": chosen})
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

        summary = {"k": k, "gap": gap, "unit": unit, "seed": seed, "fold_score_of": chosen, "training_data": {"name": source.name,
                                                                                        "sha256": source.sha256},
                   "folds": [{**r, "metrics": m} for r, m in zip(records, metrics, strict=True)],
                   "mean_metrics": mean, "test_metrics": test_metrics}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with atomic_file(Path(out_dir) / "kfold.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return result
