"""Multi-page TIFF (and single images): read with tifffile, lazily page by page when large; written atomically.

Voxel size comes from ImageJ metadata (``spacing`` and ``unit``) and the X/YResolution tags; it is converted to nm
when the unit is known and dropped otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_file
from emzoo.io.volume import Volume, want_lazy

__all__ = ["read_tiff", "write_tiff", "canonical_axes", "UNIT_NM"]

#: Length unit names (as found in TIFF, OME and HDF5 metadata) -> nanometres.
UNIT_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "um": 1e3, "µm": 1e3, "\u03bcm": 1e3, "micron": 1e3,
    "microns": 1e3, "micrometer": 1e3, "micrometre": 1e3, "mm": 1e6, "millimeter": 1e6, "a": 0.1, "Å": 0.1,
    "angstrom": 0.1, "pm": 1e-3, "picometer": 1e-3, "cm": 1e7, "centimeter": 1e7,
}

_Z_LETTERS = "ZIQT"
_C_LETTERS = "CS"


def canonical_axes(data: Any, axes: str, source: str) -> tuple[Any, str]:
    """Drop singleton axes other than Y/X and reorder to Z, Y, X, C (``"YX"``, ``"ZYX"``, ``"YXC"``, ``"ZYXC"``)."""
    axes = axes.upper()
    keep = [i for i, a in enumerate(axes) if data.shape[i] != 1 or a in "YX"]
    if len(keep) != len(axes):
        data = data.reshape(tuple(data.shape[i] for i in keep))
        axes = "".join(axes[i] for i in keep)
    mapped = "".join("Z" if a in _Z_LETTERS else "C" if a in _C_LETTERS else a for a in axes)
    if sorted(mapped) != sorted(set(mapped)) or set(mapped) - set("ZYXC") or not {"Y", "X"} <= set(mapped):
        raise ValueError(
            f"{source}: cannot map axes {axes!r} (shape {tuple(data.shape)}) to Z, Y, X and one channel axis; "
            "save one 2D/3D image per file, e.g. split time points or extra dimensions first."
        )
    order = [mapped.index(a) for a in "ZYXC" if a in mapped]
    if order != list(range(len(order))):
        data = data.transpose(order)
    return data, "".join(a for a in "ZYXC" if a in mapped)


def _voxel_size(tif: Any, axes: str) -> tuple[float, ...] | None:
    page = tif.pages[0]
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip().replace("\\u00B5", "\u00b5")
    scale = UNIT_NM.get(unit) or UNIT_NM.get(unit.lower())
    if scale is None:
        # Without ImageJ metadata the resolution tags are pixels per inch/cm (unit 2/3) or unitless (1).
        scale = {2: 2.54e7, 3: 1e7}.get(int(getattr(page, "resolutionunit", 1) or 1))
    if scale is None:
        return None
    try:
        rx, ry = page.resolution
    except (AttributeError, TypeError, ValueError):
        return None
    if not rx or not ry:
        return None
    yx = (scale / float(ry), scale / float(rx))
    if "Z" not in axes:
        return yx
    spacing = meta.get("spacing")
    if spacing:
        return (float(spacing) * scale, *yx)
    shaped = tif.shaped_metadata[0] if not meta and tif.is_shaped and tif.shaped_metadata else {}
    z_scale = UNIT_NM.get(str(shaped.get("unit", "")))
    # emzoo's shaped TIFFs (channels, non-ImageJ dtypes) keep the z spacing and its unit in the description.
    return (float(shaped["spacing"]) * z_scale, *yx) if shaped.get("spacing") and z_scale else None


def read_tiff(path: str, *, lazy: bool | None = None) -> Volume:
    """Read a (multi-page) TIFF as a :class:`Volume`; ``lazy=True`` (or auto for > 1 GiB) reads pages on demand."""
    import tifffile


    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
        if axes.startswith("S") and tif.pages[0].planarconfig == tifffile.PLANARCONFIG.SEPARATE:
            # tifffile stores a (3|4, Y, X) stack as planar RGB(A) samples; real colour images are interleaved
            # (YXS), so separate planes in front of Y and X are grey slices, not channels.
            axes = "Z" + axes[1:]
        voxel = _voxel_size(tif, "Z" if any(a in _Z_LETTERS for a in axes) else "")
        per_page = len(tif.pages) == int(np.prod(shape[:-2])) and axes[-2:] == "YX" and len(shape) >= 3
        lazy = want_lazy(lazy, shape, dtype)
        data = None if (lazy and per_page) else series.asarray()
    if data is None:
        import dask
        import dask.array as da

        pages = [
            da.from_delayed(dask.delayed(tifffile.imread)(path, key=i), shape=shape[-2:], dtype=dtype)
            for i in range(int(np.prod(shape[:-2])))
        ]
        data = da.stack(pages).reshape(shape)
    elif lazy:
        import dask.array as da

        data = da.from_array(data, chunks="auto")
    data, axes = canonical_axes(data, axes, path)
    if voxel is not None and len(voxel) != sum(a in "ZYX" for a in axes):
        voxel = None
    return Volume(data=data, voxel_size=voxel, axes=axes, source=path)


def _pages(array: Any) -> Iterator[np.ndarray]:
    from emzoo.io.volume import is_lazy

    for z in range(array.shape[0]):
        page = array[z]
        yield np.asarray(page.compute() if is_lazy(page) else page)


_TIFF_AXES = ("YX", "ZYX", "YXC", "ZYXC")


def _default_axes(shape: tuple[int, ...]) -> str:
    """Axis letters for a rank: a trailing axis of 1 is a channel (a ``(Y, X, 1)`` map is no stack of 1-px-wide
    images)."""
    if len(shape) == 3 and shape[-1] == 1:
        return "YXC"
    return {2: "YX", 3: "ZYX", 4: "ZYXC"}.get(len(shape), "")


def write_tiff(path: str | os.PathLike[str], array: Any, *, voxel_size: tuple[float, ...] | None = None,
               axes: str | None = None, compression: str | None = None) -> None:
    """Write ``array`` (YX, ZYX, YXC or ZYXC) as a TIFF, one page per z slice, that reads back with its shape.

    ``YX``/``ZYX`` uint8, uint16 and float32 data is an ImageJ hyperstack (voxel size in nm as ImageJ spacing and
    resolution); everything else (channels, other dtypes) is a tifffile "shaped" TIFF: channels as contiguous
    samples of each page, the shape and axes in the image description, the x/y voxel size as resolution in pixels
    per centimetre and the z spacing (nm) in the description. ``tifffile.imread`` returns the array's exact shape.
    """
    import tifffile

    shape, dtype = tuple(int(s) for s in array.shape), np.dtype(array.dtype)
    axes = (axes or _default_axes(shape)).upper()
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"TIFF output needs 2 to 4 axes (YX, ZYX, YXC, ZYXC), got shape {shape}.")
    if axes not in _TIFF_AXES or len(axes) != len(shape):
        raise ValueError(f"TIFF output takes axes YX, ZYX, YXC or ZYXC matching the array, got axes {axes!r} for "
                         f"shape {shape}.")
    kwargs: dict[str, Any] = {"compression": compression, "photometric": "minisblack"}
    imagej = dtype in (np.uint8, np.uint16, np.float32) and axes in ("YX", "ZYX")
    meta: dict[str, Any] = {"axes": axes}
    if imagej:
        if voxel_size is not None:
            meta.update(unit="nm")
            kwargs["resolution"] = (1.0 / float(voxel_size[-1]), 1.0 / float(voxel_size[-2]))
            if axes == "ZYX":
                meta["spacing"] = float(voxel_size[0])
        kwargs["imagej"] = True
    else:
        if axes.endswith("C") and shape[-1] > 1:
            kwargs["planarconfig"] = "contig"
        if voxel_size is not None:
            kwargs.update(resolution=(1e7 / float(voxel_size[-1]), 1e7 / float(voxel_size[-2])),
                          resolutionunit="CENTIMETER")
            if axes.startswith("Z") and len(voxel_size) >= 3:
                meta.update(spacing=float(voxel_size[0]), unit="nm")
    kwargs["metadata"] = meta
    with atomic_file(path) as tmp:
        if axes.startswith("Z"):
            tifffile.imwrite(tmp, data=_pages(array), shape=shape, dtype=dtype, **kwargs)
        else:
            tifffile.imwrite(tmp, np.asarray(array.compute() if hasattr(array, "compute") else array), **kwargs)
