"""Shared inputs of the reliability tests: a tiny model and one small input per format."""

from __future__ import annotations

from pathlib import Path

import pytest

from emzoo.io import write
from tests.inference import toys
from tests.reliability.helpers import VOLUME


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    toys.tiny_unet().save(path)
    return path


@pytest.fixture
def inputs(tmp_path) -> Path:
    """A fresh folder with the same volume as in.tif, in2d.tif (2D), in.zarr, in.h5:/raw, in.npy and slices/."""
    write(tmp_path / "in.tif", VOLUME, voxel_size=(30.0, 5.0, 5.0))
    write(tmp_path / "in2d.tif", VOLUME[0])
    write(tmp_path / "in.zarr", VOLUME, chunks=(1, 20, 18))
    write(tmp_path / "in.h5:/raw", VOLUME)
    write(tmp_path / "in.npy", VOLUME)
    write(tmp_path / "slices", VOLUME)
    return tmp_path
