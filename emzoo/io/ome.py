"""OME-Zarr (OME-NGFF) images and label images as multiscale pyramids, written through ``ome-zarr``.

The metadata follows the Zarr format of the store: NGFF 0.4 in a Zarr v2 store (``multiscales`` at the top level of
``.zattrs``), NGFF 0.5 in a Zarr v3 store (under ``"ome"`` in ``zarr.json``). ``ome-zarr``
(:func:`ome_zarr.writer.write_multiscales_metadata`) writes that metadata, so it is the spelling its own reader,
napari-ome-zarr and neuroglancer expect; emzoo computes the pyramid itself, level by level from the level below it
as stored, so memory stays at a few chunks whatever the volume's size.

Pyramid rule. Level ``i`` (path ``s<i>``) halves a spatial axis when its voxel at level ``i - 1`` is less than twice
the finest voxel of that level, so an anisotropic EM stack (z 30 nm, y/x 4 nm) is first halved in y/x only and
joins z once y/x reach about its voxel size; an axis of one voxel is never halved, and an image without voxel size
is treated as isotropic. Images are halved by the mean of each 2-voxel box (the far edge of an odd side repeats its
last voxel), labels by taking every second voxel (nearest), so no label value is ever invented. A mean level is
shifted by half its box (``translation`` after ``scale``), a nearest level is not: each level's voxel centres are
where its values come from.

The default is Zarr v3 / NGFF 0.5: emzoo writes Zarr v3 by default, and napari (napari-ome-zarr with ome-zarr >=
0.12) and neuroglancer read NGFF 0.5; ``zarr_format=2`` writes NGFF 0.4 for readers that have not moved to Zarr v3
(older Fiji/BigDataViewer/MoBIE builds).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_dir

__all__ = ["write_ome_image", "write_labels", "create_image", "build_pyramid", "halving_plan", "multiscales",
           "level_path", "NGFF_VERSIONS", "LABEL_MAX"]

#: The NGFF version written in each Zarr format.
NGFF_VERSIONS = {2: "0.4", 3: "0.5"}
#: Label values must fit uint32, the label dtype written.
LABEL_MAX = int(np.iinfo(np.uint32).max)
_METHODS = ("mean", "nearest")
# The coarsest level's largest y/x side the default level count aims for (a screenful), after at least 3 levels.
_COARSEST = 256
_MIN_LEVELS = 3


def level_path(index: int) -> str:
    """The array path of pyramid level ``index`` inside an image group (``s0`` is full resolution).

    Examples
    --------
    >>> level_path(0), level_path(2)
    ('s0', 's2')
    """
    return f"s{index}"


def multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The OME-NGFF ``multiscales`` list of a group's attributes (0.4: top level; 0.5: under ``"ome"``).

    Examples
    --------
    >>> multiscales({"ome": {"version": "0.5", "multiscales": [{"datasets": []}]}})
    [{'datasets': []}]
    """
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def halving_plan(shape: Sequence[int], voxel_size: Sequence[float] | None = None, *,
                 levels: int | None = None) -> list[tuple[int, ...]]:
    """The downsampling factor of each spatial axis at each pyramid level (level 0 is all ones).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape at level 0, z first.
    voxel_size : sequence of float, optional
        Voxel size per spatial axis (any unit); None means isotropic.
    levels : int, optional
        Number of levels including level 0. Default: at least 3, and more until the largest y/x side is at most
        256. Fewer when every axis is down to one voxel.

    Examples
    --------
    >>> halving_plan((3, 64, 64), (30.0, 4.0, 4.0), levels=5)
    [(1, 1, 1), (1, 2, 2), (1, 4, 4), (2, 8, 8), (4, 16, 16)]
    """
    size = [int(s) for s in shape]
    voxel = [float(v) for v in voxel_size] if voxel_size is not None else [1.0] * len(size)
    factor = [1] * len(size)
    plan = [tuple(factor)]
    while levels is None or len(plan) < levels:
        if levels is None and len(plan) >= _MIN_LEVELS and max(size[-2:]) <= _COARSEST:
            break
        current = [v * f for v, f in zip(voxel, factor, strict=True)]
        finest = min((c for c, s in zip(current, size, strict=True) if s > 1), default=None)
        if finest is None:
            break
        halve = [s > 1 and c < 2 * finest for c, s in zip(current, size, strict=True)]
        size = [-(-s // 2) if h else s for s, h in zip(size, halve, strict=True)]
        factor = [f * 2 if h else f for f, h in zip(factor, halve, strict=True)]
        plan.append(tuple(factor))
    return plan


def _halve(x: Any, halve: Sequence[bool], method: str) -> Any:
    """``x`` (dask) halved along the axes flagged in ``halve``: 2-voxel box mean or every second voxel."""
    import dask.array as da

    if method == "nearest" or x.dtype.kind == "b":
        return x[tuple(slice(None, None, 2) if h else slice(None) for h in halve)]
    pad = [(0, int(n) % 2 if h else 0) for n, h in zip(x.shape, halve, strict=True)]
    if any(p for _, p in pad):
        x = da.pad(x, pad, mode="edge")  # an odd side's last box averages its last voxel with itself
    # coarsen needs every chunk of a halved axis to hold whole boxes
    x = x.rechunk({i: c + c % 2 for i, (c, h) in enumerate(zip(x.chunksize, halve, strict=True)) if h})
    floating = np.issubdtype(x.dtype, np.floating)
    mean = da.coarsen(np.mean, x if floating else x.astype(np.float64),
                      {i: 2 for i, h in enumerate(halve) if h}, trim_excess=False)
    return mean.astype(x.dtype) if floating else da.rint(mean).astype(x.dtype)


def _create_level(group: Any, path: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any,
                  names: Sequence[str], attributes: dict[str, Any] | None = None) -> Any:
    """An empty pyramid level; NGFF 0.4 wants '/'-separated chunk keys in Zarr v2, 0.5 the axis names in v3."""
    chunks = tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True))
    extra: dict[str, Any] = ({"dimension_names": list(names)} if group.metadata.zarr_format == 3 else
                             {"chunk_key_encoding": {"name": "v2", "separator": "/"}})
    return group.create_array(path, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=True,
                              attributes=attributes or {}, **extra)


