"""Issue 11: a full disk is named in one line (the file, and that the previous file is intact), and nothing is left
half-written: whole-array writes keep the old file, blockwise runs keep their finished blocks to resume."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from emzoo.inference import blockwise, predict_blockwise
from emzoo.io import read, write
from tests.inference import toys
from tests.reliability.helpers import VOLUME, assert_one_line_error, invoke, snapshot


class _FullDisk:
    """An array whose voxels cannot be written: every read raises ENOSPC, as a write to a full disk does."""

    shape, dtype, ndim = VOLUME.shape, VOLUME.dtype, VOLUME.ndim

    def __getitem__(self, item):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __array__(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("name", ["keep.tif", "keep.npy", "keep.h5:/x", "keep.mrc", "keep.zarr"])
def test_write_on_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, name):
    write(tmp_path / name, VOLUME)
    before = snapshot(tmp_path)
    file = name.split(":")[0]
    with pytest.raises(OSError, match=rf"no space left on the device while writing .*{file}; the previous .*{file} "
                                      r"is intact .*free space on that disk or write elsewhere") as caught:
        write(tmp_path / name, _FullDisk(), overwrite=True)
    assert caught.value.errno == errno.ENOSPC and "\n" not in str(caught.value)
    assert snapshot(tmp_path) == before  # old bytes, and no temporary file left


def test_partial_write_on_full_disk_leaves_nothing(tmp_path, monkeypatch):
    def half_written(file, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", half_written)
    with pytest.raises(OSError, match=r"while writing .*new\.npy; nothing was left there"):
        write(tmp_path / "new.npy", VOLUME)
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_pass_unchanged(tmp_path):
    class Denied(_FullDisk):
        def __array__(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError, match="Permission denied"):
        write(tmp_path / "x.npy", Denied())


def test_cli_full_disk_is_one_line(model_file, inputs, monkeypatch):
    import emzoo.io.tiff

    write(inputs / "out.tif", VOLUME)
    before = snapshot(inputs)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(emzoo.io.tiff, "write_tiff", full)
    result = invoke(model_file, inputs / "in.tif", inputs / "out.tif", "--overwrite")
    assert_one_line_error(result, 1, "no space left on the device while writing", "out.tif; the previous",
                          "is intact")
    assert snapshot(inputs) == before


def test_blockwise_full_disk_keeps_finished_blocks_to_resume(inputs, monkeypatch):
    model = toys.tiny_unet()
    original = blockwise._run_block
    calls = []

    def fills_up(*args, **kwargs):
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        calls.append(args[5])
        return original(*args, **kwargs)

    monkeypatch.setattr(blockwise, "_run_block", fills_up)
    kwargs = dict(block=(1, 20, 18), normalization={"method": "minmax", "min": 0, "max": 255}, progress=False)
    with pytest.raises(OSError, match=r"while writing .*out\.zarr; the blocks finished so far are kept; .*run the "
                                      "same command again to resume"):
        predict_blockwise(model, str(inputs / "in.zarr"), inputs / "out.zarr", num_workers=1, **kwargs)
    with pytest.raises(ValueError, match="unfinished blockwise prediction: 6 of 8 blocks are missing"):
        read(inputs / "out.zarr")
    monkeypatch.setattr(blockwise, "_run_block", original)
    out = predict_blockwise(model, str(inputs / "in.zarr"), inputs / "out.zarr", **kwargs)
    assert out.shape == (2, 40, 36, 1) and read(inputs / "out.zarr").shape == (2, 40, 36)


def test_blockwise_full_disk_on_overwrite_puts_the_old_store_back(inputs, monkeypatch):
    write(inputs / "old.zarr", VOLUME)
    before = snapshot(inputs)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blockwise, "_run_block", full)
    with pytest.raises(OSError, match=r"old\.zarr; the previous store was put back intact"):
        predict_blockwise(toys.tiny_unet(), str(inputs / "in.zarr"), inputs / "old.zarr", overwrite=True,
                          progress=False)
    assert snapshot(inputs) == before
