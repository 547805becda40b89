"""Instance labels of a probability map larger than memory: Zarr/dask in, uint32 Zarr out, block by block.

:func:`instances_blockwise` gives the labels of :func:`emzoo.inference.instances.instances` without holding the
volume in memory. It runs in four dask passes over blocks (every task reads one block, or one block plus a halo):

1. **Components.** The connected components of the foreground ``prob > threshold`` (of the seeds
   ``prob <= threshold`` for ``"boundary_ws"``) by ``dask_image.ndmeasure.label``: each block is labelled by
   SciPy, then labels that touch across a block face are merged (a connected-components pass over the graph of
   face-adjacent labels), so a component has one id across blocks. This is exact.
2. **Objects.** ``"cc"``: the components themselves. ``"distance_ws"``: every component whose bounding box is at
   most ``halo`` voxels long on every axis is cut out of the window (block + halo) of each block it touches, on its
   own, with a one-voxel margin, and split by the in-memory decoder; every block cuts the same box, so every block
   computes the same split and the pieces keep one id across blocks. A larger component is left whole (as ``"cc"``
   would), and a warning counts them and names the halo that would cover them. ``"boundary_ws"``: the watershed of
   ``prob`` over each block's window, seeded by the *global* seed ids of pass 1, so an object is a seed region
   plus the boundary voxels flooded from it, with one id everywhere.
3. **Sizes.** The voxel count of every object (per-block ``np.unique`` counts, summed), for ``min_size``.
4. **Labels.** Objects of at least ``min_size`` voxels numbered 1..N, written chunk by chunk as uint32.

What is guaranteed (``tests/instances/test_blockwise_instances.py`` checks it on touching blobs cut into 2x2x2
blocks): the labels partition the volume exactly as the in-memory labels do, up to a renumbering (a bijection
between label ids), for

- ``"cc"`` always;
- ``"distance_ws"`` when every foreground component is at most ``halo`` voxels long per axis (larger ones are kept
  whole and counted in a warning) and ``h`` exceeds the smallest voxel spacing (the default ``h=2`` with unit
  spacing does): the distance transform and the h-maxima of one component depend only on that component (they
  never cross background), so cutting it out gives the same seeds and the same pieces, with one exception: a voxel
  where two pieces meet and whose watershed priorities tie may go to the other piece. scikit-image's watershed
  gives every marker voxel the same age, so ties among equal-valued marker voxels are broken by heap order, which
  depends on every marker in the image. Measured: no such voxel in the tests (face connectivity); 2 of about 1000
  foreground voxels in two of three random 2D maps with ``connectivity=2``;
- ``"boundary_ws"`` for the voxels whose connected boundary region (``prob > threshold``) lies, with a one-voxel
  margin, inside the window of their block: the flooding of such a region depends only on it and the seeds around
  it (up to the same watershed ties). Boundary voxels of a region larger than the window (a membrane network
  spanning the volume) can go to another neighbouring seed than in memory near a block face; ids stay consistent,
  and seed voxels are always exact. The test's membrane map (one network across all 8 blocks, halo 16) agrees
  exactly.

Memory is bounded by the blocks in flight (window of the probabilities and of the component ids, and the output
block) plus one entry per object (its id, size and bounding box); no task reads the whole volume.
"""

from __future__ import annotations

import itertools
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["instances_blockwise", "UnsplitObjectsWarning"]

_DEFAULT_BLOCK = 64



class UnsplitObjectsWarning(UserWarning):
    """``distance_ws`` left objects longer than the halo whole; ``needed_halo`` would split them (callers such as
    the CLI phrase their own advice from it instead of rewording the message)."""

    def __init__(self, message: str, *, count: int, needed_halo: int) -> None:
        super().__init__(message)
        self.count = count
        self.needed_halo = needed_halo

