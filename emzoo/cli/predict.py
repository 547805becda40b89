"""``emzoo predict``: run a model (or preset, or .keras file) on an image, stack or volume of any size."""

from __future__ import annotations

import time
from pathlib import Path

import typer


class _Usage(ValueError):
    """A bad command-line value: reported as one line, exit code 2."""


def _ints(text: str | None, what: str, minimum: int) -> int | tuple[int, ...] | None:
    """``"256"`` / ``"16,256,256"`` / ``"16x256x256"`` as ints >= ``minimum`` (checked like the Python API)."""
    from emzoo._validate import check_ints

    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise _Usage(f"{what} must be an int or comma-separated ints (e.g. 256 or 16,256,256), got {text!r}") from None
    if not values:
        raise _Usage(f"{what} must be an int or comma-separated ints (e.g. 256 or 16,256,256), got {text!r}")
    try:
        return check_ints(values[0] if len(values) == 1 else values, what, minimum=minimum, allow_none=False)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _number(text: str | None, what: str, kind: type) -> int | float | None:
    from emzoo._validate import check_int, check_probability

    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        want = "an integer >= 1" if kind is int else "a number strictly between 0 and 1"
        raise _Usage(f"{what} must be {want}, got {text!r}") from None
    try:
        return check_int(value, what, minimum=1) if kind is int else check_probability(value, what)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _instance_options(method: str | None, min_size: str | None,
                      foreground_only: bool) -> tuple[str | None, int]:
    """``--instances`` checked against the methods, ``--min-size`` as an int >= 0 (only with ``--instances``)."""
    from emzoo._validate import check_int
    from emzoo.inference.instances import _check_method

    if method is None:
        if min_size is not None:
            raise _Usage("--min-size applies to --instances (object labels); add --instances METHOD.")
        return None, 0
    if foreground_only:
        raise _Usage("--instances writes object labels and --foreground a probability map; pick one.")
    try:
        method = _check_method(method)
    except ValueError as exc:
        raise _Usage(str(exc).replace("method must", "--instances must", 1)) from None
    if min_size is None:
        return method, 0
    try:
        return method, check_int(int(min_size), "--min-size", minimum=0)
    except ValueError:
        raise _Usage(f"--min-size must be an integer >= 0, got {min_size!r}") from None


def _relative_spacing(voxel_size: tuple[float, ...] | None, ndim: int) -> tuple[float, ...] | None:
    """Voxel size relative to the finest axis, so distance_ws's seed depth stays in (finest) pixels."""
    if not voxel_size or len(voxel_size) != ndim or min(voxel_size) <= 0:
        return None
    finest = min(voxel_size)
    return tuple(float(v) / finest for v in voxel_size)


def _one_line(exc: BaseException) -> str:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(str(message).split())
    known = (ValueError, KeyError, FileNotFoundError, FileExistsError, TypeError, RuntimeError, OSError)
    return text if isinstance(exc, known) else f"{type(exc).__name__}: {text}"


def _is_zarr(path: str) -> bool:
    from emzoo.io.volume import split_uri

    return Path(split_uri(path)[0]).suffix.lower() == ".zarr"


def _foreground_view(data, channels: bool):
    """The foreground of a prediction as :func:`emzoo.inference.foreground` reads it, lazily for dask arrays.

    A probability map's class axis is last (one class: it; two: class 1; more: anything but class 0); masks and
    labels are drawn as they are (non-zero is foreground).
    """
    if not channels:
        return data
    classes = int(data.shape[-1])
    return data[..., 0] if classes == 1 else data[..., 1] if classes == 2 else 1 - data[..., 0]


def _write_preview(path: str, model: str, input: str, prediction) -> str:
    """The mid-sections of INPUT with the prediction overlaid; a .zarr OUTPUT (a path) is read lazily."""
    from emzoo.io import read
    from emzoo.viz import write_preview

    source = read(input, lazy=True)
    raw = source.data[..., 0] if source.axes.endswith("C") else source.data
    if isinstance(prediction, str):  # only the chunks the three sections cross are read from the store
        stored = read(prediction, lazy=True)
        prob = _foreground_view(stored.data, stored.axes.endswith("C"))
    else:
        prob = _foreground_view(prediction, prediction.ndim == raw.ndim + 1)
    size = source.voxel_size if source.voxel_size and len(source.voxel_size) == raw.ndim else None
    written = write_preview(path, raw, prob, voxel_size=size, title=f"{model} on {Path(input).name}")
    return str(written)


def _is_ome(path: str) -> bool:
    from emzoo.io.volume import split_uri

    return split_uri(path)[0].rstrip("/").lower().endswith(".ome.zarr")


