"""``emzoo export``: write a preset (or an entry's default weights) as .keras, ONNX, SavedModel or bioimage.io."""

from __future__ import annotations

from pathlib import Path

import typer


def export_command(
    name: str = typer.Argument(..., help="Preset: entry (its default weights), entry.tag, hf://org/repo@rev or a "
                                         "preset folder."),
    format: str = typer.Option(..., "--format", "-f", help="keras, onnx, savedmodel or bioimageio."),
    out: Path = typer.Option(..., "--out", "-o", help="File or folder to write (.keras, .onnx, a SavedModel folder, "
                                                     "a bioimage.io .zip or folder)."),
    check: bool = typer.Option(False, "--check", help="Run the export on a random test input and print its largest "
                                                     "deviation from the Keras model (not for bioimageio, whose "
                                                     "package is checked by bioimageio.core's test_model)."),
) -> None:
    """Export a preset for another runtime; ONNX and SavedModel take any tile size (a multiple of the divisor)."""
    from emzoo.exporters import export, max_deviation, resolve_model

    if format not in ("keras", "onnx", "savedmodel", "bioimageio"):
        raise ValueError(f"--format must be keras, onnx, savedmodel or bioimageio, got {format!r}.")
    if check and format == "bioimageio":
        raise ValueError("--check applies to keras, onnx and savedmodel; validate a bioimage.io package with "
                         "`bioimageio test PATH`.")
    model = resolve_model(name) if format != "bioimageio" else name
    path = export(model, out, format=format)
    typer.echo(f"wrote {path} ({format})")
    if check:
        import numpy as np

        from emzoo.registry import entry_info

        meta = getattr(model, "emzoo_metadata", None) or {}
        shape = entry_info(meta["entry"]).test_input_shape if meta.get("entry") else tuple(model.input_shape[1:])
        x = np.random.default_rng(0).standard_normal((1, *shape)).astype("float32")
        typer.echo(f"max |export - keras| on a {'x'.join(map(str, shape))} input: "
                   f"{max_deviation(model, path, x, format=format):.3g}")
