"""``emzoo predict``: in-memory and blockwise paths, the summary line, and one-line errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from emzoo.cli.main import app
from emzoo.io import read, write
from tests.inference import toys

SUMMARY = re.compile(r"emzoo predict: ([\d,]+) voxels in [\d.]+ s \(([\d,]+) voxels/s\) -> ")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    toys.tiny_unet().save(root / "tiny.keras")
    volume = (np.random.default_rng(0).random((2, 40, 36)) * 255).astype(np.uint8)
    write(root / "in.tif", volume, voxel_size=(30.0, 5.0, 5.0))
    write(root / "in.zarr", volume, chunks=(1, 20, 18))
    return root


def test_in_memory_mask(files):
    result = CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(files / "in.tif"),
                                      str(files / "mask.tif"), "--threshold", "0.5", "--tile", "64",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    match = SUMMARY.search(result.output)
    assert match and match.group(1) == f"{2 * 40 * 36:,}"
    mask = read(files / "mask.tif")
    assert mask.dtype == np.uint8 and mask.shape == (2, 40, 36) and set(np.unique(mask.data)) <= {0, 1}
    assert mask.voxel_size == (30.0, 5.0, 5.0)


def test_blockwise_zarr_with_tta(files):
    args = ["predict", str(files / "tiny.keras"), str(files / "in.zarr"), str(files / "out.zarr"), "--block",
            "1,32,32", "--tta", "d4", "--foreground", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert SUMMARY.search(result.output)
    out = read(files / "out.zarr")
    assert out.shape == (2, 40, 36) and out.data.chunksize == (1, 32, 32)
    again = CliRunner().invoke(app, args)  # a finished run is recognised and skipped
    assert again.exit_code == 0


def test_errors(files):
    result = CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(files / "missing.tif"),
                                      str(files / "x.tif"), "--no-progress"])
    assert result.exit_code == 1 and "no such file or folder" in result.output
    result = CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(files / "in.tif"),
                                      str(files / "x.tif"), "--tile", "a,b"])
    assert result.exit_code == 2 and "--tile must be an int" in result.output
