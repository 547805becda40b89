"""Write-then-rename helpers: a reader never sees a half-written file or folder, even if the writer is killed."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_file", "atomic_dir", "temp_sibling"]


def temp_sibling(target: Path, tag: str = "tmp", *, folder: bool = False) -> Path:
    """Create an empty hidden file (or folder) next to ``target`` and return its path.

    Unlike :func:`tempfile.mkstemp` (mode 0o600) and :func:`tempfile.mkdtemp` (0o700), it is created with mode
    0o666 / 0o777 minus the umask, so the file renamed into place has the permissions of any file the user writes.
    """
    for _ in range(100):
        candidate = target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:12]}{'' if folder else target.suffix}"
        try:
            if folder:
                os.mkdir(candidate, 0o777)
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not create a temporary {'folder' if folder else 'file'} next to {target}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one ``os.replace``.

    Examples
    --------
    >>> with atomic_file(tmp / "x.npy") as t:  # doctest: +SKIP
    ...     np.save(t, np.zeros(3))
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it is renamed to ``path`` (an old one is swapped out).

    A folder cannot be replaced in one system call, so an existing ``path`` is first renamed aside, then the new
    one renamed in, then the old one deleted: at every moment ``path`` is either the complete old or the complete
    new folder (or briefly absent).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target, folder=True)
    try:
        yield tmp
        if target.exists():
            old = temp_sibling(target, "old", folder=True)
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
