"""``emzoo.export``: one call for every format, picked by ``format=`` or by the suffix of the path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emzoo.exporters.bioimageio import export_bioimageio
from emzoo.exporters.formats import (
    FORMATS,
    SUFFIXES,
    resolve_model,
    warn_postprocess,
    write_keras,
    write_onnx,
    write_savedmodel,
)

__all__ = ["export"]


def export(model_or_name: Any, path: str | os.PathLike[str], format: str | None = None, *,
           opset: int | None = None, **options: Any) -> Path:
    """Write a model (or a preset, by name or folder) in another format; returns the written path.

    Parameters
    ----------
    model_or_name : keras.Model, str or path-like
        A built or loaded model, a preset name (``"entry.tag"``, or ``"entry"`` for its default weights,
        ``"hf://org/repo@rev"``) or a preset folder. Presets carry their normalisation and training data, which
        ``format="bioimageio"`` needs.
    path : str or path-like
        Where to write: a ``.keras`` file, an ``.onnx`` file, a SavedModel folder, a bioimage.io ``.zip`` (or a
        folder holding the unzipped package).
    format : {"keras", "onnx", "savedmodel", "bioimageio"}, optional
        Default: from the suffix of ``path`` (``.keras``, ``.onnx``, ``.zip``).
    opset : int, optional
        ONNX opset (default: tf2onnx's).
    **options
        Passed to the bioimage.io writer (:func:`emzoo.exporters.bioimageio.export_bioimageio`).

    Returns
    -------
    pathlib.Path
        The written file or folder.

    Raises
    ------
    ValueError
        An unknown format, a format that cannot be read off ``path``, or a model that does not trace.
    ImportError
        An optional dependency missing (the message gives the ``pip install`` line).

    Examples
    --------
    >>> import emzoo
    >>> model = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    >>> emzoo.export(model, tmp / "unet.onnx").suffix  # doctest: +SKIP
    '.onnx'
    """
    target = Path(path)
    if format is None:
        format = SUFFIXES.get(target.suffix.lower())
        if format is None:
            raise ValueError(f"cannot tell the export format from {str(target)!r}; pass format= one of "
                             f"{', '.join(FORMATS)} (or use a .keras/.onnx/.zip path).")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}.")
    if options and format != "bioimageio":
        raise TypeError(f"export(format={format!r}) got unexpected options {sorted(options)}; they apply to "
                        "format='bioimageio' only.")
    if format == "bioimageio":
        return export_bioimageio(model_or_name, target, opset=opset, **options)
    model = resolve_model(model_or_name)
    warn_postprocess(model, format)
    if format == "onnx":
        return write_onnx(model, target, opset=opset)
    if format == "savedmodel":
        return write_savedmodel(model, target)
    return write_keras(model, target)
