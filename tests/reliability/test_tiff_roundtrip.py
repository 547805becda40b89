"""Rule 3 of issue 11: every TIFF emzoo writes reads back in tifffile with its shape and consistent metadata (no
"ImageJ series metadata invalid or corrupted file" complaint, no warning)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import tifffile

from emzoo.io import read, write
from tests.reliability.helpers import invoke

SHAPES = {"YX": (40, 36), "YX1": (40, 36, 1), "ZYX": (3, 40, 36), "ZYXC": (3, 40, 36, 2), "ZYX1": (3, 40, 36, 1)}


def _read_cleanly(path, caplog):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tifffile"), warnings.catch_warnings():
        warnings.simplefilter("error")
        data = tifffile.imread(path)
        with tifffile.TiffFile(path) as tif:
            pages, series = len(tif.pages), tif.series[0]
            meta = tif.imagej_metadata
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    return data, pages, series, meta


@pytest.mark.parametrize("dtype", ["uint8", "float32", "int32"])
@pytest.mark.parametrize("key", list(SHAPES))
def test_tiff_round_trip(tmp_path, caplog, key, dtype):
    shape = SHAPES[key]
    array = (np.random.default_rng(1).random(shape) * 200).astype(dtype)
    spatial = 3 if key.startswith("Z") else 2
    voxel = (30.0, 5.0, 4.0)[-spatial:]
    path = write(tmp_path / "x.tif", array, voxel_size=voxel)
    data, pages, series, meta = _read_cleanly(path, caplog)
    assert data.shape == shape and data.dtype == array.dtype
    np.testing.assert_array_equal(data, array)
    assert pages == (shape[0] if key.startswith("Z") else 1)  # one page per z slice
    if meta is not None:  # an ImageJ header must agree with the file
        assert meta.get("images", 1) == pages
    volume = read(path)
    assert volume.voxel_size == voxel
    assert int(np.prod(volume.shape)) == int(np.prod(shape))


def test_cli_2d_probability_tiff_reads_back(model_file, inputs, caplog):
    result = invoke(model_file, inputs / "in2d.tif", inputs / "prob.tif")
    assert result.exit_code == 0, result.output
    data, pages, series, _ = _read_cleanly(inputs / "prob.tif", caplog)
    assert data.shape == (40, 36, 1) and pages == 1 and series.axes == "YXC"
    assert np.isfinite(data).all()


def test_tiff_refuses_axes_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="axes YX, ZYX, YXC or ZYXC"):
        write(tmp_path / "x.tif", np.zeros((2, 4, 4), np.uint8), axes="YX")
    assert not list(tmp_path.iterdir())
