"""``emzoo predict``: run a model (or preset, or .keras file) on an image, stack or volume of any size."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def _ints(text: str | None, what: str) -> int | tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be an int or comma-separated ints (e.g. 256 or 16,256,256), got "
                                 f"{text!r}") from None
    return values[0] if len(values) == 1 else values


def _is_zarr(path: str) -> bool:
    from emzoo.io.volume import split_uri

    return Path(split_uri(path)[0]).suffix.lower() == ".zarr"


def predict_command(
    model: str = typer.Argument(..., help="Entry name, entry.tag, hf://org/repo@rev, preset folder or .keras file."),
    input: str = typer.Argument(..., help="Image/volume: .tif, slice folder, file.h5:/ds, .zarr, .mrc, .npy."),
    output: str = typer.Argument(..., help="Where to write: .zarr (blockwise, resumable), .tif, .h5:/ds, .npy, ..."),
    tile: str = typer.Option(None, "--tile", help="Model window: 512 or z,y,x (default: from the halo)."),
    halo: str = typer.Option(None, "--halo", help="Context per side (default: the receptive-field margin)."),
    tta: str = typer.Option(None, "--tta", help="Test-time augmentation: flips, d4 or d4+z."),
    blend: str = typer.Option(None, "--blend", help="spline, linear or none (default: spline in memory, none "
                                                    "blockwise)."),
    threshold: float = typer.Option(None, "--threshold", help="Write a uint8 mask (foreground >= threshold; "
                                                              "arg-max labels for > 2 classes)."),
    foreground_only: bool = typer.Option(False, "--foreground", help="Write the foreground probability only."),
    block: str = typer.Option(None, "--block", help="Block (= output chunk) for .zarr output, e.g. 8,512,512."),
    scheduler: str = typer.Option(None, "--scheduler", help="dask.distributed scheduler address (.zarr output)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Windows per model call."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a .zarr output from another run."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Predict class probabilities (or a mask) and print a summary line: voxels, seconds, voxels/s.

    A .zarr OUTPUT is written block by block with dask (bounded memory, resumable: run the same command again after
    an interruption); other outputs are predicted in memory and written atomically.
    """
    import numpy as np

    from emzoo.inference import foreground, predict, predict_blockwise
    from emzoo.io import read, write

    if threshold is not None and foreground_only:
        raise typer.BadParameter("--threshold writes a mask and --foreground a probability map; pick one.")
    start = time.perf_counter()
    kwargs = dict(tile=_ints(tile, "--tile"), halo=_ints(halo, "--halo"), tta=tta, batch_size=batch_size,
                  progress=progress)
    if _is_zarr(output):
        mode = "mask" if threshold is not None else "foreground" if foreground_only else "probabilities"
        result = predict_blockwise(model, input, output, block=_ints(block, "--block"), client=scheduler,
                                   blend=blend or "none", output=mode, threshold=0.5 if threshold is None else threshold,
                                   overwrite=overwrite, **kwargs)
        shape = result.shape if mode != "probabilities" else result.shape[:-1]
    else:
        if scheduler or block:
            raise typer.BadParameter("--scheduler and --block apply to .zarr output (blockwise prediction).")
        volume = read(input)
        prob = predict(model, volume, blend=blend or "spline", **kwargs)
        shape = prob.shape[:-1]
        if threshold is not None:
            data = (np.argmax(prob, -1) if prob.shape[-1] > 2 else foreground(prob) >= threshold).astype(np.uint8)
        elif foreground_only:
            data = foreground(prob)
        else:
            data = prob
        write(output, data, voxel_size=volume.voxel_size)
    seconds = time.perf_counter() - start
    voxels = int(np.prod(shape))
    typer.echo(f"emzoo predict: {voxels:,} voxels in {seconds:.1f} s ({voxels / max(seconds, 1e-9):,.0f} voxels/s) "
               f"-> {output}")