def _transforms(scale0: Sequence[float], factor: Sequence[int], method: str | None) -> list[dict[str, Any]]:
    scale = [float(s) * f for s, f in zip(scale0, factor, strict=True)]
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    if method == "mean" and any(f > 1 for f in factor):
        # the mean of a box of f voxels is centred (f - 1) / 2 voxels of level 0 in
        transforms.append({"type": "translation",
                           "translation": [(f - 1) / 2 * float(s) for s, f in zip(scale0, factor, strict=True)]})
    return transforms


def _write_metadata(group: Any, axes: list[dict[str, str]], scale0: Sequence[float], plan: list[tuple[int, ...]],
                    method: str | None, name: str) -> None:
    """The ``multiscales`` metadata for levels ``s0 .. s<len(plan) - 1>`` (``plan`` holds per-axis factors, the
    channel axis included), in the NGFF version of the group's Zarr format."""
    from ome_zarr.format import FormatV04, FormatV05

    write_multiscales_metadata = _ome_writer().write_multiscales_metadata
    fmt = FormatV04() if group.metadata.zarr_format == 2 else FormatV05()
    datasets = [{"path": level_path(i), "coordinateTransformations": _transforms(scale0, f, method)}
                for i, f in enumerate(plan)]
    extra = {"metadata": {"method": method}} if method else {}
    write_multiscales_metadata(group, datasets=datasets, fmt=fmt, axes=axes, name=name, **extra)


def _axes_meta(axes: str, voxel_size: Sequence[float] | None) -> tuple[list[dict[str, str]], list[float]]:
    """NGFF axes (channel first) and level-0 scale for store axes such as ``"CZYX"``; nanometres when known."""
    spatial = [a for a in axes if a in "ZYX"]
    if voxel_size is not None and len(voxel_size) != len(spatial):
        raise ValueError(f"voxel_size {tuple(voxel_size)} must have one value per spatial axis of {axes!r} "
                         f"({len(spatial)}); pass {len(spatial)} sizes in nm, z first, or None.")
    unit = {"unit": "nanometer"} if voxel_size is not None else {}
    sizes = iter(voxel_size if voxel_size is not None else [1.0] * len(spatial))
    meta, scale = [], []
    for a in axes:
        if a == "C":
            meta.append({"name": "c", "type": "channel"})
            scale.append(1.0)
        else:
            meta.append({"name": a.lower(), "type": "space", **unit})
            scale.append(float(next(sizes)))
    return meta, scale


