"""``emzoo predict --preview``: the mid-sections PNG, in memory (2D, 3D) and read lazily from a blockwise .zarr."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from emzoo.cli.main import app
from emzoo.io import write
from tests.inference import toys


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    toys.tiny_unet().save(root / "tiny.keras")
    rng = np.random.default_rng(0)
    write(root / "image.tif", (rng.random((40, 36)) * 255).astype(np.uint8))
    volume = (rng.random((6, 40, 36)) * 255).astype(np.uint8)
    write(root / "volume.tif", volume, voxel_size=(30.0, 5.0, 5.0))
    write(root / "volume.zarr", volume, chunks=(2, 20, 18))
    return root


def _predict(files, src, dst, *extra):
    return CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(files / src), str(files / dst),
                                    "--tile", "64", "--no-progress", *extra])


def test_preview_2d(files):
    result = _predict(files, "image.tif", "image_prob.tif", "--preview", str(files / "image.png"))
    assert result.exit_code == 0, result.output
    assert f"wrote preview {files / 'image.png'}" in result.output
    assert imread(files / "image.png").ndim == 3


def test_preview_3d_in_memory_and_blockwise(files):
    result = _predict(files, "volume.tif", "volume_mask.tif", "--threshold", "0.5", "--preview",
                      str(files / "mem.png"))
    assert result.exit_code == 0, result.output
    result = _predict(files, "volume.zarr", "out.zarr", "--block", "2,20,18", "--preview", str(files / "zarr.png"))
    assert result.exit_code == 0, result.output
    assert f"wrote preview {files / 'zarr.png'}" in result.output
    for name in ("mem.png", "zarr.png"):
        picture = imread(files / name)
        assert picture.ndim == 3 and picture.shape[1] > 2 * picture.shape[0]  # three sections side by side


def test_preview_reads_only_the_sections_of_the_store(files, monkeypatch):
    """The preview of a blockwise output reads the chunks its three sections cross, never the whole volume."""
    import emzoo.viz

    seen = []
    original = emzoo.viz._read

    def spy(array, key):
        seen.append((type(array).__module__, key))
        return original(array, key)

    monkeypatch.setattr(emzoo.viz, "_read", spy)
    result = _predict(files, "volume.zarr", "out2.zarr", "--block", "2,20,18", "--foreground", "--preview",
                      str(files / "zarr2.png"))
    assert result.exit_code == 0, result.output
    # Six sections (three of the input, three of the output), each a lazy dask view of its store.
    assert len(seen) == 6 and all(module.startswith("dask") for module, _ in seen)
    assert all(sum(isinstance(k, int) for k in key) == 1 for _, key in seen)


def test_preview_errors(files):
    result = _predict(files, "image.tif", "x.tif", "--preview", str(files / "x.jpg"))
    assert result.exit_code == 2 and "--preview must be a .png file" in result.output
    assert not (files / "x.tif").exists()
    (files / "exists.png").write_bytes(b"")
    result = _predict(files, "image.tif", "y.tif", "--preview", str(files / "exists.png"))
    assert result.exit_code == 1 and "exists" in result.output and not (files / "y.tif").exists()