def _blockwise_instances(model: str, input: str, output: str, *, method: str, min_size: int, threshold: float,
                         block: int | tuple[int, ...] | None, overwrite: bool, **options) -> tuple[int, ...]:
    """Predict the foreground blockwise, then label it blockwise (:func:`emzoo.inference.instances_blockwise`).

    A ``*.ome.zarr`` OUTPUT keeps the foreground probability as its image and gets the labels where OME-NGFF puts
    them, ``labels/instances`` (:func:`emzoo.io.ome.write_labels`); any other ``.zarr`` OUTPUT is the uint32 labels,
    and the probabilities go to a hidden sibling folder deleted at the end.
    """
    import shutil
    import warnings

    from emzoo.inference import instances_blockwise, predict_blockwise
    from emzoo.inference.instances_blockwise import UnsplitObjectsWarning
    from emzoo.io import read
    from emzoo.io.atomic import temp_sibling

    voxel_size = read(input, lazy=True).voxel_size
    work = temp_sibling(Path(output.rstrip("/")), "prob", folder=True)
    try:
        prob = output if _is_ome(output) else str(work / "prob.zarr")
        result = predict_blockwise(model, input, prob, block=block, output="foreground",
                                   overwrite=overwrite or not _is_ome(output), **options)
        labels = str(work / "labels.zarr") if _is_ome(output) else output
        ndim = len(result.shape)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            done = instances_blockwise(read(prob, lazy=True).data, labels, method, threshold=threshold,
                                       min_size=min_size, sampling=_relative_spacing(voxel_size, ndim), block=block,
                                       overwrite=overwrite or _is_ome(output))
        for warning in caught:  # objects too long to split: one line, with the --block that would split them
            unsplit = warning.message
            text = (f"distance_ws left {unsplit.count} object(s) longer than the labelling halo whole; pass --block "
                    f"with sides >= {2 * unsplit.needed_halo} (the labelling halo is half the block) to split them."
                    if isinstance(unsplit, UnsplitObjectsWarning) else str(unsplit))
            typer.echo(f"emzoo: warning: {text}", err=True)
        if _is_ome(output):
            import dask.array as da

            from emzoo.io.ome import write_labels

            write_labels(output, da.from_zarr(done), name="instances")
        return tuple(done.shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def predict_command(
    model: str = typer.Argument(..., help="Entry name, entry.tag, hf://org/repo@rev, preset folder or .keras file."),
    input: str = typer.Argument(..., help="Image/volume: .tif, slice folder, file.h5:/ds, .zarr, .mrc, .npy."),
    output: str = typer.Argument(..., help="Where to write: .zarr (blockwise, resumable), .tif, .h5:/ds, .npy, ..."),
    tile: str = typer.Option(None, "--tile", help="Model window: 512 or z,y,x (default: the largest that fits a "
                                                  "half of the free memory)."),
    halo: str = typer.Option(None, "--halo", help="Context per side: an int, z,y,x or 'exact' (the receptive-field "
                                                  "margin; default: the preset's measured halo, else exact)."),
    tta: str = typer.Option(None, "--tta", help="Test-time augmentation: flips, d4 or d4+z."),
    blend: str = typer.Option(None, "--blend", help="spline, linear or none (default: spline in memory, none "
                                                    "blockwise)."),
    threshold: str = typer.Option(None, "--threshold", help="Write a uint8 mask (foreground >= threshold, "
                                                            "0 < threshold < 1; arg-max labels for > 2 classes)."),
    foreground_only: bool = typer.Option(False, "--foreground", help="Write the foreground probability only."),
    instances: str = typer.Option(None, "--instances", help="Write uint32 object labels (0 = background) made by "
                                                            "cc, distance_ws or boundary_ws from the foreground "
                                                            "(boundary) probability; --threshold sets their "
                                                            "threshold (default 0.5). A .zarr OUTPUT is labelled "
                                                            "blockwise (a *.ome.zarr one gets labels/instances)."),
    min_size: str = typer.Option(None, "--min-size", help="With --instances: drop objects of fewer voxels (an "
                                                          "integer >= 0)."),
    block: str = typer.Option(None, "--block", help="Block (= output chunk) for .zarr output, e.g. 8,512,512."),
    scheduler: str = typer.Option(None, "--scheduler", help="dask.distributed scheduler address (.zarr output)."),
    batch_size: str = typer.Option(None, "--batch-size", help="Windows per model call (an integer >= 1)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT (never the input)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    no_postprocess: bool = typer.Option(False, "--no-postprocess", help="Skip the preset's recorded "
                                                                        "post-processing (the object-length "
                                                                        "filter of presets fine-tuned here)."),
    preview: str = typer.Option(None, "--preview", help="Also write this PNG: the input's mid-sections (XY; XZ and "
                                                        "YZ for a volume) with the prediction overlaid (read "
                                                        "lazily from a .zarr OUTPUT)."),
) -> None:
    """Predict class probabilities (or a mask, or object labels) and print a summary line: voxels, seconds, voxels/s.

    A .zarr OUTPUT is written block by block with dask (bounded memory, resumable: run the same command again after
    an interruption; finished blocks whose input changed since are recomputed); other outputs are predicted in memory and written atomically. OUTPUT is never the input (nor
    inside or around it), an existing OUTPUT is only replaced with --overwrite, and a prediction holding NaN is not
    written. Every error is one line on stderr: exit code 2 for a bad option, 1 otherwise.
    """
    try:
        _predict(model, input, output, tile=tile, halo=halo, tta=tta, blend=blend, threshold=threshold,
                 foreground_only=foreground_only, instances=instances, min_size=min_size, block=block,
                 scheduler=scheduler, batch_size=batch_size, overwrite=overwrite, progress=progress,
                 preview=preview, postprocess=not no_postprocess)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # every failure is reported as one line, never a traceback
        typer.echo(f"emzoo: error: {_one_line(exc)}", err=True)
        raise typer.Exit(2 if isinstance(exc, (_Usage, typer.BadParameter)) else 1) from None


def _predict(model: str, input: str, output: str, *, tile: str | None, halo: str | None, tta: str | None,
             blend: str | None, threshold: str | None, foreground_only: bool, instances: str | None,
             min_size: str | None, block: str | None, scheduler: str | None, batch_size: str | None,
             overwrite: bool, progress: bool, preview: str | None = None, postprocess: bool = True) -> None:
    import numpy as np

    from emzoo.io.guard import check_output

    # Every option is checked, and OUTPUT against INPUT, before anything is loaded, read or written.
    cut = _number(threshold, "--threshold", float)
    if cut is not None and foreground_only:
        raise _Usage("--threshold writes a mask and --foreground a probability map; pick one.")
    method, smallest = _instance_options(instances, min_size, foreground_only)
    kwargs = dict(tile=_ints(tile, "--tile", 1), halo="exact" if halo == "exact" else _ints(halo, "--halo", 0),
                  tta=tta,
                  batch_size=_number(batch_size, "--batch-size", int), progress=progress)
    blocks = _ints(block, "--block", 1)
    zarr_out = _is_zarr(output)
    if not zarr_out and (scheduler or block):
        raise _Usage("--scheduler and --block apply to .zarr output (blockwise prediction).")
    # A .zarr output from an interrupted run with the same arguments is resumed; predict_blockwise decides. Labels
    # (--instances) are written whole at the end, so an existing OUTPUT needs --overwrite, as for in-memory outputs.
    check_output(output, inputs=[input], overwrite=overwrite or (zarr_out and (method is None or _is_ome(output))))
    if preview is not None:
        if Path(preview).suffix.lower() != ".png":
            raise _Usage(f"--preview must be a .png file, got {preview!r}")
        check_output(preview, inputs=[input, output], overwrite=overwrite or zarr_out, what="--preview")

    from emzoo.inference import foreground, predict, predict_blockwise
    from emzoo.io import read, write

    start = time.perf_counter()
    if zarr_out and method is not None:
        shape = _blockwise_instances(model, input, output, method=method, min_size=smallest,
                                     threshold=0.5 if cut is None else cut, block=blocks, client=scheduler,
                                     blend=blend or "none", overwrite=overwrite, **kwargs)
    elif zarr_out:
        mode = "mask" if cut is not None else "foreground" if foreground_only else "probabilities"
        result = predict_blockwise(model, input, output, block=blocks, client=scheduler, blend=blend or "none",
                                   output=mode, threshold=0.5 if cut is None else cut, overwrite=overwrite, **kwargs)
        shape = result.shape if mode != "probabilities" else result.shape[:-1]
    else:
        volume = read(input)
        prob = predict(model, volume, blend=blend or "spline", postprocess=postprocess, **kwargs)
        shape = prob.shape[:-1]
        bad = int(np.size(prob) - np.count_nonzero(np.isfinite(prob)))
        if bad:
            raise ValueError(f"the prediction holds {bad} NaN/Inf value(s); nothing was written to {output}. Check "
                             "the model's weights and the input normalisation.")
        spatial = "ZYX"[-len(shape):]
        if method is not None:
            from emzoo.inference.instances import instances as label_instances

            data = label_instances(foreground(prob), method, threshold=0.5 if cut is None else cut,
                                   min_size=smallest, sampling=_relative_spacing(volume.voxel_size, len(shape)))
            axes = spatial
        elif cut is not None:
            data = (np.argmax(prob, -1) if prob.shape[-1] > 2 else foreground(prob) >= cut).astype(np.uint8)
            axes = spatial
        elif foreground_only:
            data, axes = foreground(prob), spatial
        else:
            data, axes = prob, spatial + "C"
        write(output, data, voxel_size=volume.voxel_size, axes=axes, overwrite=overwrite)
    seconds = time.perf_counter() - start
    voxels = int(np.prod(shape))
    typer.echo(f"emzoo predict: {voxels:,} voxels in {seconds:.1f} s ({voxels / max(seconds, 1e-9):,.0f} voxels/s) "
               f"-> {output}")
    if preview is not None:
        typer.echo(f"wrote preview {_write_preview(preview, model, input, output if zarr_out else data)}")
