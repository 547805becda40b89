"""The rules every writer follows before it touches the disk: never write over an input, never replace an
existing output unless asked.

Paths are compared by what they resolve to (:func:`os.path.realpath`, plus :func:`os.path.samefile` for hard
links), by their *container*: the file, folder or store part of ``file.h5:/ds`` / ``vol.zarr/raw``. An output is
refused when its container is an input's container, lies inside it (``in.zarr/pred``, ``slices/pred.tif``) or holds
it (an output folder around the input file): each of these would change or delete the input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emzoo.io.volume import split_uri

__all__ = ["check_output", "output_exists", "container", "source_path"]

_HDF5 = (".h5", ".hdf5", ".hdf", ".he5")


def container(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``(realpath of the file/folder/store, member key or None)`` of a path as :func:`emzoo.read` takes it."""
    file, key = split_uri(os.fspath(path))
    return os.path.realpath(file), key


def source_path(src: Any) -> str | None:
    """The path an input comes from: a path itself, a :class:`~emzoo.io.Volume`'s ``source``, an h5py dataset's
    file, a zarr array's local store; None for in-memory arrays."""
    from emzoo.io.volume import Volume

    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, Volume):
        text = src.source.split(" (", 1)[0]  # "vol.zarr (OME-Zarr level 0)"
        return text if text and text != "memory" else None
    if type(src).__module__.startswith("h5py") and hasattr(src, "file"):
        return f"{src.file.filename}:{src.name}"
    root = getattr(getattr(src, "store", None), "root", None)
    if root is not None:
        return os.path.join(os.fspath(root), getattr(src, "path", "") or "")
    return None


def _inside(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def output_exists(path: str | os.PathLike[str]) -> bool:
    """True when writing ``path`` would replace something: the file/folder, or (``file.h5:/ds``, ``vol.zarr/a``)
    the named member of an existing file or store. A new member of an existing file replaces nothing."""
    file, key = split_uri(os.fspath(path))
    if key is None:
        return os.path.lexists(file)
    if not os.path.exists(file):
        return False
    if Path(file).suffix.lower() in _HDF5:
        import h5py

        try:
            with h5py.File(file, "r") as handle:
                return key in handle
        except OSError:
            return True  # not a readable HDF5 file: writing would replace it
    return os.path.lexists(os.path.join(file, key))


def check_output(output: str | os.PathLike[str], *, inputs: Iterable[Any] = (), overwrite: bool = False,
                 what: str = "output") -> None:
    """Refuse an ``output`` path that would destroy an input, or replace an existing file without ``overwrite``.

    Call it before anything is read or written.

    Parameters
    ----------
    output : str or path-like
        As :func:`emzoo.write` takes it (``file.h5:/ds``, ``vol.zarr/member``, ...).
    inputs : iterable
        Paths, :class:`~emzoo.io.Volume` s, h5py/zarr arrays (anything :func:`source_path` understands; in-memory
        arrays are skipped).
    overwrite : bool
        Allow replacing an existing ``output`` (never an input).
    what : str
        How the output is named in messages (``"output"``, ``"dst"``).

    Raises
    ------
    ValueError
        If ``output`` resolves to an input, lies inside one or holds one.
    FileExistsError
        If ``output`` exists and ``overwrite`` is False.
    """
    out_text = os.fspath(output)
    out_file, out_key = container(out_text)
    for src in inputs:
        text = source_path(src)
        if text is None:
            continue
        in_file, in_key = container(text)
        if _inside(out_file, in_file) or _inside(in_file, out_file) or _same(out_file, in_file):
            if out_file == in_file or _same(out_file, in_file):
                a, b = (out_key or "").strip("/"), (in_key or "").strip("/")
                relation = ("is the input" if a == b else "lies inside the input" if not b else
                            "holds the input" if not a else "is in the same file or store as the input")
            else:
                relation = "lies inside the input" if _inside(out_file, in_file) else "holds the input"
            raise ValueError(f"{what} {out_text} {relation} {text}; writing it would destroy the input. Choose an "
                             "output outside the input file or folder.")
    if not overwrite and output_exists(out_text):
        raise FileExistsError(f"{what} {out_text} already exists; pass --overwrite (overwrite=True) to replace it, "
                              "or choose another path.")
