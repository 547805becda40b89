"""Blockwise prediction of volumes larger than memory: Zarr/HDF5 in, Zarr out, one dask task per output block.

Each task reads its block plus a halo from the source (mirrored at the volume borders), predicts it with the same
tiling engine as :func:`~emzoo.inference.predict` (so the result equals in-memory prediction), trims the halo and
writes the block, which is a whole number of output chunks, so every chunk is written whole, once, by one task.
zarr's local store writes each chunk to a temporary file and renames it, so a half-written chunk is never visible.
After the write the task drops a completion record (a file per block under ``<dst>/.emzoo_progress/`` holding the
digest of the input bytes the block was computed from, halo included); an interrupted run started again with the
same arguments skips the blocks that have one whose input is unchanged, and recomputes the others (saying how many),
so a changed input is never mixed with blocks computed from the old one.

Peak memory is that of the blocks in flight (one per worker thread: input block + halo, output block, the model's
activations for one batch of windows) and does not grow with the volume. The model is shipped to distributed
workers as its Keras config and weights (or its name) and built once per worker process.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.inference.ensemble import Ensemble, _Accumulator
from emzoo.inference.predict import (
    _data_and_axes,
    _spec,
    check_tiling_args,
    data_layout,
    default_batch_size,
    foreground,
    make_runner,
)
from emzoo.inference.progress import progress_bar
from emzoo.inference.runner import ModelRunner
from emzoo.inference.tiling import Source, TilePlan, make_plan, predict_region
from emzoo.inference.tta import tta_transforms
from emzoo.io.atomic import atomic_dir, atomic_file, temp_sibling
from emzoo.io.core import explain_disk_full
from emzoo.io.normalize import resolve_normalization
from emzoo.io.zarrio import PROGRESS_DIR

__all__ = ["predict_blockwise", "PROGRESS_DIR"]

_OUTPUTS = ("probabilities", "foreground", "mask")


# ------------------------------------------------------------------------------------------------ shipping models


def _pack_model(model: Any) -> dict[str, Any]:
    import keras

    return {"config": keras.saving.serialize_keras_object(model), "weights": model.get_weights(),
            "metadata": dict(getattr(model, "emzoo_metadata", None) or {})}


def _unpack_model(packed: dict[str, Any]) -> Any:
    import keras

    import emzoo.layers  # noqa: F401  (registers emzoo's layers before deserialising)

    model = keras.saving.deserialize_keras_object(packed["config"])
    model.set_weights(packed["weights"])
    object.__setattr__(model, "emzoo_metadata", packed["metadata"])
    return model


class _ModelRef:
    """A model, name or ensemble that pickles as its name or config + weights and is built once per process."""

    def __init__(self, model: Any, precision: str = "float32") -> None:
        self.obj = model
        self.precision = precision
        self._runners: list[ModelRunner] | None = None
        self._lock = threading.Lock()

    def members(self) -> list[Any]:
        if isinstance(self.obj, Ensemble):
            return [self.obj.members[i] for i in self.obj.selected]
        return [self.obj]

    def runners(self) -> list[ModelRunner]:
        with self._lock:
            if self._runners is None:
                self._runners = [make_runner(m, self.precision) for m in self.members()]
            return self._runners

    def combiner(self) -> Ensemble | None:
        if not isinstance(self.obj, Ensemble):
            return None
        n = len(self.obj.selected)
        mode = "majority" if self.obj.mode == "majority" else "average"
        return Ensemble(list(range(n)), mode=mode, threshold=self.obj.threshold)

    def __getstate__(self) -> dict[str, Any]:
        def pack(m: Any) -> Any:
            return ("name", os.fspath(m)) if isinstance(m, (str, os.PathLike)) else ("keras", _pack_model(m))

        members = [pack(m) for m in self.members()]
        combiner = self.combiner()
        return {"members": members, "combine": None if combiner is None else (combiner.mode, combiner.threshold),
                "precision": self.precision}

    def __setstate__(self, state: dict[str, Any]) -> None:
        members = [value if kind == "name" else _unpack_model(value) for kind, value in state["members"]]
        if state["combine"] is None:
            self.obj = members[0]
        else:
            mode, threshold = state["combine"]
            self.obj = Ensemble(members, mode=mode, threshold=threshold)
        self.precision = state.get("precision", "float32")
        self._runners = None
        self._lock = threading.Lock()

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for m in self.members():
            if isinstance(m, (str, os.PathLike)):
                digest.update(os.fspath(m).encode())
                continue
            import keras

            digest.update(json.dumps(keras.saving.serialize_keras_object(m), sort_keys=True, default=str).encode())
            for w in m.get_weights():
                digest.update(np.ascontiguousarray(w).tobytes())
        if isinstance(self.obj, Ensemble):
            digest.update(repr((self.obj.mode, self.obj.selected, self.obj.threshold)).encode())
        return digest.hexdigest()


class _SourceRef:
    """The input volume, re-opened from its path in each worker (HDF5 handles cannot be pickled)."""

    def __init__(self, src: Any) -> None:
        self.path: str | None = None
        self.array: Any = None
        if isinstance(src, (str, os.PathLike)):
            self.path = os.fspath(src)
        elif type(src).__module__.startswith("h5py"):
            self.path = f"{src.file.filename}:{src.name}"
        else:
            self.array = src
        self._opened: tuple[Any, str | None] | None = None
        self.voxel_size: tuple[float, ...] | None = getattr(src, "voxel_size", None)  # for OME-Zarr output

    def open(self) -> tuple[Any, str | None]:
        if self._opened is None:
            if self.path is not None:
                from emzoo.io import read

                volume = read(self.path, lazy=True)
                self._opened = (volume.data, volume.axes)
                self.voxel_size = volume.voxel_size
            else:
                self._opened = (self.array, None)
        return self._opened

    def describe(self) -> str:
        return self.path or f"{type(self.array).__name__} array"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "array": self.array}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.array, self._opened = state["path"], state["array"], None


@dataclass(frozen=True)
class _Job:
    """What one member needs to predict any block (computed once, in the client)."""

    plan: TilePlan
    spec: dict[str, Any]
    tta: str | None
    batch_size: int
    has_z: bool
    has_c: bool


# --------------------------------------------------------------------------------------------------- block task


def _postprocess(prob: np.ndarray, output: str, threshold: float, dtype: Any) -> np.ndarray:
    if output == "probabilities":
        return prob.astype(dtype, copy=False)
    if output == "foreground":
        return foreground(prob).astype(dtype, copy=False)
    if prob.shape[-1] > 2:
        return np.argmax(prob, axis=-1).astype(dtype)
    return (foreground(prob) >= threshold).astype(dtype)


class _Digesting:
    """An array-like over ``array`` that feeds every box read from it (its slices and raw bytes) to ``digest``: the
    fingerprint of exactly the input a block was computed from."""

    def __init__(self, array: Any, digest: Any) -> None:
        self.array, self.digest = array, digest
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        from emzoo.io.volume import is_lazy

        raw = self.array[key]
        raw = np.ascontiguousarray(raw.compute(scheduler="synchronous") if is_lazy(raw) else np.asarray(raw))
        self.digest.update(repr(key).encode())
        self.digest.update(raw.tobytes())
        return raw


def _new_digest() -> Any:
    return hashlib.blake2b(digest_size=16)


def _block_digest(data: Any, jobs: list[_Job], region: tuple[tuple[int, int], ...]) -> str:
    """The digest of the input a block reads (what :func:`_predict_block` feeds the models, halo included), by
    reading the same boxes without predicting; used to check finished blocks before a resume trusts them."""
    digest = _new_digest()
    proxy = _Digesting(data, digest)
    for job in jobs:
        windows = job.plan.windows(region)
        if not windows:
            continue
        axes = job.plan.axes
        box = [(axes[a].in_start(min(w[a] for w in windows)), axes[a].in_start(max(w[a] for w in windows))
                + axes[a].n_in) for a in range(3)]
        Source(proxy, has_z=job.has_z, has_c=job.has_c, spec=job.spec).cached(box)
    return digest.hexdigest()


def _predict_block(ref: _ModelRef, src: _SourceRef, jobs: list[_Job], region: tuple[tuple[int, int], ...],
                   output: str, threshold: float, dtype: str, digest: Any = None) -> np.ndarray:
    """Prediction of one block (data region), post-processed; no z axis for 2D data. The input read is fed to
    ``digest`` when given."""
    runners = ref.runners()
    data, _ = src.open()
    if digest is not None:
        data = _Digesting(data, digest)
    combiner = ref.combiner()
    acc = None if combiner is None else _Accumulator(combiner, max(r.num_classes for r in runners))
    prob = None
    for runner, job in zip(runners, jobs, strict=True):
        source = Source(data, has_z=job.has_z, has_c=job.has_c, spec=job.spec)
        prob = predict_region(runner, source, job.plan, region, transforms=tta_transforms(job.tta, runner.kind),
                              batch_size=job.batch_size, prefetch=True)
        if acc is not None:
            acc.add(prob)
    if acc is not None:
        prob = acc.result()
    result = _postprocess(prob, output, threshold, np.dtype(dtype))
    return result if jobs[0].has_z else result[0]


def _run_block(ref: _ModelRef, src: _SourceRef, dst: str, jobs: list[_Job], region: tuple[tuple[int, int], ...],
               index: tuple[int, ...], output: str, threshold: float, dtype: str) -> tuple[int, ...]:
    """One dask task: predict, write the block (whole chunks), then record it as done."""
    import zarr

    digest = _new_digest()
    result = _predict_block(ref, src, jobs, region, output, threshold, dtype, digest)
    spatial = region if jobs[0].has_z else region[1:]
    if np.issubdtype(result.dtype, np.floating) and not np.isfinite(result).all():
        bad = int((~np.isfinite(result)).sum())
        raise ValueError(f"the model predicted {bad} NaN/Inf value(s) in the block at {[lo for lo, _ in spatial]}; "
                         "nothing was written for it. Check the model's weights and the input normalisation.")
    target = zarr.open_array(dst, mode="r+")
    box: tuple[slice, ...] = tuple(slice(lo, hi) for lo, hi in spatial)
    if len(box) < result.ndim and (getattr(target.metadata, "dimension_names", None) or ("",))[0] == "c":
        result, box = np.moveaxis(result, -1, 0), (slice(None), *box)  # an OME-Zarr level 0 stores channels first
    target[box] = result
    with atomic_file(Path(dst) / PROGRESS_DIR / _marker(index)) as tmp:
        tmp.write_text(digest.hexdigest())
    return index


def _marker(index: tuple[int, ...]) -> str:
    return "_".join(str(i) for i in index) + ".done"


def _identity(value: Any) -> Any:
    return value


# --------------------------------------------------------------------------------------------------- the driver


def _triple(value: int | tuple[int, ...], spatial: int, what: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * spatial
    values = tuple(int(v) for v in value)
    if len(values) != spatial:
        raise ValueError(f"{what} must be an int or {spatial} ints (one per spatial axis), got {value!r}")
    return values


def _open_dst(dst: str, *, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str, run: dict[str, Any],
              overwrite: bool, ome: dict[str, Any] | None = None) -> tuple[set[str], Path | None]:
    """Create the output store (or reopen it to resume); returns the completion records already present and, when
    an old ``dst`` is being replaced, the hidden folder it was moved into (deleted once the new run completes,
    moved back if it fails). ``ome`` (axes and voxel size) makes ``dst`` an OME-Zarr image whose level 0 holds
    the blocks and the run record. The new store is made in a temporary sibling and renamed into place, so a
    failure (a full disk) leaves nothing behind and puts a replaced store back."""
    path = Path(dst)
    progress = _level0(path, ome) / PROGRESS_DIR
    record = progress / "run.json"
    aside = None
    if os.path.lexists(path):
        same = record.is_file() and json.loads(record.read_text()) == run
        if same:
            return {p.name for p in progress.iterdir() if p.suffix == ".done"}, None
        if not overwrite:
            why = "a run with different arguments" if record.is_file() else "data not written by predict_blockwise"
            raise FileExistsError(f"{dst} already exists and holds {why}; pass overwrite=True to replace it, or "
                                  "choose another output path.")
        aside = temp_sibling(path, "old", folder=True)
        os.replace(path, aside / path.name)
    kept = "the previous store was put back intact" if aside is not None else "nothing was left there"
    with explain_disk_full(dst, f"{kept} and the input is intact; free space on that disk or write elsewhere, "
                                "then run again."):
        try:
            with atomic_dir(path) as tmp:
                _create_store(tmp, shape=shape, chunks=chunks, dtype=dtype, run=run, ome=ome)
        except BaseException:
            _settle(path, aside, ok=False)
            raise
    return set(), aside


def _level0(path: Path, ome: dict[str, Any] | None) -> Path:
    """The folder of the array the blocks are written to: ``dst`` itself, or an OME-Zarr image's level 0."""
    from emzoo.io.ome import level_path

    return path / level_path(0) if ome is not None else path