def _store_axes(axes: str | None, ndim: int) -> str:
    axes = (axes or {2: "YX", 3: "ZYX", 4: "ZYXC"}.get(ndim, "")).upper()
    if len(axes) != ndim or set(axes) - set("CZYX") or len(set(axes)) != ndim or "Y" not in axes or "X" not in axes:
        raise ValueError(f"axes {axes!r} do not describe a {ndim}-D array for OME-Zarr; give one letter per axis "
                         "from Z, Y, X and C (e.g. 'ZYX', 'YXC').")
    return ("C" if "C" in axes else "") + "".join(a for a in "ZYX" if a in axes)


def create_image(path: str | os.PathLike[str], *, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: Any,
                 axes: str, voxel_size: Sequence[float] | None = None, zarr_format: int = 3, name: str = "image",
                 attributes: dict[str, Any] | None = None) -> Path:
    """Create an OME-Zarr image group at ``path`` with an empty level 0 and its one-level metadata.

    Parameters
    ----------
    path : str or path-like
        The group (created, replacing what is there).
    shape, chunks : tuple of int
        Level-0 shape and chunks in store order (``axes``).
    dtype : dtype
        Voxel type.
    axes : str
        Store axis letters, channel first if any: ``"ZYX"``, ``"YX"``, ``"CZYX"``, ``"CYX"``.
    voxel_size : sequence of float, optional
        Nanometres per voxel along the spatial axes, z first.
    zarr_format : {2, 3}
        Zarr v2 (NGFF 0.4) or v3 (NGFF 0.5).
    name : str
        The multiscale image's name.
    attributes : dict, optional
        Extra attributes of the level-0 array.

    Returns
    -------
    Path
        The level-0 array's folder (fill it, then call :func:`build_pyramid`).
    """
    import zarr

    if zarr_format not in NGFF_VERSIONS:
        raise ValueError(f"zarr_format must be 2 (OME-NGFF 0.4) or 3 (OME-NGFF 0.5), got {zarr_format!r}.")
    meta, scale = _axes_meta(axes, voxel_size)
    group = zarr.open_group(os.fspath(path), mode="w", zarr_format=zarr_format)
    _create_level(group, level_path(0), tuple(shape), tuple(chunks), dtype, [m["name"] for m in meta], attributes)
    _write_metadata(group, meta, scale, [(1,) * len(axes)], None, name)
    return Path(path) / level_path(0)


