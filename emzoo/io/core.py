"""``read`` and ``write``: one entry point for every format, picked from the path.

========================  =====================================================  ================================
format                    path                                                   data
========================  =====================================================  ================================
TIFF (multi-page)         ``stack.tif`` / ``.tiff``                              numpy (dask when > 1 GiB)
folder of slices          ``folder/`` of ``*.png`` or ``*.tif`` (natural sort)   numpy (dask when > 1 GiB)
HDF5                      ``file.h5:/dataset`` or ``file.h5`` (its only dataset)  dask
Zarr v2/v3, OME-Zarr      ``vol.zarr``, ``vol.zarr/array``, ``img.ome.zarr``     dask (OME-Zarr: level 0)
MRC                       ``.mrc`` ``.mrcs`` ``.map`` ``.rec`` ``.st`` ``.ali``  numpy (memory-mapped dask if big)
NumPy                     ``.npy``                                               numpy (memory-mapped dask if big)
single PNG                ``image.png``                                          numpy
========================  =====================================================  ================================
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# want_lazy and LAZY_BYTES live in volume.py so the format readers, which core dispatches to, need not import core.
from emzoo.io.volume import LAZY_BYTES, Volume, check_array, split_uri, want_lazy

__all__ = ["read", "write", "want_lazy", "LAZY_BYTES", "READ_SUFFIXES", "explain_disk_full"]

_HDF5 = (".h5", ".hdf5", ".hdf", ".he5")
_TIFF = (".tif", ".tiff")
READ_SUFFIXES = (*_TIFF, *_HDF5, ".zarr", ".npy", ".png", ".mrc", ".mrcs", ".map", ".rec", ".st", ".ali", ".ccp4")


def _kind(path: str) -> str:
    from emzoo.io.zarrio import is_zarr_path

    p = Path(path)
    suffix = p.suffix.lower()
    if is_zarr_path(p):
        return "zarr"
    if p.is_dir():
        return "slices"
    if suffix in _TIFF:
        return "tiff"
    if suffix in _HDF5:
        return "hdf5"
    if suffix == ".npy":
        return "npy"
    if suffix == ".png":
        return "png"
    from emzoo.io.mrc import MRC_SUFFIXES

    if suffix in MRC_SUFFIXES:
        return "mrc"
    raise ValueError(
        f"unknown file type {suffix or '(no extension)'!r} for {path}; emzoo reads {', '.join(READ_SUFFIXES)} "
        "and folders of PNG/TIFF slices."
    )


def read(path: str | os.PathLike[str], *, lazy: bool | None = None, allow_incomplete: bool = False) -> Volume:
    """Read an image or volume from any supported format.

    Parameters
    ----------
    path : str or path-like
        A file, a folder of slices, ``file.h5:/dataset``, ``vol.zarr`` or ``vol.zarr/array``.
    lazy : bool, optional
        ``True``: a dask array, read on demand. ``False``: a numpy array in memory. ``None`` (default): dask for
        HDF5 and Zarr and for anything larger than 1 GiB, numpy otherwise.
    allow_incomplete : bool
        Read an unfinished blockwise prediction (Zarr) anyway, its missing blocks as zeros; refused by default.

    Returns
    -------
    Volume
        ``data``, ``voxel_size`` (nm, z first, or None), ``axes`` (``"YX"``, ``"ZYX"``, ...) and ``source``.

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    ValueError
        Unknown extension, ragged slice folder, non-numeric dtype, empty array, NaN/Inf in eager float data, or
        an unfinished blockwise prediction (naming its missing blocks and how to finish it).
    KeyError
        A missing HDF5/Zarr member, or several members and none named.

    Examples
    --------
    >>> import numpy as np, emzoo
    >>> emzoo.write(tmp / "x.npy", np.zeros((2, 8, 8), "uint8"))  # doctest: +SKIP
    >>> emzoo.read(tmp / "x.npy").axes  # doctest: +SKIP
    'ZYX'
    """
    text = os.fspath(path)
    file, key = split_uri(text)
    if not os.path.exists(file):
        raise FileNotFoundError(f"no such file or folder: {file}")
    kind = _kind(file)
    if key is not None and kind not in ("hdf5", "zarr"):
        raise ValueError(f"{text}: only HDF5 and Zarr paths may name a member after the file; drop ':{key}'.")
    if kind == "zarr":
        from emzoo.io.zarrio import read_zarr

        volume = read_zarr(file, key, lazy=lazy, allow_incomplete=allow_incomplete)
    elif kind == "hdf5":
        from emzoo.io.hdf5 import read_hdf5

        volume = read_hdf5(file, key, lazy=lazy)
    elif kind == "tiff":
        from emzoo.io.tiff import read_tiff

        volume = read_tiff(file, lazy=lazy)
    elif kind == "slices":
        from emzoo.io.slices import read_slices

        volume = read_slices(file, lazy=lazy)
    elif kind == "mrc":
        from emzoo.io.mrc import read_mrc

        volume = read_mrc(file, lazy=lazy)
    elif kind == "npy":
        from emzoo.io.npy import read_npy

        volume = read_npy(file, lazy=lazy)
    else:
        from emzoo.io.slices import _read_one

        image = _read_one(file)
        volume = Volume(data=image, voxel_size=None, axes="YX" if image.ndim == 2 else "YXC", source=file)
    check_array(volume.data, source=volume.source)
    return volume


@contextlib.contextmanager
def explain_disk_full(path: str | os.PathLike[str], state: str) -> Iterator[None]:
    """Re-raise a disk-full ``OSError`` (ENOSPC) met inside the block as one line naming ``path``, followed by
    ``state`` (what is left on disk and what to do); other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise OSError(errno.ENOSPC, f"no space left on the device while writing {os.fspath(path)}; {state}") from exc