def _create_store(path: Path, *, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str, run: dict[str, Any],
                  ome: dict[str, Any] | None) -> None:
    """An empty output array (or OME-Zarr image, channels first) with its run record, at ``path``."""
    import zarr

    attrs = {"emzoo": {k: run[k] for k in ("source", "output", "tta", "blend", "halo")}}
    if ome is None:
        zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0, attributes=attrs)
    else:
        from emzoo.io.ome import create_image

        channels = len(shape) > len(ome["spatial"])
        if channels:
            shape, chunks = (shape[-1], *shape[:-1]), (chunks[-1], *chunks[:-1])
        create_image(path, shape=shape, chunks=chunks, dtype=dtype, axes="C" * channels + ome["spatial"],
                     voxel_size=ome["voxel_size"], name=run["output"], attributes=attrs)
    progress = _level0(path, ome) / PROGRESS_DIR
    progress.mkdir()
    with atomic_file(progress / "run.json") as tmp:
        tmp.write_text(json.dumps(run, indent=1))


def _settle(dst: Path, aside: Path | None, ok: bool) -> None:
    """After a replacing run: drop the old store (success) or put it back in place of the partial new one."""
    if aside is None:
        return
    if not ok:
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(aside / dst.name, dst)
    shutil.rmtree(aside, ignore_errors=True)


