"""K-fold without contamination: disjoint contiguous slabs with a gap, fresh weights per fold, fold-mean ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emzoo.training import kfold, slab_folds
from emzoo.training.data import TrainingVolume
from emzoo.training.folds import holdout_split, split_volumes
from tests.training.test_finetune import TINY, _blobs


@pytest.mark.parametrize("n, k, gap", [(20, 5, 1), (20, 6, 2), (7, 3, 0), (165, 5, 5)])
def test_slab_folds_are_contiguous_disjoint_and_gapped(n, k, gap):
    folds = slab_folds(n, k, gap=gap)
    assert len(folds) == k
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(n))  # every slice validated once
    for train, val in folds:
        assert (np.diff(val) == 1).all()  # one contiguous slab
        assert not set(train) & set(val)
        # no training slice within `gap` of the validation slab
        assert np.min(np.abs(train[:, None] - val[None, :])) > gap


def test_slab_fold_errors():
    with pytest.raises(ValueError, match="between 2"):
        slab_folds(3, 4)
    with pytest.raises(ValueError, match="no training slices"):
        slab_folds(4, 2, gap=3)


def test_split_volumes_returns_separate_training_pieces():
    vol = TrainingVolume(np.arange(10)[:, None, None] * np.ones((10, 2, 2)), np.zeros((10, 2, 2)))
    train, val = split_volumes([vol], np.array([0, 1, 2, 7, 8, 9]), np.array([4, 5]))
    assert [t.raw[:, 0, 0].tolist() for t in train] == [[0, 1, 2], [7, 8, 9]]
    assert val[0].raw[:, 0, 0].tolist() == [4, 5]
    several = [TrainingVolume(np.zeros((2, 2, 2)) + i, np.zeros((2, 2, 2))) for i in range(3)]
    train, val = split_volumes(several, np.array([0, 2]), np.array([1]))
    assert [float(t.raw[0, 0, 0]) for t in train] == [0.0, 2.0] and float(val[0].raw[0, 0, 0]) == 1.0
    for gap in (0, 1, 16):  # the gap is in slices within a volume: none between volumes (issue 11)
        _, _, record = holdout_split(several, 0.34, gap=gap)
        assert record == {"unit": "volume", "train": [0, 1], "val": [2], "gap": 0}


def test_kfold_builds_fresh_weights_per_fold_and_averages_the_folds(tmp_path):
    raw, labels = _blobs(n=5)
    test = _blobs(n=1, seed=9)
    result = kfold("unet", (raw, labels), k=2, gap=1, test=test, steps=2, batch_size=2, patch_size=32,
                   build_kwargs=TINY, progress=False, workers=1, out_dir=tmp_path / "cv")
    f0, f1 = result.histories
    # fold 1 starts from freshly built weights: not fold 0's initial weights, not fold 0's trained weights
    assert f1["initial_weights_sha256"] != f0["initial_weights_sha256"]
    assert f1["initial_weights_sha256"] != f0["final_weights_sha256"]
    assert result.models[0] is not result.models[1]
    # validation slabs are disjoint from their training slices
    for fold in result.folds:
        assert not set(fold["train"]) & set(fold["val"])
    assert set(result.metrics[0]) >= {"f1", "ppv", "sensitivity"}
    assert result.mean_metrics["f1"] == pytest.approx(np.mean([m["f1"] for m in result.metrics]))
    assert set(result.test_metrics) == {"fold0", "fold1", "ensemble"}
    summary = json.loads((tmp_path / "cv" / "kfold.json").read_text())
    assert summary["k"] == 2 and len(summary["folds"]) == 2
    # each fold is scored with weights its validation slab did not choose: the last step's
    assert "last step" in summary["fold_score_of"] and "last step" in result.folds[0]["fold_score_of"]
    for history in result.histories:
        assert history["val_metrics"] == {k: v for k, v in history["val"][-1].items() if k != "step"}
    assert (tmp_path / "cv" / "fold0" / "emzoo.json").exists() and (tmp_path / "cv" / "fold1" / "emzoo.json").exists()