def _open_prob(prob: Any) -> tuple[Any, str | None]:
    """``prob`` as a dask array (Z, Y, X) or (Y, X) without a trailing channel of 1, and the path it came from."""
    import dask.array as da

    path = None
    if isinstance(prob, (str, os.PathLike)):
        from emzoo.io import read

        path = os.fspath(prob)
        data = read(path, lazy=True).data
    else:
        data = prob
    if not isinstance(data, da.Array):
        chunks = getattr(data, "chunks", None)
        data = da.from_array(data, chunks=chunks if isinstance(chunks, tuple) and chunks else "auto")
    if data.ndim in (3, 4) and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ValueError(f"prob must be 2D (Y, X) or 3D (Z, Y, X), optionally with a trailing channel of 1, got shape "
                         f"{data.shape}; pick one class first (e.g. predict_blockwise(..., output='foreground')).")
    return data, path


def _block_shape(block: Any, data: Any) -> tuple[int, ...]:
    """One block side per axis: ``block`` as given, else the input's first chunk (capped to the shape)."""
    from emzoo._validate import check_ints

    if block is None:
        sides = tuple(int(c[0]) for c in data.chunks)
        if any(len(set(c[:-1])) > 1 for c in data.chunks):
            sides = tuple(min(_DEFAULT_BLOCK, s) for s in data.shape)
    else:
        value = check_ints(block, "block", minimum=1, allow_none=False, lengths=(data.ndim,))
        sides = (value,) * data.ndim if isinstance(value, int) else tuple(int(v) for v in value)
    return tuple(min(b, s) for b, s in zip(sides, data.shape, strict=True))


def _check_block(values: np.ndarray) -> np.ndarray:
    """A block of probabilities checked like the in-memory decoder checks the whole map (NaN/Inf, [0, 1])."""
    from emzoo.metrics._validate import as_probability

    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"prob holds {bad} NaN/Inf value(s); fix the model output (or np.nan_to_num it) first.")
    return as_probability(values, "prob")


def _mask_block(values: np.ndarray, threshold: float, seeds: bool) -> np.ndarray:
    from emzoo.metrics import binarize

    mask = binarize(_check_block(values), threshold)
    return ~mask if seeds else mask


def _regions(shape: Sequence[int], block: Sequence[int]) -> list[tuple[slice, ...]]:
    """The blocks of a volume, as slices, in raster order."""
    counts = [-(-s // b) for s, b in zip(shape, block, strict=True)]
    return [tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block, shape, strict=True))
            for index in itertools.product(*(range(c) for c in counts))]


def _window(region: tuple[slice, ...], halo: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, r.start - h), min(s, r.stop + h)) for r, h, s in zip(region, halo, shape, strict=True))


def _read(array: Any, region: tuple[slice, ...]) -> np.ndarray:
    """One region of a zarr, numpy or dask array as numpy (a dask one computed in this thread, inside a task)."""
    part = array[region]
    return part.compute(scheduler="synchronous") if hasattr(part, "dask") else np.asarray(part)


def _run(tasks: list[Any], num_workers: int | None) -> list[Any]:
    import dask

    return list(dask.compute(*tasks, scheduler="threads", num_workers=num_workers)) if tasks else []


# ------------------------------------------------------------------------------------------------ pass 2: objects


