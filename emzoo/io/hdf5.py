"""HDF5 datasets (``file.h5:/group/dataset``, or the file's only dataset), read lazily through dask by default."""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_file
from emzoo.io.volume import Volume

__all__ = ["read_hdf5", "write_hdf5", "find_datasets", "voxel_size_from_attrs"]


def find_datasets(group: Any) -> list[str]:
    """Paths of every dataset below an h5py group (or zarr group: anything with ``visititems``)."""
    import h5py

    found: list[str] = []
    group.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def voxel_size_from_attrs(attrs: Any, ndim_spatial: int) -> tuple[float, ...] | None:
    """Voxel size (nm, z first) from the usual attributes: ``resolution``/``voxel_size`` (nm, CREMI convention),
    ``element_size_um`` (µm, Fiji/ilastik convention)."""
    for key, scale in (("resolution", 1.0), ("voxel_size", 1.0), ("element_size_um", 1e3)):
        if key in attrs:
            try:
                values = tuple(float(v) * scale for v in np.atleast_1d(np.asarray(attrs[key], dtype=float)))
            except (TypeError, ValueError):
                continue
            if len(values) >= ndim_spatial:
                return values[-ndim_spatial:]
    return None


def _default_axes(shape: tuple[int, ...]) -> str:
    return {1: "X", 2: "YX", 3: "ZYX", 4: "ZYXC"}.get(len(shape), "")


def read_hdf5(path: str, key: str | None = None, *, lazy: bool | None = None) -> Volume:
    """Open ``key`` in an HDF5 file (the only dataset when ``key`` is None) as a lazy dask array (``lazy=False``:
    numpy).

    Raises
    ------
    KeyError
        If ``key`` is missing, or the file holds several datasets and none was named (both list what exists).
    """
    import h5py

    handle = h5py.File(path, "r")
    try:
        if key is None:
            names = find_datasets(handle)
            if len(names) != 1:
                listing = ", ".join(names[:10]) or "none"
                raise KeyError(f"{path} holds {len(names)} datasets ({listing}); name one as {path}:/<dataset>.")
            key = names[0]
        if key not in handle or not isinstance(handle[key], h5py.Dataset):
            names = ", ".join(find_datasets(handle)[:10]) or "none"
            raise KeyError(f"{path} has no dataset {key!r}; it holds: {names}. Write it as {path}:/<dataset>.")
        dset = handle[key]
        shape = tuple(dset.shape)
        axes = _default_axes(shape)
        voxel = voxel_size_from_attrs(dset.attrs, sum(a in "ZYX" for a in axes))
        if lazy is False:
            data: Any = dset[()]
            handle.close()
        else:
            import dask.array as da

            # The dataset keeps the file open for as long as the dask array lives.
            data = da.from_array(dset, chunks="auto", lock=True)
    except BaseException:
        handle.close()
        raise
    return Volume(data=data, voxel_size=voxel, axes=axes, source=f"{path}:/{key}")


def write_hdf5(path: str | os.PathLike[str], key: str | None, array: Any, *, chunks: tuple[int, ...] | None = None,
               voxel_size: tuple[float, ...] | None = None, compression: str | None = None) -> None:
    """Write ``array`` as dataset ``key`` (default ``"data"``); other datasets of an existing file are kept.

    The file is copied, modified and renamed back, so readers never see a half-written file.
    """
    import h5py

    from emzoo.io.volume import is_lazy

    key = key or "data"
    with atomic_file(path) as tmp:
        if os.path.exists(path):
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as handle:
            if key in handle:
                del handle[key]
            dset = handle.create_dataset(key, shape=tuple(array.shape), dtype=np.dtype(array.dtype),
                                         chunks=tuple(chunks) if chunks else (True if is_lazy(array) else None),
                                         compression=compression)
            if is_lazy(array):
                import dask.array as da

                da.store(array, dset, lock=True)
            else:
                dset[...] = np.asarray(array)
            if voxel_size is not None:
                dset.attrs["resolution"] = np.asarray(voxel_size, dtype=float)
