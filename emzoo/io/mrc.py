"""MRC/CCP4 maps and stacks (cryo-EM, tomography), read permissively with mrcfile; voxel size from the header."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_file
from emzoo.io.volume import Volume, want_lazy

__all__ = ["read_mrc", "write_mrc", "MRC_SUFFIXES"]

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec", ".st", ".ali", ".ccp4")


def read_mrc(path: str, *, lazy: bool | None = None) -> Volume:
    """Read an MRC file as ``(Z, Y, X)`` (or ``(Y, X)``); lazily memory-mapped when ``lazy`` or larger than 1 GiB.

    ``permissive=True`` accepts files with minor header defects (common from older software); the voxel size in
    the header (Å) is converted to nm, and a zero header size means unknown.
    """
    import mrcfile


    with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
        header = mrc.header
        vs = mrc.voxel_size
        voxel_xyz = (float(vs.x), float(vs.y), float(vs.z))
        dtype = mrcfile.utils.data_dtype_from_header(header)
        shape = mrcfile.utils.data_shape_from_header(header)
        offset = header.nbytes + int(header.nsymbt)
    if want_lazy(lazy, shape, dtype):
        import dask.array as da

        # A plain np.memmap outlives the mrcfile handle, so the dask array can be read after this function returns.
        data: Any = da.from_array(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape), chunks="auto")
    else:
        with mrcfile.open(path, mode="r", permissive=True) as mrc:
            if mrc.data is None:
                raise ValueError(f"{path}: MRC file holds no data (damaged or truncated); check it with mrcfile.validate.")
            data = np.array(mrc.data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]  # a single-section file is an image
    axes = "ZYX" if data.ndim == 3 else "YX"
    nm = tuple(v / 10.0 for v in voxel_xyz[::-1])  # header x, y, z in Å -> z, y, x in nm
    voxel = None if not all(v > 0 for v in nm) else (nm if axes == "ZYX" else nm[1:])
    return Volume(data=data, voxel_size=voxel, axes=axes, source=path)


def write_mrc(path: str | os.PathLike[str], array: Any, *, voxel_size: tuple[float, ...] | None = None,
              axes: str | None = None) -> None:
    """Write a 2D/3D array as MRC (voxel size given in nm, stored in Å). MRC holds int8, int16, uint16, float16,
    float32 (uint8 is stored as uint16 by mrcfile). ``axes`` with a channel (``"YXC"``) is refused: MRC would store
    the channels as the x axis."""
    import mrcfile

    from emzoo.io.volume import is_lazy

    if axes is not None and "C" in axes.upper():
        raise ValueError(f"MRC output holds no channel axis, got axes {axes!r} (shape {tuple(array.shape)}); write "
                         "one channel (e.g. emzoo predict --foreground or --threshold) or use .tif, .h5, .zarr.")
    data = np.asarray(array.compute() if is_lazy(array) else array)
    if data.ndim not in (2, 3):
        raise ValueError(f"MRC output needs a (Y, X) or (Z, Y, X) array, got shape {data.shape}.")
    with atomic_file(path) as tmp:
        try:
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(data)
                if voxel_size is not None:
                    zyx = tuple(voxel_size) if data.ndim == 3 else (1.0, *voxel_size)
                    mrc.voxel_size = tuple(float(v) * 10.0 for v in zyx[::-1])
        except ValueError as exc:
            raise ValueError(f"cannot write {data.dtype} data to MRC ({exc}); convert first, e.g. "
                             "array.astype('float32').") from None