def _bounding_boxes(store: Any, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, lower corners, upper corners) of the components in one block, in volume coordinates."""
    from scipy import ndimage

    labels = _read(store, region)
    ids, local = np.unique(labels, return_inverse=True)
    local = local.reshape(labels.shape) + (0 if ids[0] == 0 else 1)  # find_objects skips local label 0
    offset = np.array([r.start for r in region])
    lo, hi = [], []
    for box in ndimage.find_objects(local.astype(np.int64)):
        lo.append([b.start for b in box])
        hi.append([b.stop for b in box])
    keep = ids[1:] if ids[0] == 0 else ids
    shape = (-1, labels.ndim)
    lo_arr = np.array(lo, np.int64).reshape(shape) + offset
    hi_arr = np.array(hi, np.int64).reshape(shape) + offset
    return keep.astype(np.uint64), lo_arr, hi_arr


def _split_block(components: Any, region: tuple[slice, ...], window: tuple[slice, ...], boxes: dict[int, Any],
                 stride: int, options: dict[str, Any]) -> np.ndarray:
    """distance_ws ids of one block: component * stride + piece (0 = a component left whole)."""
    from emzoo.inference.instances import instances

    comp = _read(components, window).astype(np.uint64)
    core = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, window, strict=True))
    out = comp[core] * np.uint64(stride)
    for cid in np.unique(comp[core]):
        box = boxes.get(int(cid))
        if cid == 0 or box is None:
            continue
        crop = tuple(slice(lo - w.start, hi - w.start) for lo, hi, w in zip(*box, window, strict=True))
        mask = comp[crop] == cid
        pieces = instances(mask, "distance_ws", h=options["h"], connectivity=options["connectivity"],
                           sampling=options["sampling"])
        # the piece numbering depends only on the cut-out box, which every block cuts identically
        here = tuple(slice(max(c.start, k.start), min(c.stop, k.stop)) for c, k in zip(crop, core, strict=True))
        if any(s.start >= s.stop for s in here):
            continue
        sub = pieces[tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(here, crop, strict=True))]
        target = out[tuple(slice(s.start - k.start, s.stop - k.start) for s, k in zip(here, core, strict=True))]
        inside = mask[tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(here, crop, strict=True))]
        target[inside] += sub[inside].astype(np.uint64)
    return out


def _distance_ids(components: Any, work: Path, regions: list[Any], halo: tuple[int, ...], options: dict[str, Any],
                  num_workers: int | None) -> Any:
    """Pass 2 for distance_ws: split the components that fit in the halo; write the object ids to a store."""
    import dask
    import zarr

    shape = components.shape
    parts = _run([dask.delayed(_bounding_boxes)(components, r) for r in regions], num_workers)
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.uint64)
    lo = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, len(shape)), np.int64)
    hi = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, len(shape)), np.int64)
    uniq, inverse = np.unique(ids, return_inverse=True)
    low = np.full((uniq.size, len(shape)), np.iinfo(np.int64).max)
    high = np.zeros((uniq.size, len(shape)), np.int64)
    np.minimum.at(low, inverse, lo)
    np.maximum.at(high, inverse, hi)
    fits = np.all(high - low <= np.array(halo), axis=1)
    if (~fits).any():
        need = int((high - low)[~fits].max())
        warnings.warn(UnsplitObjectsWarning(
            f"distance_ws: {int((~fits).sum())} of {uniq.size} object(s) are longer than the halo {tuple(halo)} and "
            f"were left whole (not split); pass halo >= {need} (or a block >= {2 * need}: the default halo is half "
            "the block) to split them.", count=int((~fits).sum()), needed_halo=need), stacklevel=3)
    # the one-voxel margin keeps the background around the object, as the in-memory distance transform sees it
    boxes = {int(c): (np.maximum(a - 1, 0), np.minimum(b + 1, shape))
             for c, a, b, ok in zip(uniq, low, high, fits, strict=True) if ok}
    stride = int(max((np.prod(b - a) for a, b in boxes.values()), default=0)) + 1
    if uniq.size and (int(uniq.max()) + 1) * stride >= 2**63:
        raise ValueError(f"too many objects ({uniq.size}) for 64-bit ids with boxes of {stride} voxels; lower halo.")
    store = zarr.create_array(str(work / "objects.zarr"), shape=shape, chunks=components.chunks, dtype="uint64",
                              fill_value=0)

    def one(region: tuple[slice, ...]) -> None:
        store[region] = _split_block(components, region, _window(region, halo, shape), boxes, stride, options)

    _run([dask.delayed(one)(r) for r in regions], num_workers)
    return store


def _boundary_block(prob: Any, seeds: Any, region: tuple[slice, ...], window: tuple[slice, ...],
                    connectivity: int) -> np.ndarray:
    from skimage.segmentation import watershed

    values = _check_block(_read(prob, window)).astype(np.float32, copy=False)
    markers = _read(seeds, window).astype(np.int64)
    flooded = watershed(values, markers, connectivity=connectivity)
    core = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, window, strict=True))
    return flooded[core].astype(np.uint64)


def _boundary_ids(prob: Any, seeds: Any, work: Path, regions: list[Any], halo: tuple[int, ...], connectivity: int,
                  num_workers: int | None) -> Any:
    """Pass 2 for boundary_ws: flood each block's window from the global seed ids."""
    import dask
    import zarr

    store = zarr.create_array(str(work / "objects.zarr"), shape=seeds.shape, chunks=seeds.chunks, dtype="uint64",
                              fill_value=0)

    def one(region: tuple[slice, ...]) -> None:
        store[region] = _boundary_block(prob, seeds, region, _window(region, halo, seeds.shape), connectivity)

    _run([dask.delayed(one)(r) for r in regions], num_workers)
    return store


