"""Rule 1 of issue 11: never destroy the user's data.

An output that resolves to an input (same path, another spelling, a symlink, a member of the input store or HDF5
file, a path inside the input folder, a folder around the input) is refused before anything is read or written; an
existing output is replaced only with ``--overwrite`` / ``overwrite=True``; writes are atomic and leave files with
the user's normal permissions.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from emzoo.inference import blockwise, predict_blockwise
from emzoo.io import read, write
from emzoo.io.guard import check_output
from tests.inference import toys
from tests.reliability.helpers import VOLUME, assert_one_line_error, invoke, snapshot

# ------------------------------------------------------------------------------------- output resolves to input

# (input, output, extra CLI args), relative to the `inputs` folder; "{root}" is the folder itself.
SAME_AS_INPUT = {
    "tif-same-path": ("in.tif", "in.tif", ()),
    "tif-other-spelling": ("in.tif", "slices/../in.tif", ()),
    "tif-symlink": ("in.tif", "link.tif", ()),
    "tif-overwrite": ("in.tif", "in.tif", ("--overwrite",)),
    "npy-same-path": ("in.npy", "in.npy", ("--overwrite",)),
    "zarr-same-store-overwrite": ("in.zarr", "in.zarr", ("--overwrite",)),
    "zarr-member-inside-input": ("in.zarr", "in.zarr/sub", ()),
    "hdf5-other-dataset-same-file": ("in.h5:/raw", "in.h5:/pred", ()),
    "hdf5-same-dataset": ("in.h5:/raw", "in.h5:/raw", ("--overwrite",)),
    "tif-inside-slice-folder": ("slices", "slices/pred.tif", ()),
    "folder-holding-input": ("in.tif", "{root}", ("--overwrite",)),
}


@pytest.mark.parametrize("case", list(SAME_AS_INPUT))
def test_cli_refuses_output_that_is_the_input(model_file, inputs, case):
    src, dst, extra = SAME_AS_INPUT[case]
    (inputs / "link.tif").symlink_to(inputs / "in.tif")
    before = snapshot(inputs)
    dst = str(inputs) if dst == "{root}" else f"{inputs}/{dst}"
    result = invoke(model_file, f"{inputs}/{src}", dst, "--foreground", *extra)
    assert_one_line_error(result, 1, "would destroy the input")
    assert snapshot(inputs) == before  # nothing read-modified, replaced, deleted or added
    assert sorted(os.listdir(inputs)) == sorted({p.split(os.sep)[0] for p in before} | {"link.tif"})


def test_api_blockwise_refuses_dst_that_is_the_source(inputs):
    before = snapshot(inputs)
    model = toys.tiny_unet()
    for dst in (inputs / "in.zarr", inputs / "in.zarr" / "pred"):
        with pytest.raises(ValueError, match="would destroy the input"):
            predict_blockwise(model, str(inputs / "in.zarr"), dst, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="holds the input"):
        predict_blockwise(model, str(inputs / "in.h5:/raw"), inputs / "in.h5", overwrite=True, progress=False)
    assert snapshot(inputs) == before


def test_api_write_refuses_a_volume_over_its_own_source(inputs):
    before = snapshot(inputs)
    for name in ("in.tif", "in.zarr", "in.h5:/raw", "slices"):
        volume = read(inputs / name)
        with pytest.raises(ValueError, match="would destroy the input"):
            write(inputs / name, volume, overwrite=True)
    with pytest.raises(ValueError, match="lies inside the input"):
        write(inputs / "in.zarr/copy", read(inputs / "in.zarr"))
    with pytest.raises(ValueError, match="lies inside the input"):
        write(inputs / "slices" / "copy.tif", read(inputs / "slices"))
    with pytest.raises(ValueError, match="is in the same file or store as the input"):
        write(inputs / "in.h5:/copy", read(inputs / "in.h5:/raw"))
    assert snapshot(inputs) == before


def test_guard_accepts_siblings(inputs):
    check_output(inputs / "pred.tif", inputs=[str(inputs / "in.tif")])  # next to the input: fine
    check_output(inputs / "other.h5:/x", inputs=[str(inputs / "in.h5:/raw")])
    check_output(inputs / "in.zarr.out.zarr", inputs=[str(inputs / "in.zarr")])  # a prefix is not a parent


# ---------------------------------------------------------------------------------- existing output, --overwrite

FORMATS = ["out.tif", "out.npy", "out.h5:/pred", "out.mrc", "out_slices", "out.zarr"]


@pytest.mark.parametrize("name", FORMATS)
def test_api_write_replaces_only_with_overwrite(tmp_path, name):
    write(tmp_path / name, VOLUME)
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        write(tmp_path / name, VOLUME[::-1].copy())
    assert snapshot(tmp_path) == before
    write(tmp_path / name, VOLUME[::-1].copy(), overwrite=True)
    np.testing.assert_array_equal(np.asarray(read(tmp_path / name)), VOLUME[::-1])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left behind


def test_api_write_new_member_of_existing_file_needs_no_overwrite(tmp_path):
    write(tmp_path / "f.h5:/a", VOLUME)
    write(tmp_path / "f.h5:/b", VOLUME[:1])  # adds a dataset, replaces nothing
    np.testing.assert_array_equal(np.asarray(read(tmp_path / "f.h5:/a")), VOLUME)
    with pytest.raises(FileExistsError):
        write(tmp_path / "f.h5:/a", VOLUME[:1])


@pytest.mark.parametrize("name", ["out.tif", "out.npy", "out.h5:/pred", "out_slices"])
def test_cli_replaces_existing_output_only_with_overwrite(model_file, inputs, name):
    write(inputs / name, VOLUME)
    before = snapshot(inputs)
    result = invoke(model_file, inputs / "in.tif", inputs / name, "--foreground")
    assert_one_line_error(result, 1, "already exists; pass --overwrite")
    assert snapshot(inputs) == before
    result = invoke(model_file, inputs / "in.tif", inputs / name, "--foreground", "--overwrite")
    assert result.exit_code == 0, result.output
    out = read(inputs / name)
    assert out.shape == VOLUME.shape and out.dtype == np.float32


def test_cli_existing_zarr_from_elsewhere_needs_overwrite(model_file, inputs):
    write(inputs / "out.zarr", VOLUME)
    before = snapshot(inputs)
    result = invoke(model_file, inputs / "in.zarr", inputs / "out.zarr", "--foreground")
    assert_one_line_error(result, 1, "already exists", "overwrite")
    assert snapshot(inputs) == before


@pytest.mark.parametrize("name", ["keep.tif", "keep.npy", "keep.h5:/x", "keep.mrc"])
def test_failed_overwrite_leaves_old_file_intact(tmp_path, name):
    write(tmp_path / name, VOLUME)
    before = snapshot(tmp_path)

    class Exploding:
        shape, dtype, ndim = (2, 40, 36), np.dtype("uint8"), 3

        def __getitem__(self, item):
            raise RuntimeError("disk full")

        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write(tmp_path / name, Exploding(), overwrite=True)
    assert snapshot(tmp_path) == before  # old bytes, and no temporary file left


def test_failed_blockwise_overwrite_puts_the_old_store_back(inputs, monkeypatch):
    write(inputs / "old.zarr", VOLUME)
    before = snapshot(inputs)

    def explode(*args, **kwargs):
        raise RuntimeError("worker died")

    monkeypatch.setattr(blockwise, "_run_block", explode)
    with pytest.raises(RuntimeError, match="worker died"):
        predict_blockwise(toys.tiny_unet(), str(inputs / "in.zarr"), inputs / "old.zarr", overwrite=True,
                          progress=False)
    assert snapshot(inputs) == before  # the old store is back, no partial store or hidden copy left


# ----------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("name", ["p.tif", "p.npy", "p.h5:/x", "p.mrc", "p.zarr", "p_slices"])
def test_written_files_have_normal_permissions(tmp_path, name):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write(tmp_path / name, VOLUME)
    files = [path] if path.is_file() else [p for p in path.rglob("*")]
    assert files
    for p in files:
        expected = (0o777 if p.is_dir() else 0o666) & ~umask
        assert p.stat().st_mode & 0o777 == expected, (p, oct(p.stat().st_mode))
    if path.is_dir():
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask
