"""NumPy ``.npy`` arrays (memory-mapped when lazy or large; pickled object arrays are refused)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_file
from emzoo.io.volume import Volume, want_lazy

__all__ = ["read_npy", "write_npy"]


def read_npy(path: str, *, lazy: bool | None = None) -> Volume:
    """Read a ``.npy`` file; axes are guessed from the rank (``YX``, ``ZYX``, ``ZYXC``)."""

    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):
            raise ValueError(f"{path} holds a pickled object array (non-numeric dtype); save numeric image data "
                             "with numpy.save(path, array.astype('float32')).") from None
        raise
    if want_lazy(lazy, mapped.shape, mapped.dtype):
        import dask.array as da

        data: Any = da.from_array(mapped, chunks="auto")
    else:
        data = np.array(mapped)
    axes = {2: "YX", 3: "ZYX", 4: "ZYXC"}.get(data.ndim, "?" * data.ndim)
    return Volume(data=data, voxel_size=None, axes=axes, source=path)


def write_npy(path: str | os.PathLike[str], array: Any) -> None:
    """Write ``array`` as ``.npy`` (a dask array is computed first)."""
    from emzoo.io.volume import is_lazy

    data = np.asarray(array.compute() if is_lazy(array) else array)
    with atomic_file(path) as tmp:
        np.save(tmp, data, allow_pickle=False)