# ------------------------------------------------------------------------------------- passes 3-4: sizes, labels


def _counts(store: Any, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = np.unique(_read(store, region), return_counts=True)
    keep = ids != 0
    return ids[keep], counts[keep]


def _kept_ids(store: Any, regions: list[Any], min_size: int, num_workers: int | None) -> np.ndarray:
    """The sorted ids of the objects with at least ``min_size`` voxels (voxels counted over every block)."""
    import dask

    parts = _run([dask.delayed(_counts)(store, r) for r in regions], num_workers)
    if not parts:
        return np.zeros(0, np.uint64)
    ids = np.concatenate([p[0] for p in parts]).astype(np.uint64)
    counts = np.concatenate([p[1] for p in parts])
    uniq, inverse = np.unique(ids, return_inverse=True)
    sizes = np.bincount(inverse, weights=counts, minlength=uniq.size)
    return uniq[sizes >= max(min_size, 1)]


def _write_labels(store: Any, kept: np.ndarray, out: Any, regions: list[Any], num_workers: int | None) -> None:
    import dask

    def one(region: tuple[slice, ...]) -> None:
        ids = _read(store, region).astype(np.uint64)
        index = np.searchsorted(kept, ids)
        found = index < kept.size
        found[found] = kept[index[found]] == ids[found]
        out[region] = np.where(found & (ids != 0), index + 1, 0).astype(np.uint32)

    _run([dask.delayed(one)(r) for r in regions], num_workers)


# ------------------------------------------------------------------------------------------------------ the API


def _components(mask: Any, connectivity: int, work: Path, name: str, block: tuple[int, ...]) -> Any:
    """Pass 1: global connected-component ids of a dask mask (dask-image), stored as uint32 Zarr."""
    import zarr
    from dask_image.ndmeasure import label
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, _count = label(mask, structure=structure)
    store = zarr.create_array(str(work / name), shape=mask.shape, chunks=block, dtype="uint32", fill_value=0)
    labels.astype(np.uint32).rechunk(block).store(store, lock=False, scheduler="threads")
    return store


def _check_options(method: Any, threshold: Any, min_size: Any, h: Any, connectivity: Any, ndim: int,
                   sampling: Any) -> tuple[str, float, int, int, tuple[float, ...] | None]:
    from emzoo._validate import check_int, check_probability
    from emzoo.inference.instances import _check_method, _check_sampling

    method = _check_method(method)
    threshold = check_probability(threshold, "threshold")
    min_size = check_int(min_size, "min_size", minimum=0)
    if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) or not 0 < h < np.inf:
        raise ValueError(f"h must be a positive number (the seed depth, in pixels), got {h!r}")
    connectivity = check_int(connectivity, "connectivity", minimum=1)
    if connectivity > ndim:
        raise ValueError(f"connectivity must be an integer from 1 to {ndim} for {ndim}D prob, got {connectivity}")
    return method, threshold, min_size, connectivity, _check_sampling(sampling, ndim)


