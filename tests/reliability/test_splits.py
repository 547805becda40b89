"""Issue 11, "no silent wrong answer": one leak-free splitter; the gap is in slices within a volume, 0 between volumes.

``holdout_split`` used to count the gap in whole volumes (3 volumes, fraction 0.34, gap 1 threw volume 1 away),
``kfold`` over several volumes with a 3D model's gap refused every fold, and the benchmark harness held out its
validation slab with its own splitter and no gap.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from emzoo.benchmark.data import Split
from emzoo.training.data import TrainingVolume
from emzoo.training.folds import holdout_split


def _volumes(count: int, depth: int = 4) -> list[TrainingVolume]:
    return [TrainingVolume(np.full((depth, 4, 4), i, np.float32), np.zeros((depth, 4, 4), np.uint8))
            for i in range(count)]


def _ids(volumes) -> list[int]:
    return [int(v.raw[0, 0, 0]) for v in volumes]


@pytest.mark.parametrize("gap", [0, 1, 5])
def test_holdout_over_volumes_drops_no_volume_for_the_gap(gap):
    train, val, record = holdout_split(_volumes(3), 0.34, gap=gap)
    assert _ids(train) == [0, 1] and _ids(val) == [2]  # gap=1 used to train on volume 0 only
    assert record == {"unit": "volume", "train": [0, 1], "val": [2], "gap": 0}


def test_holdout_in_one_volume_counts_the_gap_in_slices():
    vol = TrainingVolume(np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 2, 2)), np.zeros((10, 2, 2)))
    train, val, record = holdout_split([vol], 0.2, gap=2)
    assert record == {"unit": "slice", "train": [0, 1, 2, 3, 4, 5], "val": [8, 9], "gap": 2}
    assert [t.raw[:, 0, 0].tolist() for t in train] == [[0, 1, 2, 3, 4, 5]] and val[0].raw[:, 0, 0].tolist() == [8, 9]
    with pytest.raises(ValueError, match="gap must be an integer >= 0"):
        holdout_split([vol], 0.2, gap=-1)


@pytest.mark.parametrize("gap", [None, 5])
def test_kfold_over_volumes_with_a_3d_model_gap_keeps_training_volumes(monkeypatch, gap):
    """net2d3d's default gap is its input depth (5 slices): it must not be applied between volumes."""
    from emzoo.training import kfold

    finetune_module = importlib.import_module("emzoo.training.finetune")  # the package exports a same-named function

    seen = []

    def fake_finetune(model, train, val, **kwargs):
        seen.append(([int(t[0][0, 0, 0]) for t in train], [int(v[0][0, 0, 0]) for v in val]))
        return object(), {"initial_weights_sha256": str(len(seen)), "val_metrics": {"f1": 1.0}}

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    volumes = [(np.full((4, 8, 8), i, np.float32), np.zeros((4, 8, 8), np.uint8)) for i in range(3)]
    result = kfold("net2d3d", volumes, k=3, gap=gap, steps=1)  # raised "fold 0 keeps no training slices"
    assert seen == [([1, 2], [0]), ([0, 2], [1]), ([0, 1], [2])]
    assert all(fold["unit"] == "volume" and fold["gap"] == 0 for fold in result.folds)


def test_benchmark_holdout_uses_the_training_splitter_with_a_gap(monkeypatch):
    import emzoo.training.folds as folds
    from emzoo.benchmark.harness import _holdout

    calls = []
    real = folds.holdout_split

    def spy(*args, **kwargs):
        calls.append(kwargs.get("gap"))
        return real(*args, **kwargs)

    monkeypatch.setattr(folds, "holdout_split", spy)
    raw = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 3, 3), np.float32)
    fit, val = _holdout(Split(raw, np.zeros((10, 3, 3), np.uint8), "raw.tif", "labels.tif"), 0.2)
    assert calls == [1]
    assert fit.raw[:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]  # slice 7, next to the validation slab, is dropped
    assert val.raw[:, 0, 0].tolist() == [8, 9]
    assert fit.labels.shape[0] == 7 and val.labels.shape[0] == 2 and fit.raw_path == "raw.tif"
    # too small to keep a training slice, no labels, a 2D image: no validation split, as before
    small = Split(raw[:2], np.zeros((2, 3, 3), np.uint8), "raw.tif", "labels.tif")
    unlabelled = Split(raw, None, "raw.tif", None)
    flat = Split(raw[0], np.zeros((3, 3), np.uint8), "raw.tif", "labels.tif")
    for split, fraction in ((small, 0.5), (unlabelled, 0.2), (flat, 0.2), (small, 0.0)):
        kept, none = _holdout(split, fraction)
        assert kept is split and none is None