def _default_block(runner: ModelRunner, shape3: tuple[int, int, int], halo: Any, blend: str,
                   workers: int) -> tuple[int, int, int]:
    """The output block whose window (block + halo on each side) is the largest that fits the memory budget shared
    by ``workers`` concurrent tasks; 8 slices deep for 2D and multi-frame nets (each slice is its own window)."""
    from emzoo.inference.budget import memory_budget

    plan = make_plan(runner, shape3, halo=halo, blend=blend, budget=memory_budget() // max(1, workers))
    block = [max(a.step, a.n_in - 2 * a.halo) for a in plan.axes]
    if runner.kind != "3d":
        block[0] = 8
    return tuple(block)  # type: ignore[return-value]


def predict_blockwise(
    model: Any,
    src: Any,
    dst: str | os.PathLike[str],
    *,
    block: int | tuple[int, ...] | None = None,
    halo: int | tuple[int, ...] | None = None,
    client: Any = None,
    tta: str | None = None,
    tile: int | tuple[int, ...] | None = None,
    blend: str = "none",
    batch_size: int | None = None,
    normalization: Any = "auto",
    precision: str = "auto",
    output: str = "probabilities",
    threshold: float = 0.5,
    dtype: str | None = None,
    chunks: tuple[int, ...] | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    axes: str | None = None,
) -> Any:
    """Predict a Zarr/HDF5 volume block by block into a Zarr array, with bounded memory; resumable.

    Parameters
    ----------
    model : keras.Model, str or Ensemble
        As for :func:`~emzoo.inference.predict`.
    src : str or array_like
        ``vol.zarr``, ``vol.zarr/array``, ``file.h5:/dataset`` (anything :func:`emzoo.read` opens), or a zarr,
        h5py, dask or numpy array. ``(Z, Y, X)`` or ``(Y, X)``, channels last if the model takes several.
    dst : str or path-like
        Output Zarr array (created; see ``overwrite``). Shape ``(*spatial, C)`` for probabilities, ``spatial``
        for ``output="foreground"``/``"mask"``. A ``*.ome.zarr`` path is an OME-Zarr image instead (Zarr v3,
        NGFF 0.5; :mod:`emzoo.io.ome`): the blocks fill its level ``s0`` (channels first), the source's voxel
        size becomes its scale in nanometres, and after the last block the pyramid (at least 3 levels; mean, or
        nearest for masks) is computed chunk by chunk from ``s0``.
    block : int or tuple, optional
        Output block per spatial axis, the unit of work and the output chunk. Rounded up to the model's divisor.
        Default: 8 slices deep for 2D and multi-frame nets (cube for 3D nets) with y/x sides such that a block's
        window (block plus halo) is the largest fitting the memory budget shared by the worker threads
        (:mod:`~emzoo.inference.budget`), as for :func:`~emzoo.inference.predict`'s tiles. Multiples of the tile
        step avoid predicting windows twice.
    halo : int, tuple or "exact", optional
        Context read around each block; as for :func:`~emzoo.inference.predict` (default: the preset's measured
        effective halo, else ``"exact"``, the receptive-field margin). The result equals in-memory prediction.
    client : distributed.Client or str, optional
        A dask.distributed client or scheduler address; default: dask's threaded scheduler in this process.
    tta : {None, "flips", "d4", "d4+z"}
        Test-time augmentation.
    tile : int or tuple, optional
        Model window; default: the block plus the halo on each side (one window per block).
    blend : {"none", "spline", "linear"}
        As for :func:`~emzoo.inference.predict`; the default is ``"none"`` here because blending makes each
        block also predict the windows of its neighbours that overlap it.
    batch_size : int, optional
        Windows per model call (at least 1).
    normalization : "auto", dict, str or None
        As for :func:`~emzoo.inference.predict`; per-image statistics are computed over the whole volume first
        (min/max in one chunked pass, percentiles from a strided sample).
    precision : {"auto", "float32", "bfloat16"}
        As for :func:`~emzoo.inference.predict`.
    output : {"probabilities", "foreground", "mask"}
        What to store: all class probabilities, the foreground probability (1-channel or 2-class models), or a
        uint8 mask (foreground >= ``threshold``; the arg-max label for more than two classes).
    threshold : float
        For ``output="mask"``; strictly between 0 and 1.
    dtype : str, optional
        Output dtype (default float32; uint8 for masks).
    chunks : tuple of int, optional
        Output chunks (spatial); ``block`` must be a multiple of them. Default: the block.
    num_workers : int, optional
        Threads of the threaded scheduler.
    overwrite : bool
        Replace an existing ``dst`` that was written with other arguments (or not by this function); the old one
        is moved aside and only deleted when the new run completes (put back if it fails). A ``dst`` from an
        interrupted run with the *same* arguments is always resumed; its finished blocks whose input bytes changed
        since are recomputed (with a warning saying how many). ``dst`` is never the source, inside it or around it
        (refused before anything is read).
    progress : bool
        Show a progress bar over blocks.
    axes : {"YX", "ZYX", "YXC", "ZYXC"}, optional
        What each axis of ``src`` is, as for :func:`~emzoo.inference.predict` (default: the file's axes, else
        guessed); required for a ``(Y, X, 3)`` array given to a model with another channel count.

    Returns
    -------
    zarr.Array
        The output array (read-only; an OME-Zarr output's level ``s0``).

    Raises
    ------
    FileExistsError
        ``dst`` exists from another run and ``overwrite`` is False.
    OSError
        A full disk (errno ENOSPC), in one line naming ``dst`` and saying what was kept (the finished blocks, to
        resume; or the previous store, put back).
    ValueError
        Bad options (``batch_size`` < 1, negative ``halo``, non-integer ``tile``/``block``, ``threshold`` outside
        (0, 1), ...), a block that is not a multiple of ``chunks``, NaN/Inf met in a block, or a ``dst`` that is
        (or lies inside, or holds) the source.

    Examples
    --------
    >>> import emzoo  # doctest: +SKIP
    >>> emzoo.predict_blockwise("cdeep3m_1fm.mito", "fibsem.zarr", "mito.zarr", block=(16, 1024, 1024),
    ...                         output="foreground")  # doctest: +SKIP
    """
    import zarr

    from emzoo._validate import check_int, check_ints, check_probability
    from emzoo.io.guard import check_output

    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    tile, halo, batch_size = check_tiling_args(tile=tile, halo=halo, batch_size=batch_size)
    block = check_ints(block, "block", minimum=1, allow_none=False)
    chunks = check_ints(chunks, "chunks", minimum=1, allow_none=False)
    threshold = check_probability(threshold, "threshold")
    if num_workers is not None:
        num_workers = check_int(num_workers, "num_workers", minimum=1)
    # Before anything is read: dst must not be (or lie inside, or hold) the source. Replacing an existing dst is
    # decided by _open_dst (resume a run with the same arguments, else only with overwrite=True).
    check_output(dst, inputs=[src], overwrite=True, what="dst")
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
    ref = _ModelRef(model, precision)
    runners = ref.runners()
    src_ref = _SourceRef(src)
    data, src_axes = src_ref.open()
    from emzoo.io.volume import Volume, check_array

    _, axes = _data_and_axes(Volume(data, None, src_axes, src_ref.describe()) if src_axes else data, axes)

    check_array(data, source=src_ref.describe())
    shape = tuple(int(s) for s in data.shape)
    has_z, has_c = data_layout(shape, runners[0], axes)
    spatial_shape = shape[:-1] if has_c else shape
    shape3 = spatial_shape if has_z else (1, *spatial_shape)
    if block is None:
        workers = 1 if client is not None else (num_workers or os.cpu_count() or 1)
        default = _default_block(runners[0], shape3, halo, blend, workers)
        block3 = tuple(min(b, s) for b, s in zip(default, shape3, strict=True))
    else:
        given = _triple(block, len(spatial_shape), "block")
        block3 = given if has_z else (1, *given)
    block3 = tuple(s if b >= s else -(-b // d) * d
                   for b, s, d in zip(block3, shape3, runners[0].divisor, strict=True))
    if any(r.metadata.get("postprocess") for r in runners):
        # The object-length filter needs whole objects; a block sees pieces of them.
        warnings.warn("predict_blockwise writes the network's output without the preset's object-length filter "
                      "(its test scores were measured with it); emzoo.predict applies it, or run "
                      "emzoo.inference.postprocess.apply_postprocess on each slice of the result.", stacklevel=2)
    jobs: list[_Job] = []
    for runner in runners:
        if data_layout(shape, runner, axes) != (has_z, has_c):
            raise ValueError("the ensemble members disagree on how to read the input (channels or z axis).")
        spec = resolve_normalization(data, _spec(runner, normalization))
        if tile is None:
            # One window per block: the block plus the halo on each side.
            halos = make_plan(runner, shape3, halo=halo, blend=blend).halo
            tile3 = tuple(b + 2 * h for b, h in zip(block3, halos, strict=True))
            plan = make_plan(runner, shape3, tile=tile3, halo=halo, blend=blend)
        else:
            plan = make_plan(runner, shape3, tile=tile, halo=halo, blend=blend)
        tta_transforms(tta, runner.kind)  # validates the mode early
        jobs.append(_Job(plan=plan, spec=spec, tta=tta, has_z=has_z, has_c=has_c,
                         batch_size=int(batch_size) if batch_size else default_batch_size(
                             plan, runner, 1 if client is not None else (num_workers or os.cpu_count() or 1))))
    spatial_block = block3 if has_z else block3[1:]
    classes = max(r.num_classes for r in runners)
    if output == "foreground" and classes > 2:
        raise ValueError(f"output='foreground' needs a 1-channel or 2-class model, this one has {classes} classes; "
                         "use output='probabilities' or 'mask' (arg-max labels).")
    out_dtype = np.dtype(dtype or ("uint8" if output == "mask" else "float32")).str
    out_shape = (*spatial_shape, classes) if output == "probabilities" else spatial_shape
    if chunks is None:
        out_chunks = spatial_block
    else:
        out_chunks = _triple(chunks, len(spatial_shape), "chunks")
        if any(b % c and b < s for b, c, s in zip(spatial_block, out_chunks, spatial_shape, strict=True)):
            raise ValueError(f"block {spatial_block} must be a multiple of chunks {out_chunks} so that each chunk is "
                             "written whole by one task; change one of them.")
    full_chunks = (*out_chunks, classes) if output == "probabilities" else out_chunks
    run = json.loads(json.dumps({
        "source": src_ref.describe(), "shape": list(shape), "source_dtype": str(np.dtype(data.dtype)),
        "model": ref.fingerprint(), "block": list(spatial_block), "tile": [list(j.plan.n_in) for j in jobs],
        "halo": [list(j.plan.halo) for j in jobs], "blend": blend, "tta": tta, "output": output,
        "precision": [r.precision for r in runners],
        "threshold": threshold, "dtype": out_dtype, "chunks": list(full_chunks),
        "normalization": [j.spec for j in jobs],
    }, default=str))
    ome = _ome_layout(dst, has_z, src_ref.voxel_size)
    done, aside = _open_dst(os.fspath(dst), shape=out_shape, chunks=full_chunks, dtype=out_dtype, run=run,
                            overwrite=overwrite, ome=ome)
    counts = [-(-s // b) for s, b in zip(shape3, block3, strict=True)]
    dst_path = os.fspath(dst)
    level0 = os.fspath(_level0(Path(dst_path), ome))
    pending, stale = [], 0
    for index in itertools.product(*(range(c) for c in counts)):
        key = index if has_z else index[1:]
        region = tuple((i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block3, shape3, strict=True))
        if _marker(key) in done:
            # A finished block is kept only if the input it was computed from is unchanged (same bytes).
            recorded = (Path(level0) / PROGRESS_DIR / _marker(key)).read_text().strip()
            if recorded and recorded == _block_digest(data, jobs, region):
                continue
            stale += 1
        pending.append((key, region))
    total = int(np.prod(counts))
    if stale:
        warnings.warn(f"{dst_path}: the input of {stale} of the {len(done)} finished block(s) changed since they were "
                      f"computed (or was not recorded); recomputing them with the rest ({len(pending)} of {total} "
                      "blocks).", UserWarning, stacklevel=2)
    try:
        _run_pending(pending, total, ref, src_ref, level0, jobs, runners, output, threshold, out_dtype, client,
                     num_workers, progress)
        if ome is not None:
            from emzoo.io.ome import build_pyramid

            build_pyramid(dst_path, method="nearest" if output == "mask" else "mean")
    except BaseException:
        _settle(Path(dst_path), aside, ok=False)
        state = ("the previous store was put back intact; free space on that disk or write elsewhere, then run "
                 "again." if aside is not None else "the blocks finished so far are kept; free space on that disk, "
                 "then run the same command again to resume.")
        with explain_disk_full(dst_path, state):
            raise
    _settle(Path(dst_path), aside, ok=True)
    return zarr.open_array(level0, mode="r")


def _ome_layout(dst: str | os.PathLike[str], has_z: bool, voxel_size: tuple[float, ...] | None
                ) -> dict[str, Any] | None:
    """For a ``*.ome.zarr`` ``dst``: its spatial axes and the source's voxel size (when it has one per axis)."""
    if not os.fspath(dst).lower().endswith(".ome.zarr"):
        return None
    spatial = "ZYX" if has_z else "YX"
    keep = voxel_size is not None and len(voxel_size) == len(spatial)
    return {"spatial": spatial, "voxel_size": tuple(float(v) for v in voxel_size) if keep else None}


def _run_pending(pending: list[Any], total: int, ref: _ModelRef, src_ref: _SourceRef, dst_path: str,
                 jobs: list[_Job], runners: list[ModelRunner], output: str, threshold: float, out_dtype: str,
                 client: Any, num_workers: int | None, progress: bool) -> None:
    """Predict and write the blocks not yet done, on the threaded scheduler or a distributed client."""
    import dask

    if pending:
        ref_key = dask.delayed(_identity, pure=True)(ref, dask_key_name="emzoo-model")
        src_key = dask.delayed(_identity, pure=True)(src_ref, dask_key_name="emzoo-source")
        tasks = [dask.delayed(_run_block, pure=False)(ref_key, src_key, dst_path, jobs, region, key, output,
                                                      threshold, out_dtype,
                                                      dask_key_name=f"emzoo-block-{'_'.join(map(str, key))}")
                 for key, region in pending]
        with progress_bar(total, "blocks", progress) as advance:
            advance(total - len(pending))
            if client is None:
                for runner, job in zip(runners, jobs, strict=True):
                    runner.warm_up(job.plan.n_in)
                _compute_threaded(tasks, advance, num_workers)
            else:
                _compute_distributed(tasks, advance, client)


def _compute_threaded(tasks: list[Any], advance: Any, num_workers: int | None) -> None:
    import dask
    from dask.callbacks import Callback

    class _Count(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(key, str) and key.startswith("emzoo-block-"):
                advance(1)

    with _Count():
        dask.compute(*tasks, scheduler="threads", num_workers=num_workers)


def _compute_distributed(tasks: list[Any], advance: Any, client: Any) -> None:
    from distributed import Client, as_completed

    own = isinstance(client, str)
    if own:
        client = Client(client)
    try:
        futures = client.compute(tasks)
        for future in as_completed(futures):
            future.result()
            advance(1)
    finally:
        if own:
            client.close()
