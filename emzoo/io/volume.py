"""The :class:`Volume` record every reader returns, and the input checks shared by readers and inference."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Volume", "check_array", "is_lazy", "split_uri", "want_lazy", "LAZY_BYTES"]

#: Inputs larger than this many bytes are read lazily (as dask arrays) when ``lazy=None``.
LAZY_BYTES = 1 << 30


@dataclass(frozen=True)
class Volume:
    """An image or volume read from disk.

    Attributes
    ----------
    data : numpy.ndarray or dask.array.Array
        The voxels, z first (``"ZYX"``), channels last when there are several (``"YXC"``, ``"ZYXC"``). A dask array
        for Zarr, HDF5 and inputs larger than 1 GiB, so nothing is read until it is needed.
    voxel_size : tuple of float or None
        Size of a voxel along each spatial axis, z first, in nanometres, when the file states it (TIFF ImageJ/
        resolution tags, MRC header, OME-Zarr scale, HDF5/Zarr ``resolution``/``element_size_um`` attributes).
    axes : str
        One letter per axis of ``data``: ``"YX"``, ``"ZYX"``, ``"YXC"`` or ``"ZYXC"``.
    source : str
        Where the data came from (path, plus ``:dataset`` for HDF5/Zarr members).

    Examples
    --------
    >>> v = Volume(np.zeros((2, 3, 4), np.uint8), None, "ZYX", "memory")
    >>> v.shape, v.dtype
    ((2, 3, 4), dtype('uint8'))
    """

    data: Any
    voxel_size: tuple[float, ...] | None
    axes: str
    source: str

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of ``data``."""
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        """Number of axes of ``data``."""
        return len(self.data.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self.data.compute() if is_lazy(self.data) else np.asarray(self.data)
        return data if dtype is None else data.astype(dtype)


def want_lazy(lazy: bool | None, shape: tuple[int, ...], dtype: Any) -> bool:
    """Resolve ``lazy=None`` to True for arrays larger than :data:`LAZY_BYTES`.

    Examples
    --------
    >>> want_lazy(None, (2048, 2048, 2048), "uint8"), want_lazy(None, (64, 64), "float32"), want_lazy(True, (1,), "u1")
    (True, False, True)
    """
    if lazy is not None:
        return bool(lazy)
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > LAZY_BYTES


def is_lazy(array: Any) -> bool:
    """True for a dask array (anything with ``compute`` and ``chunks``)."""
    return hasattr(array, "compute") and hasattr(array, "chunks") and hasattr(array, "dask")


def check_array(array: Any, *, source: str = "input", check_finite: bool = True) -> None:
    """Refuse arrays no model can take: empty, non-numeric, or (for eager float data) holding NaN/Inf.

    Parameters
    ----------
    array : array_like
        Anything with ``shape`` and ``dtype`` (numpy, dask, zarr, h5py).
    source : str
        Named in the error message.
    check_finite : bool
        Scan the values for NaN/Inf. Lazy arrays are never scanned here (that would read them whole); inference
        checks each block as it is read instead.

    Raises
    ------
    ValueError
        With the offending shape, dtype or value and what to do.

    Examples
    --------
    >>> check_array(np.zeros((0, 4)))
    Traceback (most recent call last):
    ...
    ValueError: input is empty (shape (0, 4)); give an image with at least one voxel.
    """
    shape = tuple(int(s) for s in array.shape)
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_):
        raise ValueError(
            f"{source} has non-numeric dtype {dtype} (shape {shape}); give integer or float image data "
            "(e.g. convert with array.astype('float32'))."
        )
    if 0 in shape or not shape:
        raise ValueError(f"{source} is empty (shape {shape}); give an image with at least one voxel.")
    if check_finite and np.issubdtype(dtype, np.floating) and isinstance(array, np.ndarray):
        check_finite_values(array, source=source)


def check_finite_values(array: np.ndarray, *, source: str = "input", offset: tuple[int, ...] = ()) -> None:
    """Raise a ValueError naming the first NaN/Inf voxel of a float array (``offset`` is added to its index)."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    where = tuple(int(i) + (offset[k] if k < len(offset) else 0) for k, i in enumerate(bad))
    value = array[tuple(bad)]
    count = int((~finite).sum())
    raise ValueError(
        f"{source} holds {count} NaN/Inf value(s) (first {value} at index {where}); replace them, e.g. "
        "numpy.nan_to_num(array, nan=0.0), or mask the region before predicting."
    )


_MEMBER = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5|n5|zarr))(?::/?|/)(?P<key>.+)$", re.IGNORECASE)


def split_uri(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """Split ``"file.h5:/group/ds"`` / ``"vol.zarr/raw"`` / ``"vol.zarr:raw"`` into ``(file, key)``.

    Examples
    --------
    >>> split_uri("a/b.h5:/raw")
    ('a/b.h5', 'raw')
    >>> split_uri("vol.zarr/labels/0")
    ('vol.zarr', 'labels/0')
    >>> split_uri("stack.tif")
    ('stack.tif', None)
    """
    text = os.fspath(path)
    match = _MEMBER.match(text)
    if match and not os.path.exists(text):
        return match.group("file"), match.group("key").strip("/") or None
    return text, None
