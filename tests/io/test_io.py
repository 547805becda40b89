"""emzoo.io.read / write: every format round-trips data, axes and voxel size; bad inputs fail with one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from emzoo.io import Volume, read, write
from emzoo.io.slices import natural_key
from emzoo.io.volume import split_uri

RNG = np.random.default_rng(0)
VOL = (RNG.random((3, 10, 12)) * 255).astype(np.uint8)
VOXEL = (30.0, 4.0, 4.5)

# target name -> (lazy by default, keeps the voxel size)
FORMATS = {
    "v.tif": (False, True),
    "v.npy": (False, False),
    "v.h5:/raw": (True, True),
    "v.zarr": (True, True),
    "v.ome.zarr": (True, True),
    "v.mrc": (False, True),
    "slices": (False, False),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_round_trip(tmp_path, name):
    lazy, has_voxel = FORMATS[name]
    target = tmp_path / name
    write(target, VOL, voxel_size=VOXEL)
    volume = read(target)
    assert isinstance(volume, Volume)
    assert volume.axes == "ZYX"
    assert volume.shape == VOL.shape
    assert hasattr(volume.data, "dask") == lazy
    np.testing.assert_array_equal(np.asarray(volume).astype(np.uint8), VOL)
    if has_voxel:
        np.testing.assert_allclose(volume.voxel_size, VOXEL, rtol=1e-5)
    else:
        assert volume.voxel_size is None


def test_lazy_switch(tmp_path):
    write(tmp_path / "v.npy", VOL)
    assert hasattr(read(tmp_path / "v.npy", lazy=True).data, "dask")
    write(tmp_path / "v.zarr", VOL)
    assert isinstance(read(tmp_path / "v.zarr", lazy=False).data, np.ndarray)


def test_dask_input_is_written_chunkwise(tmp_path):
    import dask.array as da

    big = da.from_array(VOL, chunks=(1, 5, 6))
    write(tmp_path / "d.zarr", big, chunks=(1, 5, 6))
    np.testing.assert_array_equal(read(tmp_path / "d.zarr").data.compute(), VOL)
    write(tmp_path / "d.h5:/x", big)
    np.testing.assert_array_equal(np.asarray(read(tmp_path / "d.h5:/x")), VOL)


def test_hdf5_members(tmp_path):
    write(tmp_path / "f.h5:/a", VOL)
    write(tmp_path / "f.h5:/group/b", VOL[:1])  # a second dataset keeps the first
    assert read(tmp_path / "f.h5:/a").shape == VOL.shape
    assert read(tmp_path / "f.h5:/group/b").shape == (1, 10, 12)
    with pytest.raises(KeyError, match="holds 2 datasets .*name one"):
        read(tmp_path / "f.h5")
    with pytest.raises(KeyError, match="no dataset 'nope'"):
        read(tmp_path / "f.h5:/nope")


def test_zarr_group_and_member(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=VOL.shape, dtype=VOL.dtype, chunks=(1, 10, 12))[:] = VOL
    group.create_array("labels", shape=VOL.shape, dtype="uint16", chunks=(1, 10, 12))
    np.testing.assert_array_equal(read(f"{tmp_path}/g.zarr/raw").data.compute(), VOL)
    np.testing.assert_array_equal(read(f"{tmp_path}/g.zarr:raw").data.compute(), VOL)
    with pytest.raises(KeyError, match="2 arrays"):
        read(tmp_path / "g.zarr")


def test_zarr_v2(tmp_path):
    write(tmp_path / "v2.zarr", VOL, zarr_format=2, voxel_size=VOXEL)
    volume = read(tmp_path / "v2.zarr")
    assert volume.voxel_size == VOXEL
    np.testing.assert_array_equal(volume.data.compute(), VOL)


def test_ome_zarr_level0_with_channels_and_units(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w")
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "micrometer"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.03, 0.004, 0.004]}]},
                     {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.06, 0.008, 0.008]}]}],
    }]
    data = np.stack([VOL, VOL // 2])  # (C, Z, Y, X)
    group.create_array("s0", shape=data.shape, dtype=data.dtype, chunks=(1, 1, 10, 12))[:] = data
    group.create_array("s1", shape=(2, 3, 5, 6), dtype=data.dtype)
    volume = read(tmp_path / "img.zarr")
    assert volume.axes == "ZYXC" and volume.shape == (3, 10, 12, 2)
    np.testing.assert_allclose(volume.voxel_size, (30.0, 4.0, 4.0))
    np.testing.assert_array_equal(volume.data.compute()[..., 1], VOL // 2)


def test_tiff_rgb_and_single_image(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "rgb.tif", RNG.integers(0, 255, (10, 12, 3), dtype=np.uint8))
    assert read(tmp_path / "rgb.tif").axes == "YXC"
    write(tmp_path / "one.tif", VOL[0])
    volume = read(tmp_path / "one.tif")
    assert volume.axes == "YX" and volume.shape == (10, 12)


def test_png_slice_folder_natural_order(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "pngs"
    folder.mkdir()
    for z in (0, 2, 10, 1):  # written out of order; s10 must come last
        iio.imwrite(folder / f"s{z}.png", np.full((4, 5), z, np.uint8))
    volume = read(folder)
    assert volume.shape == (4, 4, 5)
    assert [int(v) for v in np.asarray(volume)[:, 0, 0]] == [0, 1, 2, 10]
    assert sorted(["a10", "a9", "a100"], key=natural_key) == ["a9", "a10", "a100"]
    assert hasattr(read(folder, lazy=True).data, "dask")


def test_single_png(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "x.png", VOL[0])
    assert read(tmp_path / "x.png").axes == "YX"


def test_mrc_header_voxel_size_in_angstrom(tmp_path):
    import mrcfile

    with mrcfile.new(tmp_path / "m.mrc") as mrc:
        mrc.set_data(VOL.astype(np.float32))
        mrc.voxel_size = (45.0, 40.0, 300.0)  # x, y, z in Å
    volume = read(tmp_path / "m.mrc")
    assert volume.voxel_size == (30.0, 4.0, 4.5)
    lazy = read(tmp_path / "m.mrc", lazy=True)
    np.testing.assert_array_equal(lazy.data.compute(), VOL.astype(np.float32))


def test_split_uri():
    assert split_uri("a/b.h5:/c/d") == ("a/b.h5", "c/d")
    assert split_uri("x.zarr/raw/0") == ("x.zarr", "raw/0")
    assert split_uri("plain.tif") == ("plain.tif", None)


def test_write_is_atomic_on_failure(tmp_path):
    target = tmp_path / "keep.npy"
    write(target, VOL)

    class Exploding:
        shape, dtype = (2, 2), np.dtype("float32")

        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write(target, Exploding(), overwrite=True)
    np.testing.assert_array_equal(np.load(target), VOL)  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npy"]  # no temporary left behind


# ------------------------------------------------------------------------------------------------ bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        read(tmp_path / "nope.tif")


def test_unknown_extension(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"unknown file type '\.txt'.*emzoo reads"):
        read(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="unknown output type"):
        write(tmp_path / "out.jpg", VOL)


def test_ragged_slice_folder(tmp_path):
    import tifffile

    folder = tmp_path / "ragged"
    folder.mkdir()
    tifffile.imwrite(folder / "s0.tif", np.zeros((4, 5), np.uint8))
    tifffile.imwrite(folder / "s1.tif", np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match=r"ragged slice folder .*s1\.tif is \(4, 6\)"):
        read(folder)


def test_empty_folder_and_empty_array(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image slices"):
        read(tmp_path / "empty")
    np.save(tmp_path / "e.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match=r"is empty \(shape \(0, 5\)\)"):
        read(tmp_path / "e.npy")


def test_nan_and_inf(tmp_path):
    bad = np.ones((2, 3, 3), np.float32)
    bad[1, 2, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"1 NaN/Inf value\(s\) \(first nan at index \(1, 2, 0\)\)"):
        read(tmp_path / "nan.npy")
    bad[1, 2, 0] = np.inf
    write(tmp_path / "inf.tif", bad)
    with pytest.raises(ValueError, match="NaN/Inf"):
        read(tmp_path / "inf.tif")


def test_non_numeric(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([["a", None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled object array"):
        read(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="non-numeric dtype <U1"):
        read(tmp_path / "str.npy")
    with pytest.raises(ValueError, match="non-numeric dtype"):
        write(tmp_path / "c.npy", np.zeros((2, 2), np.complex64))


@pytest.mark.data
def test_real_hdf5_and_tiff(shared_data):
    volume = read(shared_data / "gala_fibsem_small" / "test-image.h5")  # its only dataset, 'stack'
    assert volume.shape == (50, 100, 200) and volume.source.endswith(":/stack")
    assert hasattr(volume.data, "dask")
    labels = read(f"{shared_data}/gala_fibsem_small/test-gt.lzf.h5:/stack")  # lzf-compressed, chunked
    assert labels.dtype == np.int32
    assert int(labels.data[:2, :10, :10].max().compute()) >= 0
    raw = read(shared_data / "fibsem_medulla" / "raw.tif", lazy=True)
    assert raw.shape == (250, 250, 250) and raw.axes == "ZYX"
    assert np.asarray(raw.data[100]).shape == (250, 250)


def test_planar_sample_stack_reads_as_slices(tmp_path):
    """tifffile writes a (3|4, Y, X) stack as planar RGB(A) samples; emzoo reads those planes as z slices."""
    import tifffile

    from emzoo.io import read

    stack = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    tifffile.imwrite(tmp_path / "four.tif", stack)  # default photometric: planar RGBA
    assert tifffile.TiffFile(tmp_path / "four.tif").series[0].axes == "SYX"
    volume = read(tmp_path / "four.tif")
    assert volume.axes == "ZYX"
    np.testing.assert_array_equal(np.asarray(volume.data), stack)
