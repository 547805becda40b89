"""Training never writes a preset from non-finite numbers, and test/validation data never choose anything."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.training import finetune
from emzoo.training.data import load_pairs

TINY = {"build_kwargs": {"widths": (4, 8, 16, 32, 64)}, "patch_size": 32, "batch_size": 2, "steps": 2,
        "progress": False, "mixed_precision": False}


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.random((2, 64, 64)).astype(np.float32)
    return raw, (raw > 0.5).astype(np.uint8)


@pytest.mark.parametrize("lr", [-1.0, 0.0, float("nan"), float("inf")])
def test_bad_learning_rate_refused(lr, tmp_path):
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        finetune("unet2d_fb", _pair(), learning_rate=lr, out_dir=tmp_path / "p", **TINY)
    assert not (tmp_path / "p" / "emzoo.json").exists()


def test_nan_in_raw_refused(tmp_path):
    raw, labels = _pair()
    raw[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        finetune("unet2d_fb", (raw, labels), out_dir=tmp_path / "p", **TINY)
    assert not (tmp_path / "p" / "emzoo.json").exists()


def test_diverging_loss_stops_without_preset(tmp_path):
    with pytest.raises(RuntimeError, match="no preset was written"):
        finetune("unet2d_fb", _pair(), learning_rate=1e30, optimizer="sgd", out_dir=tmp_path / "p", **TINY)
    assert not (tmp_path / "p" / "emzoo.json").exists()


def test_validation_equal_to_training_refused(tmp_path):
    with pytest.raises(ValueError, match="validation data is the training data"):
        finetune("unet2d_fb", _pair(), _pair(), out_dir=tmp_path / "p", **TINY)


def test_test_equal_to_training_refused(tmp_path):
    with pytest.raises(ValueError, match="test data is the training data"):
        finetune("unet2d_fb", _pair(), test=_pair(), **TINY)


def test_no_fallback_from_val_to_test(tmp_path):
    import tifffile

    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        raw, labels = _pair(1 if split == "test" else 0)
        tifffile.imwrite(tmp_path / split / "raw.tif", raw)
        tifffile.imwrite(tmp_path / split / "labels.tif", labels)
    with pytest.raises(FileNotFoundError, match="has no val/ folder"):
        load_pairs(tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match="has no val/ folder"):
        finetune("unet2d_fb", tmp_path, tmp_path, **TINY)


def test_multi_valued_labels_warn_before_binarising():
    from emzoo.training.data import prepare_labels

    with pytest.warns(UserWarning, match="every non-zero value becomes foreground"):
        out = prepare_labels(np.array([[0, 7], [255, 0]]), 1)
    assert out.tolist() == [[0, 1], [1, 0]]


def test_all_background_labels_warn():
    from emzoo.training.data import prepare_labels

    with pytest.warns(UserWarning, match="no foreground at all"):
        prepare_labels(np.zeros((4, 4), np.uint8), 1)
