"""Zarr v2/v3 arrays and groups, and OME-Zarr (NGFF 0.4/0.5) images: read at their full-resolution level 0, written
as multiscale pyramids by :mod:`emzoo.io.ome`.

Chunks are written by zarr's ``LocalStore``, which writes each chunk to a temporary file and renames it into place,
so a reader never sees a half-written chunk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_dir
from emzoo.io.hdf5 import voxel_size_from_attrs
from emzoo.io.ome import multiscales
from emzoo.io.tiff import UNIT_NM, canonical_axes
from emzoo.io.volume import Volume

__all__ = ["read_zarr", "write_zarr", "is_zarr_path", "multiscales", "missing_blocks", "check_complete",
           "PROGRESS_DIR"]

#: Folder inside a blockwise prediction's Zarr array holding its run record (``run.json``) and one completion
#: record (``<i>_<j>_<k>.done``) per finished block (written by :func:`emzoo.inference.predict_blockwise`).
PROGRESS_DIR = ".emzoo_progress"

_AXIS_LETTER = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """True for a ``*.zarr`` path or a folder holding zarr metadata (``zarr.json``, ``.zarray``, ``.zgroup``)."""
    p = Path(path)
    return p.suffix.lower() == ".zarr" or (p.is_dir() and any((p / m).exists()
                                                             for m in ("zarr.json", ".zarray", ".zgroup")))


def _ome_level0(group: Any, source: str) -> tuple[Any, str, tuple[float, ...] | None]:
    ms = multiscales(dict(group.attrs))[0]
    dataset = ms["datasets"][0]
    array = group[dataset["path"]]
    raw_axes = ms.get("axes") or []
    names = [a["name"] if isinstance(a, dict) else str(a) for a in raw_axes]
    if len(names) != array.ndim:
        names = list("tczyx"[-array.ndim:])
    axes = "".join(_AXIS_LETTER.get(n.lower(), "?") for n in names)
    scale = np.ones(array.ndim)
    for transforms in (dataset.get("coordinateTransformations") or [], ms.get("coordinateTransformations") or []):
        for t in transforms:
            if t.get("type") == "scale":
                scale = scale * np.asarray(t["scale"], dtype=float)
    units = [(a.get("unit") if isinstance(a, dict) else None) for a in raw_axes] or [None] * array.ndim
    voxel: list[float] = []
    for letter, s, unit in zip(axes, scale, units, strict=False):
        if letter in "ZYX":
            factor = UNIT_NM.get(str(unit).lower()) if unit else None
            voxel.append(float(s) * factor if factor else float("nan"))
    spatial = tuple(v for v in voxel)
    return array, axes, None if (not spatial or any(np.isnan(spatial))) else spatial


def missing_blocks(array_dir: str | os.PathLike[str], shape: tuple[int, ...]) -> list[tuple[int, ...]] | None:
    """The blocks of a blockwise prediction stored in ``array_dir`` (a Zarr array folder of ``shape``) that have no
    completion record, in order; None if the folder holds no blockwise run record (not a blockwise output)."""
    import itertools
    import json

    record = Path(array_dir) / PROGRESS_DIR / "run.json"
    if not record.is_file():
        return None
    block = [int(b) for b in json.loads(record.read_text())["block"]]
    counts = [-(-int(n) // b) for n, b in zip(shape, block, strict=False)]  # spatial axes come first
    done = {p.name for p in record.parent.glob("*.done")}
    return [index for index in itertools.product(*(range(c) for c in counts))
            if "_".join(map(str, index)) + ".done" not in done]


def check_complete(array_dir: str | os.PathLike[str], shape: tuple[int, ...], *, source: str | None = None) -> None:
    """Raise if the blockwise prediction in ``array_dir`` is unfinished (its missing blocks would read as zeros).

    Raises
    ------
    ValueError
        Naming the missing blocks, and how to finish the run or read it anyway.
    """
    missing = missing_blocks(array_dir, shape)
    if not missing:
        return
    total = len(missing) + len(list((Path(array_dir) / PROGRESS_DIR).glob("*.done")))
    shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise ValueError(f"{source or array_dir} is an unfinished blockwise prediction: {len(missing)} of {total} blocks "
                     f"are missing ({shown}; block index per axis) and would read as zeros; run the same "
                     "predict_blockwise call (or emzoo predict command) again to finish it, or pass "
                     "allow_incomplete=True to read it anyway.")


def read_zarr(path: str, key: str | None = None, *, lazy: bool | None = None,
              allow_incomplete: bool = False) -> Volume:
    """Open a Zarr array (or a group's member ``key``, its only array, or its OME-Zarr level 0) as a dask array.

    An unfinished blockwise prediction (:func:`emzoo.inference.predict_blockwise` interrupted) is refused unless
    ``allow_incomplete`` (its missing blocks then read as zeros).

    Raises
    ------
    KeyError
        If a group holds several arrays and none was named (listing them), or ``key`` is missing.
    ValueError
        An unfinished blockwise prediction, naming its missing blocks (see :func:`check_complete`).
    """
    import zarr

    node = zarr.open(path, mode="r")
    source = path if key is None else f"{path}/{key}"
    if key is not None:
        if not isinstance(node, zarr.Group) or key not in node:
            raise KeyError(f"{path} has no member {key!r}; give the array path inside the store, e.g. {path}/raw.")
        node = node[key]
    voxel: tuple[float, ...] | None = None
    if isinstance(node, zarr.Group):
        if multiscales(dict(node.attrs)):
            array, axes, voxel = _ome_level0(node, source)
            source = f"{source} (OME-Zarr level 0)"
        else:
            names = sorted(node.array_keys())
            if len(names) != 1:
                raise KeyError(f"{path} is a Zarr group with {len(names)} arrays ({', '.join(names[:10]) or 'none'})"
                               f"; name one as {path}/<array>.")
            array = node[names[0]]
            source = f"{path}/{names[0]}"
            axes = ""
    else:
        array, axes = node, ""
    if not axes:
        dims = getattr(array.metadata, "dimension_names", None) or dict(array.attrs).get("_ARRAY_DIMENSIONS")
        if dims and len(dims) == array.ndim and all(d for d in dims):
            axes = "".join(_AXIS_LETTER.get(str(d).lower(), "?") for d in dims)
        else:
            axes = {2: "YX", 3: "ZYX", 4: "ZYXC"}.get(array.ndim, "")
    if not allow_incomplete:
        # the completion record counts blocks over the spatial axes; an OME-Zarr level stores channels first
        spatial = [int(n) for a, n in zip(axes, array.shape, strict=False) if a != "C" or not axes.startswith("C")]
        check_complete(Path(path) / array.path, tuple(spatial), source=source)
    if voxel is None:
        voxel = voxel_size_from_attrs(dict(array.attrs), sum(a in "ZYX" for a in axes))
    import dask.array as da

    data: Any = da.from_zarr(array)
    if lazy is False:
        data = data.compute()
    keep_spatial = [a for a, n in zip(axes, array.shape, strict=False) if a in "ZYX" and (n != 1 or a in "YX")]
    data, axes = canonical_axes(data, axes, source)
    if voxel is not None and len(voxel) != len(keep_spatial):
        voxel = None
    return Volume(data=data, voxel_size=voxel, axes=axes, source=source)


def write_zarr(path: str | os.PathLike[str], key: str | None, array: Any, *, chunks: tuple[int, ...] | None = None,
               voxel_size: tuple[float, ...] | None = None, axes: str | None = None, zarr_format: int = 3,
               ome: bool | None = None) -> None:
    """Write ``array`` as a Zarr array at ``path`` (or member ``key`` of a group), chunk by chunk for dask input.

    The array is written into a temporary sibling folder and renamed into place when complete. ``ome=True`` (the
    default for ``*.ome.zarr``) writes an OME-Zarr multiscale image instead (:func:`emzoo.io.ome.write_ome_image`:
    NGFF 0.5 in Zarr v3, 0.4 in Zarr v2; at least 3 levels; channels first, as NGFF requires; the voxel size as
    each level's scale in nanometres). Its pyramid averages floating-point data (probabilities) and takes every
    second voxel of integer data, which may be labels whose values must not be blended.
    """
    import dask.array as da
    import zarr

    from emzoo.io.volume import is_lazy

    ome = str(path).lower().endswith(".ome.zarr") if ome is None else ome
    if ome:
        from emzoo.io.ome import write_ome_image

        if key is not None:
            raise ValueError("write an OME-Zarr image as its own store (path.ome.zarr), not as a group member.")
        floating = np.issubdtype(np.dtype(array.dtype), np.floating)
        write_ome_image(path, array, voxel_size=voxel_size, axes=axes, zarr_format=zarr_format, chunks=chunks,
                        method="mean" if floating else "nearest")
        return
    data = array if is_lazy(array) else da.from_array(np.asarray(array), chunks=chunks or "auto")
    chunks = tuple(int(c) for c in chunks) if chunks else tuple(int(c[0]) for c in data.chunks)
    data = data.rechunk(chunks)
    attrs: dict[str, Any] = {}
    if voxel_size is not None:
        attrs["resolution"] = [float(v) for v in voxel_size]

    def _write(store_path: Path, name: str | None) -> None:
        target = zarr.create_array(str(store_path) if name is None else str(store_path / name), shape=data.shape,
                                   chunks=chunks, dtype=data.dtype, attributes=attrs, zarr_format=zarr_format)
        da.store(data, target, lock=False)

    if key is None:
        with atomic_dir(path) as tmp:
            _write(tmp, None)
        return
    exists = Path(path).exists()
    group = zarr.open_group(str(path), mode="a", zarr_format=None if exists else zarr_format)
    zarr_format = group.metadata.zarr_format
    with atomic_dir(Path(path) / key) as tmp:
        _write(tmp, None)
