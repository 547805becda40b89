"""``emzoo finetune`` end to end on a tiny dataset folder: writes a preset that ``emzoo.load`` accepts."""

from __future__ import annotations

import json

import numpy as np
import tifffile
from typer.testing import CliRunner

import emzoo
from emzoo.cli.main import app


def _folder(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 1)):
        (root / split).mkdir(parents=True)
        labels = np.zeros((n, 32, 32), np.uint8)
        labels[:, 8:20, 10:24] = 255
        raw = (60 + 0.5 * labels + rng.normal(0, 10, labels.shape)).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(root / split / "raw.tif", raw, photometric="minisblack")
        tifffile.imwrite(root / split / "labels.tif", labels, photometric="minisblack")
    return root


def test_finetune_command_writes_a_loadable_preset(tmp_path):
    data = _folder(tmp_path / "data")
    out = tmp_path / "preset"
    result = CliRunner().invoke(app, ["finetune", "unet2d_fb", "--data", str(data), "--out", str(out), "--steps", "2",
                                      "--batch-size", "2", "--patch-size", "32", "--val-fraction", "0.25", "-q",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "test F1" in result.output and "validation F1" in result.output
    meta = json.loads((out / "emzoo.json").read_text())
    assert meta["entry"] == "unet2d_fb" and meta["recipe"]["name"] == "emzoo"
    assert meta["metrics"]["test_split"].startswith("data test")
    assert meta["extra"]["split"]["val"] == [3]
    model = emzoo.load(out)
    assert model.output_shape[-1] == 1


def test_finetune_command_rejects_conflicting_options(tmp_path):
    result = CliRunner().invoke(app, ["finetune", "unet2d_fb", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                      "--kfold", "3", "--val-fraction", "0.2"])
    assert result.exit_code == 2 and "exclude" in result.output
