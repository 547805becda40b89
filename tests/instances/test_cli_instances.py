"""``emzoo predict --instances METHOD [--min-size N]``: uint32 labels in memory, one-line refusals otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from emzoo.cli.main import app
from emzoo.inference import foreground, predict
from emzoo.inference.instances import instances
from emzoo.io import read, write
from tests.inference import toys
from tests.reliability.helpers import assert_one_line_error


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_instances")
    toys.tiny_unet().save(root / "tiny.keras")
    volume = (np.random.default_rng(0).random((2, 40, 36)) * 255).astype(np.uint8)
    write(root / "in.tif", volume, voxel_size=(30.0, 5.0, 5.0))
    return root


def _run(files, output, *extra):
    return CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(files / "in.tif"), str(output),
                                    "--tile", "64", "--no-progress", *extra])


@pytest.mark.parametrize("method", ["cc", "distance_ws", "boundary_ws"])
def test_writes_uint32_labels_like_the_api(files, method):
    out = files / f"{method}.tif"
    result = _run(files, out, "--instances", method, "--min-size", "3", "--threshold", "0.45")
    assert result.exit_code == 0, result.output
    assert "emzoo predict: 2,880 voxels" in result.output
    labels = read(out)
    data = np.asarray(labels.data)
    assert data.dtype == np.uint32 and data.shape == (2, 40, 36)
    ids = np.unique(data[data > 0])
    assert np.array_equal(ids, np.arange(1, ids.size + 1))  # consecutive
    # same labels as the Python API on the same prediction (voxel size 30, 5, 5 -> sampling 6, 1, 1)
    prob = foreground(predict(toys.tiny_unet(), np.asarray(read(files / "in.tif").data), tile=64, progress=False))
    expected = instances(prob, method, threshold=0.45, min_size=3, sampling=(6, 1, 1))
    assert np.array_equal(data, expected)


def test_existing_zarr_output_needs_overwrite(files):
    # labels are written whole at the end (tests/instances/test_blockwise_instances.py), so no resume: --overwrite
    (files / "out.zarr").mkdir()
    (files / "out.zarr" / "keep").write_text("x")
    result = _run(files, files / "out.zarr", "--instances", "cc")
    assert_one_line_error(result, 1, "already exists", "--overwrite")
    assert (files / "out.zarr" / "keep").read_text() == "x"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--instances", "watershed"), "--instances must be one of 'cc', 'distance_ws', 'boundary_ws'"),
        (("--min-size", "3"), "--min-size applies to --instances"),
        (("--instances", "cc", "--min-size", "-1"), "--min-size must be an integer >= 0"),
        (("--instances", "cc", "--min-size", "2.5"), "--min-size must be an integer >= 0"),
        (("--instances", "cc", "--foreground"), "pick one"),
        (("--instances", "cc", "--threshold", "1"), "--threshold must be"),
    ],
)
def test_bad_options(files, extra, fragment):
    result = _run(files, files / "bad.tif", *extra)
    assert_one_line_error(result, 2, fragment)
    assert not (files / "bad.tif").exists()