def write(
    path: str | os.PathLike[str],
    array: Any,
    *,
    chunks: tuple[int, ...] | None = None,
    voxel_size: tuple[float, ...] | None = None,
    axes: str | None = None,
    compression: str | None = None,
    zarr_format: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write an array atomically: a reader sees the old file or the complete new one, never a partial one.

    An existing file (or an existing ``:dataset`` / store member) is only replaced with ``overwrite=True``; a
    :class:`Volume` is never written over (or into, or around) the file it was read from.

    Parameters
    ----------
    path : str or path-like
        Target; the format follows the extension as for :func:`read` (``.tif``, ``.h5[:/dataset]``, ``.zarr``,
        ``.ome.zarr``, ``.mrc``, ``.npy``). A path without extension is written as a folder of TIFF slices.
    array : array_like
        numpy, dask (written chunk by chunk for HDF5 and Zarr) or a :class:`Volume` (its voxel size is kept).
    chunks : tuple of int, optional
        Chunk shape for HDF5 and Zarr.
    voxel_size : tuple of float, optional
        Voxel size in nm, z first; stored as the format allows (ImageJ spacing, MRC header, ``resolution``).
    axes : str, optional
        Axis letters (default from the rank: ``YX``, ``ZYX``, ``ZYXC``).
    compression : str, optional
        TIFF/HDF5 compression (e.g. ``"zlib"`` / ``"gzip"``).
    zarr_format : {2, 3}
        Zarr format version for new stores.
    overwrite : bool
        Replace an existing ``path`` (for ``file.h5:/ds`` and ``vol.zarr/member``: an existing member; other
        members are always kept). The old file stays intact if the write fails.

    Returns
    -------
    Path
        The written path (without the ``:dataset`` suffix).

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (nothing is written).
    ValueError
        If ``array`` is a :class:`Volume` read from ``path`` (or from a file inside it or around it), for an
        unknown extension, or an array the format cannot hold.
    OSError
        A full disk (errno ENOSPC), in one line naming the file and saying the previous one is intact.

    Examples
    --------
    >>> import numpy as np, emzoo
    >>> emzoo.write(tmp / "labels.h5:/seg", np.zeros((4, 4), "uint8"))  # doctest: +SKIP
    PosixPath('.../labels.h5')
    """
    from emzoo.io.guard import check_output

    check_output(path, inputs=[array] if isinstance(array, Volume) else [], overwrite=overwrite)
    if isinstance(array, Volume):
        voxel_size = voxel_size if voxel_size is not None else array.voxel_size
        axes = axes or array.axes
        array = array.data
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        array = np.asarray(array)
    check_array(array, source="array to write", check_finite=False)
    file, key = split_uri(os.fspath(path))
    kept = (f"the previous {file} is intact (the new one is written beside it and renamed only when complete)"
            if os.path.lexists(file) else "nothing was left there")
    with explain_disk_full(file, f"{kept}; free space on that disk or write elsewhere, then run again."):
        _write_format(file, key, array, chunks=chunks, voxel_size=voxel_size, axes=axes, compression=compression,
                      zarr_format=zarr_format, path=path)
    return Path(file)


def _write_format(file: str, key: str | None, array: Any, *, chunks: tuple[int, ...] | None,
                  voxel_size: tuple[float, ...] | None, axes: str | None, compression: str | None, zarr_format: int,
                  path: Any) -> None:
    """Dispatch a checked write to the format module picked by ``file``'s extension."""
    suffix = Path(file).suffix.lower()
    if suffix == ".zarr":
        from emzoo.io.zarrio import write_zarr

        write_zarr(file, key, array, chunks=chunks, voxel_size=voxel_size, axes=axes, zarr_format=zarr_format)
    elif suffix in _HDF5:
        from emzoo.io.hdf5 import write_hdf5

        write_hdf5(file, key, array, chunks=chunks, voxel_size=voxel_size, compression=compression)
    elif key is not None:
        raise ValueError(f"{path}: only HDF5 and Zarr paths may name a member after the file.")
    elif suffix in _TIFF:
        from emzoo.io.tiff import write_tiff

        write_tiff(file, array, voxel_size=voxel_size, axes=axes, compression=compression)
    elif suffix == ".npy":
        from emzoo.io.npy import write_npy

        write_npy(file, array)
    elif suffix == "":
        from emzoo.io.slices import write_slices

        write_slices(file, array, axes=axes)
    else:
        from emzoo.io.mrc import MRC_SUFFIXES, write_mrc

        if suffix not in MRC_SUFFIXES:
            raise ValueError(f"unknown output type {suffix!r} for {path}; write .tif, .h5, .zarr, .ome.zarr, .mrc, "
                             ".npy or a folder (no extension) of TIFF slices.")
        write_mrc(file, array, voxel_size=voxel_size, axes=axes)
