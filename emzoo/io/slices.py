"""A folder of 2D slices (PNG or TIFF), stacked in natural order (``s2`` before ``s10``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_dir
from emzoo.io.volume import Volume, want_lazy

__all__ = ["read_slices", "write_slices", "natural_key", "SLICE_SUFFIXES"]

SLICE_SUFFIXES = (".png", ".tif", ".tiff")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value.

    Examples
    --------
    >>> sorted(["s10.png", "s2.png", "s1.png"], key=natural_key)
    ['s1.png', 's2.png', 's10.png']
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _slice_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES
             and not p.name.startswith(".")]
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no image slices ({', '.join(SLICE_SUFFIXES)}); give a folder of 2D slices, a TIFF "
            "stack, HDF5, Zarr, MRC or .npy file."
        )
    kinds = {"png" if p.suffix.lower() == ".png" else "tif" for p in files}
    if len(kinds) > 1:
        raise ValueError(f"{folder} mixes PNG and TIFF slices; keep one format per folder.")
    return sorted(files, key=lambda p: natural_key(p.name))


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one slice, from its header only."""
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            mode_dtype = {"1": np.bool_, "L": np.uint8, "P": np.uint8, "RGB": np.uint8, "RGBA": np.uint8,
                          "I;16": np.uint16, "I;16B": np.uint16, "I": np.int32, "F": np.float32, "LA": np.uint8}
            bands = len(im.getbands())
            shape = (im.height, im.width) if bands == 1 else (im.height, im.width, bands)
            return shape, np.dtype(mode_dtype.get(im.mode, np.uint8))
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tuple(tif.series[0].shape), np.dtype(tif.series[0].dtype)


def _read_one(path: str) -> np.ndarray:
    if path.lower().endswith(".png"):
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    import tifffile

    return tifffile.imread(path)


def read_slices(folder: str, *, lazy: bool | None = None) -> Volume:
    """Stack the slices of ``folder`` into a ``(Z, Y, X)`` (or ``(Z, Y, X, C)``) :class:`Volume`.

    Raises
    ------
    ValueError
        If the slices differ in shape or dtype (a ragged folder), naming the first odd one.
    """

    files = _slice_files(Path(folder))
    shape, dtype = _header(files[0])
    for path in files[1:]:
        other = _header(path)
        if other != (shape, dtype):
            raise ValueError(
                f"ragged slice folder {folder}: {path.name} is {other[0]} {other[1]} but {files[0].name} is "
                f"{shape} {dtype}; every slice must have the same shape and dtype (crop or pad them first)."
            )
    full = (len(files), *shape)
    if want_lazy(lazy, full, dtype):
        import dask
        import dask.array as da

        data = da.stack([da.from_delayed(dask.delayed(_read_one)(str(p)), shape=shape, dtype=dtype) for p in files])
    else:
        data = np.empty(full, dtype)
        for z, path in enumerate(files):
            data[z] = _read_one(str(path))
    axes = "ZYX" if len(shape) == 2 else "ZYXC"
    return Volume(data=data, voxel_size=None, axes=axes, source=folder)


def write_slices(folder: str | os.PathLike[str], array: Any, *, suffix: str = ".tif", prefix: str = "slice_",
                 axes: str | None = None) -> None:
    """Write each z slice of ``array`` as ``<prefix><z>.<suffix>`` into a new folder (renamed into place at the end).

    ``axes`` (``"ZYX"``, ``"ZYXC"``), when given, must start with Z: a ``(Y, X, C)`` image is no stack of slices.
    """
    import tifffile

    from emzoo.io.volume import is_lazy

    if axes is not None and not axes.upper().startswith("Z"):
        raise ValueError(f"a slice folder needs a z axis, got axes {axes!r} (shape {tuple(array.shape)}); write a "
                         "single image as .tif instead.")
    if len(array.shape) not in (3, 4):
        raise ValueError(f"a slice folder needs a (Z, Y, X) or (Z, Y, X, C) array, got shape {tuple(array.shape)}.")
    if suffix not in SLICE_SUFFIXES:
        raise ValueError(f"slice suffix must be one of {SLICE_SUFFIXES}, got {suffix!r}.")
    width = max(4, len(str(array.shape[0] - 1)))
    with atomic_dir(folder) as tmp:
        for z in range(array.shape[0]):
            page = array[z]
            page = np.asarray(page.compute() if is_lazy(page) else page)
            target = tmp / f"{prefix}{z:0{width}d}{suffix}"
            if suffix == ".png":
                import imageio.v3 as iio

                if page.dtype not in (np.uint8, np.uint16):
                    raise ValueError(f"PNG holds uint8 or uint16 only, got {page.dtype}; write .tif slices instead.")
                iio.imwrite(target, page)
            else:
                tifffile.imwrite(target, page)