def instances_blockwise(
    prob: Any,
    dst: str | os.PathLike[str],
    method: str = "cc",
    *,
    threshold: float = 0.5,
    min_size: int = 0,
    h: float = 2.0,
    connectivity: int = 1,
    sampling: float | Sequence[float] | None = None,
    block: int | tuple[int, ...] | None = None,
    halo: int | tuple[int, ...] | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
) -> Any:
    """Label the objects of a probability map block by block into a uint32 Zarr array (0 = background).

    The result equals ``instances(prob, method, ...)`` in memory up to a renumbering of the objects, within the
    limits the module docstring states (always for ``"cc"``; for ``"distance_ws"`` when the objects fit in the
    halo; for ``"boundary_ws"`` where the boundary regions fit in the window).

    Parameters
    ----------
    prob : str, path-like or array_like
        ``map.zarr`` (anything :func:`emzoo.read` opens lazily), or a zarr / dask / numpy array, shape (Y, X) or
        (Z, Y, X), optionally with a trailing channel of 1; as :func:`~emzoo.inference.instances.instances` takes.
    dst : str or path-like
        Output Zarr array, written to a hidden sibling and renamed into place when complete.
    method, threshold, min_size, h, connectivity, sampling
        As for :func:`~emzoo.inference.instances.instances`.
    block : int or tuple of int, optional
        Block (and output chunk) per axis; default: the chunks of ``prob`` (64 per axis for a numpy array or
        irregular chunks).
    halo : int or tuple of int, optional
        Context read around each block by the watershed methods; ``"distance_ws"`` splits the objects at most
        this long per axis. Default: half the block.
    num_workers : int, optional
        Threads of dask's threaded scheduler.
    overwrite : bool
        Replace an existing ``dst`` (never the input: ``dst`` may not be, lie inside or hold ``prob``'s path).

    Returns
    -------
    zarr.Array
        The labels (read-only): objects numbered 1..N without gaps.

    Raises
    ------
    ValueError
        As :func:`~emzoo.inference.instances.instances` (one line naming the argument), a bad ``block`` or
        ``halo``, or a ``dst`` that is or holds the input.
    FileExistsError
        ``dst`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> prob = np.zeros((2, 8, 8)); prob[:, 1:7, 2:4] = 0.9; prob[:, 3, 2:8] = 0.9
    >>> labels = instances_blockwise(da.from_array(prob, chunks=(1, 4, 4)), tmp / "labels.zarr")  # doctest: +SKIP
    >>> int(labels[:].max())  # doctest: +SKIP
    1
    """
    import zarr

    from emzoo._validate import check_ints
    from emzoo.io.atomic import atomic_dir, temp_sibling
    from emzoo.io.guard import check_output

    check_output(dst, inputs=[prob], overwrite=overwrite, what="dst")
    data, _path = _open_prob(prob)
    method, threshold, min_size, connectivity, spacing = _check_options(method, threshold, min_size, h, connectivity,
                                                                         data.ndim, sampling)
    sides = _block_shape(block, data)
    if halo is None:
        margin = tuple(max(1, b // 2) for b in sides)
    else:
        value = check_ints(halo, "halo", minimum=0, allow_none=False, lengths=(data.ndim,))
        margin = (value,) * data.ndim if isinstance(value, int) else tuple(int(v) for v in value)
    data = data.rechunk(sides)
    regions = _regions(data.shape, sides)
    work = temp_sibling(Path(os.fspath(dst)), "work", folder=True)
    try:
        mask = data.map_blocks(_mask_block, threshold, method == "boundary_ws", dtype=bool)
        components = _components(mask, connectivity, work, "components.zarr", sides)
        if method == "cc":
            objects = components
        elif method == "distance_ws":
            objects = _distance_ids(components, work, regions, margin,
                                    {"h": float(h), "connectivity": connectivity, "sampling": spacing}, num_workers)
        else:
            objects = _boundary_ids(data, components, work, regions, margin, connectivity, num_workers)
        kept = _kept_ids(objects, regions, min_size, num_workers)
        with atomic_dir(dst) as tmp:
            out = zarr.create_array(str(tmp), shape=data.shape, chunks=sides, dtype="uint32", fill_value=0,
                                    overwrite=True, attributes={"emzoo": {"instances": method, "threshold": threshold,
                                                                          "min_size": min_size}})
            _write_labels(objects, kept, out, regions, num_workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return zarr.open_array(os.fspath(dst), mode="r")