def _image_info(group: Any) -> tuple[dict[str, Any], list[dict[str, str]], list[float]]:
    ms = multiscales(dict(group.attrs))
    if not ms:
        raise ValueError(f"{group.store} holds no OME-Zarr image (no multiscales metadata); write one with "
                         "emzoo.io.ome.write_ome_image first.")
    axes = [dict(a) for a in ms[0]["axes"]]
    scale0 = next(t["scale"] for t in ms[0]["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
    return ms[0], axes, [float(s) for s in scale0]


def build_pyramid(path: str | os.PathLike[str], *, method: str = "mean", levels: int | None = None,
                  plan: list[tuple[int, ...]] | None = None) -> int:
    """Write levels ``s1 ..`` of the OME-Zarr image at ``path`` from its level 0, and the full metadata.

    Each level is computed chunk by chunk (dask) from the level below as stored, so memory stays flat; running it
    again rewrites the same levels. The metadata is rewritten last, so it never names a level not yet written.

    Parameters
    ----------
    path : str or path-like
        An image group made by :func:`create_image` whose level 0 is filled.
    method : {"mean", "nearest"}
        Box mean (images, probabilities) or every second voxel (labels, masks).
    levels : int, optional
        Number of levels, as for :func:`halving_plan`.
    plan : list of tuple of int, optional
        Per-level factors of the spatial axes (as :func:`halving_plan` returns); default from the voxel size.

    Returns
    -------
    int
        The number of levels.
    """
    import dask.array as da
    import zarr

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    group = zarr.open_group(os.fspath(path), mode="r+")
    ms, axes, scale0 = _image_info(group)
    spatial = [i for i, a in enumerate(axes) if a.get("type") == "space"]
    level0 = group[level_path(0)]
    if plan is None:
        plan = halving_plan([level0.shape[i] for i in spatial], [scale0[i] for i in spatial], levels=levels)
    full: list[tuple[int, ...]] = []
    for f in plan:
        it = iter(f)
        full.append(tuple(next(it) if i in spatial else 1 for i in range(len(axes))))
    below = level0
    for index in range(1, len(full)):
        halve = [b == 2 * a for a, b in zip(full[index - 1], full[index], strict=True)]
        down = _halve(da.from_zarr(below), halve, method)
        target = _create_level(group, level_path(index), tuple(int(s) for s in down.shape), level0.chunks,
                               down.dtype, [a["name"] for a in axes])
        da.store(down.rechunk(target.chunks), target, lock=False)
        below = target
    _write_metadata(group, axes, scale0, full, method, ms.get("name") or "image")
    return len(full)


def write_ome_image(path: str | os.PathLike[str], array: Any, *, voxel_size: Sequence[float] | None = None,
                    axes: str | None = None, zarr_format: int = 3, chunks: tuple[int, ...] | None = None,
                    levels: int | None = None, method: str = "mean", name: str = "image") -> Path:
    """Write ``array`` as an OME-Zarr multiscale image, atomically (a temporary sibling renamed into place).

    Parameters
    ----------
    path : str or path-like
        The image group (``*.ome.zarr``); an existing one is replaced only once the new one is complete.
    array : array_like
        numpy or dask, emzoo axis order (z first, channels last).
    voxel_size : sequence of float, optional
        Nanometres per voxel, z first; written as each level's ``scale`` with unit ``nanometer``.
    axes : str, optional
        Letters of ``array``'s axes (default from the rank: ``YX``, ``ZYX``, ``ZYXC``); channels are stored first.
    zarr_format : {3, 2}
        3 writes NGFF 0.5 (the default), 2 writes NGFF 0.4.
    chunks : tuple of int, optional
        Chunks in ``array``'s axis order (default: dask's, or ``"auto"`` for numpy).
    levels : int, optional
        Pyramid levels including full resolution (default: see :func:`halving_plan`; at least 3).
    method : {"mean", "nearest"}
        Downsampling: box mean for images and probabilities, nearest for label-like data.
    name : str
        The multiscale image's name.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> write_ome_image(tmp / "p.ome.zarr", np.zeros((2, 16, 16), "float32"), voxel_size=(30, 4, 4))  # doctest: +SKIP
    PosixPath('.../p.ome.zarr')
    """
    import dask.array as da
    import zarr

    from emzoo.io.volume import is_lazy

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    data = array if is_lazy(array) else da.from_array(np.asarray(array), chunks=chunks or "auto")
    given = (axes or {2: "YX", 3: "ZYX", 4: "ZYXC"}.get(data.ndim, "")).upper()
    store = _store_axes(given, data.ndim)
    order = [given.index(a) for a in store]
    data = da.transpose(data, order)
    chunks = tuple(int(chunks[i]) for i in order) if chunks else tuple(int(c[0]) for c in data.chunks)
    with atomic_dir(path) as tmp:
        level0 = create_image(tmp, shape=tuple(int(s) for s in data.shape), chunks=chunks, dtype=data.dtype,
                              axes=store, voxel_size=voxel_size, zarr_format=zarr_format, name=name)
        target = zarr.open_array(os.fspath(level0), mode="r+")
        da.store(data.rechunk(target.chunks), target, lock=False)
        build_pyramid(tmp, method=method, levels=levels)
    return Path(path)


def _as_labels(labels: Any) -> Any:
    """``labels`` as a uint32 dask array; refuses non-integers and values outside 0 .. 2**32 - 1."""
    import dask.array as da

    from emzoo.io.volume import is_lazy

    data = labels if is_lazy(labels) else da.from_array(np.asarray(labels), chunks="auto")
    kind = np.dtype(data.dtype)
    if kind.kind != "b" and not np.issubdtype(kind, np.integer):
        raise TypeError(f"labels must be integers (instance ids), got dtype {kind}; label the mask first (e.g. "
                        "skimage.measure.label) or cast whole-number values with .astype('uint32').")
    if kind.kind == "b" or (np.issubdtype(kind, np.unsignedinteger) and kind.itemsize <= 4):
        return data.astype(np.uint32)
    low, high = (int(v) for v in da.compute(data.min(), data.max()))
    if low < 0 or high > LABEL_MAX:
        raise ValueError(f"labels hold values from {low} to {high}; OME-Zarr labels are written as uint32 "
                         f"(0 .. {LABEL_MAX}): relabel them consecutively (skimage.segmentation.relabel_sequential).")
    return data.astype(np.uint32)


def write_labels(path: str | os.PathLike[str], labels: Any, *, name: str = "instances",
                 chunks: tuple[int, ...] | None = None) -> Path:
    """Write instance labels under ``labels/<name>`` of the OME-Zarr image at ``path``, as a uint32 label image.

    The label image has the image's spatial axes, voxel size and pyramid levels (taken every second voxel, so
    no new label value appears), ``image-label`` metadata pointing back at the image, and its name is added to
    the ``labels`` group's list once it is complete (written in a temporary sibling, then renamed).

    Parameters
    ----------
    path : str or path-like
        An OME-Zarr image (as :func:`write_ome_image` or an ``*.ome.zarr`` prediction writes).
    labels : array_like
        Integer ids (0 is background), the image's spatial shape (z first).
    name : str
        The label image's name (a folder name: letters, digits, ``-``, ``_``, ``.``).
    chunks : tuple of int, optional
        Chunks (default: the image's level-0 spatial chunks).

    Returns
    -------
    Path
        The label image's folder, ``path/labels/<name>``.

    Raises
    ------
    ValueError
        ``path`` is not an OME-Zarr image, the shape differs from the image's, or a label is outside uint32.
    TypeError
        Non-integer labels.

    Examples
    --------
    >>> write_labels(tmp / "p.ome.zarr", np.zeros((2, 16, 16), "uint32"))  # doctest: +SKIP
    PosixPath('.../p.ome.zarr/labels/instances')
    """
    import dask.array as da
    import zarr

    if not name or not all(ch.isalnum() or ch in "-_." for ch in name) or name.startswith("."):
        raise ValueError(f"name {name!r} must be a plain folder name (letters, digits, '-', '_', '.'), e.g. "
                         "'instances'.")
    image = zarr.open_group(os.fspath(path), mode="r")
    ms, axes, scale0 = _image_info(image)
    spatial = [i for i, a in enumerate(axes) if a.get("type") == "space"]
    shape = tuple(int(image[level_path(0)].shape[i]) for i in spatial)
    data = _as_labels(labels)
    if tuple(data.shape) != shape:
        raise ValueError(f"labels have shape {tuple(data.shape)} but the image at {path} has spatial shape {shape}; "
                         "write labels of the image's shape (z first, no channel axis).")
    plan = []
    for dataset in ms["datasets"]:
        scale = next(t["scale"] for t in dataset["coordinateTransformations"] if t["type"] == "scale")
        plan.append(tuple(round(scale[i] / scale0[i]) for i in spatial))
    chunks = tuple(chunks) if chunks else tuple(int(image[level_path(0)].chunks[i]) for i in spatial)
    zarr_format = image.metadata.zarr_format
    root = zarr.open_group(os.fspath(Path(path) / "labels"), mode="a", zarr_format=zarr_format)
    with atomic_dir(Path(path) / "labels" / name) as tmp:
        level0 = create_image(tmp, shape=shape, chunks=chunks, dtype=np.uint32,
                              axes="".join(axes[i]["name"].upper() for i in spatial),
                              voxel_size=[scale0[i] for i in spatial] if "unit" in axes[spatial[0]] else None,
                              zarr_format=zarr_format, name=name)
        target = zarr.open_array(os.fspath(level0), mode="r+")
        da.store(data.rechunk(target.chunks), target, lock=False)
        build_pyramid(tmp, method="nearest", plan=plan)
        _add_ome_attrs(zarr.open_group(os.fspath(tmp), mode="r+"),
                       {"image-label": {"version": NGFF_VERSIONS[zarr_format], "source": {"image": "../../"}}})
    listed = _ome_attrs(root).get("labels", [])
    _add_ome_attrs(root, {"labels": [*[n for n in listed if n != name], name]})
    return Path(path) / "labels" / name


def _ome_writer() -> Any:
    """``ome_zarr.writer``, imported without the DeprecationWarning its own default arguments raise at import."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ome_zarr.writer

    return ome_zarr.writer


def _ome_attrs(group: Any) -> dict[str, Any]:
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", {})) if group.metadata.zarr_format == 3 else attrs


def _add_ome_attrs(group: Any, values: dict[str, Any]) -> None:
    """Set OME keys where the group's NGFF version keeps them (0.4: top level; 0.5: under ``"ome"``)."""
    from ome_zarr.format import FormatV04, FormatV05

    add_metadata = _ome_writer().add_metadata
    if group.metadata.zarr_format == 2:
        add_metadata(group, values, fmt=FormatV04())
    else:  # NGFF 0.5 states its version once per group, beside the other OME keys
        add_metadata(group, {"version": NGFF_VERSIONS[3], **values}, fmt=FormatV05())
