"""Fetch the files of a weights release, sha256-checked, from a mirror folder, the Hugging Face cache or the Hub.

Resolution order for every file of a release (after a local preset folder, which :func:`emzoo.load` handles):

1. a mirror folder named by ``EMZOO_WEIGHTS_DIR`` (several joined with ``os.pathsep``), laid out as
   ``<mirror>/<repo_id>/<file>`` (what ``emzoo download NAME --to DIR`` writes, for air-gapped clusters);
2. the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``): a file pinned to a 40-hex commit that is
   already cached is returned by ``hf_hub_download`` without any request;
3. a download through ``huggingface_hub.hf_hub_download`` from ``HF_ENDPOINT`` (default https://huggingface.co),
   unless ``HF_HUB_OFFLINE=1`` or ``EMZOO_OFFLINE=1``.

Every file is checked against the manifest's size and sha256 before it is used. A mismatch refuses to load, names
the file and both hashes, and deletes nothing: the cache, the mirror and the user's files are left as they are.
The environment is read at call time (``huggingface_hub`` reads it once, at import), so tests and notebooks may set
it late. Nothing here imports Keras, so ``emzoo download`` starts quickly.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from emzoo.hub.manifest import FileSpec, WeightsSpec, check_filename, resolve_weights, sha256_file
from emzoo.io.atomic import atomic_file

__all__ = [
    "offline",
    "hf_cache_dir",
    "mirror_dirs",
    "verify_file",
    "fetch_file",
    "fetch_release",
    "fetch_hub_file",
    "find_in_mirror",
    "download_to_mirror",
]

_TRUE = ("1", "true", "yes", "on")


def offline() -> str | None:
    """The variable that turns downloads off (``"HF_HUB_OFFLINE=1"`` or ``"EMZOO_OFFLINE=1"``), else None."""
    for var in ("EMZOO_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var]}"
    return None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder as the environment names it now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def mirror_dirs() -> list[Path]:
    """Mirror folders from ``EMZOO_WEIGHTS_DIR`` (``os.pathsep``-separated), in order."""
    raw = os.environ.get("EMZOO_WEIGHTS_DIR", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def verify_file(path: str | os.PathLike[str], expected: FileSpec, *, what: str) -> Path:
    """Check size and sha256 of ``path`` against the manifest; return the path when they match.

    Parameters
    ----------
    path : path-like
        File to check (followed through symlinks, as the HF cache uses them).
    expected : FileSpec
        Size and sha256 from the manifest.
    what : str
        Names the file in the error, e.g. ``"unet.cardiac_mito: model.weights.h5 from the HF cache"``.

    Raises
    ------
    ValueError
        On a size or hash mismatch; the message names the file, its path and both hashes. Nothing is deleted.
    """
    path = Path(path)
    size = path.stat().st_size
    actual = sha256_file(path)
    # The HF cache links snapshot names to blobs: name the blob too, it is what must go for a fresh download.
    shown = f"{path} -> {path.resolve()}" if path.is_symlink() else str(path)
    if size != expected.size:
        kind = "truncated (an interrupted copy or download?)" if size < expected.size else "longer than published"
        raise ValueError(
            f"{what} ({shown}) is {kind}: {size} bytes with sha256 {actual}, but the manifest expects "
            f"{expected.size} bytes with sha256 {expected.sha256}; nothing was deleted: remove or replace that file "
            "and fetch it again (`emzoo download`)."
        )
    if actual != expected.sha256:
        raise ValueError(
            f"{what} ({shown}) fails the sha256 check: it has sha256 {actual} but the manifest expects "
            f"{expected.sha256} (corrupt, tampered with, or from another release); refusing to use it and deleting "
            "nothing: remove or replace that file and fetch it again (`emzoo download`)."
        )
    return path


def fetch_hub_file(repo_id: str, filename: str, *, revision: str, what: str, release_name: str | None = None,
                   optional: bool = False) -> Path | None:
    """One file from the HF cache, or downloaded when allowed; no hash check (the callers do it).

    Parameters
    ----------
    repo_id, filename, revision : str
        What to fetch; ``revision`` should be a 40-hex commit (then a cached file costs no request).
    what : str
        Names the file in errors.
    release_name : str, optional
        ``entry.tag`` of a manifest release: the offline error then suggests ``emzoo download <release_name>``.
    optional : bool
        Return None instead of raising when the file is absent.

    Raises
    ------
    FileNotFoundError
        Offline (or Hub unreachable) and not cached, or absent on the Hub; one line saying how to get it.
    OSError
        Other HTTP errors.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from emzoo import __version__

    off = offline()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    # A cached file is read straight from disk: hf_hub_download would first build request headers, and that alone
    # may call the Hub (its agent detection), which an offline or firewalled machine must not wait for.
    # (A branch online is left to hf_hub_download, which asks what it points at now.)
    if off is not None or re.fullmatch(r"[0-9a-f]{40}", revision):
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir(), revision=revision)
        if isinstance(cached, str):
            return Path(cached)
    try:
        if off is not None:
            raise LocalEntryNotFoundError(f"{repo_id}/{filename}@{revision} is not cached")
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=hf_cache_dir(),
            endpoint=endpoint,
            library_name="emzoo",
            library_version=__version__,
        )
    except LocalEntryNotFoundError as exc:
        if optional:
            return None
        mirrors = os.pathsep.join(str(m) for m in mirror_dirs()) or "EMZOO_WEIGHTS_DIR is unset"
        why = f"downloads are off ({off})" if off else f"{endpoint or 'https://huggingface.co'} could not be reached"
        fetch = (f"run `emzoo download {release_name} --to DIR`" if release_name
                 else f"put {filename} of https://huggingface.co/{repo_id} (revision {revision}) in DIR/{repo_id}/")
        raise FileNotFoundError(
            f"{what} is not in a mirror ({mirrors}) nor in the Hugging Face cache ({hf_cache_dir()}) and {why}; "
            f"on a machine with internet {fetch}, copy DIR here and set EMZOO_WEIGHTS_DIR=DIR "
            f"(repo: https://huggingface.co/{repo_id}, revision {revision})."
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        if optional and isinstance(exc, EntryNotFoundError):
            return None
        raise FileNotFoundError(
            f"{what}: {endpoint or 'https://huggingface.co'} has no {filename} in {repo_id} at revision {revision} "
            f"({type(exc).__name__}); the manifest or the URI is wrong, or the repo is private (run `hf auth login`)."
        ) from exc
    except HfHubHTTPError as exc:
        raise OSError(f"{what}: the Hub answered {exc.response.status_code} for {filename} of {repo_id}@{revision}; "
                      "retry later, or use a mirror folder (EMZOO_WEIGHTS_DIR).") from exc
    return Path(path)


def fetch_file(release: WeightsSpec, filename: str) -> Path:
    """Path of one verified file of ``release``: bundled in the package, mirror, then HF cache, then download.

    Raises
    ------
    KeyError
        If the manifest does not list ``filename``.
    ValueError
        If the file found fails the size or sha256 check (nothing is deleted).
    FileNotFoundError
        If it is nowhere local and downloads are off (the message says how to pre-fetch it).
    """
    if filename not in release.files:
        raise KeyError(f"{release.name}: the manifest lists no {filename!r} (files: {', '.join(release.files)}).")
    check_filename(filename, where=release.name)
    expected = release.files[filename]
    what = f"{release.name}: {filename}"
    if release.bundled:
        from emzoo.hub.compact import bundled_dir

        packaged = bundled_dir() / release.bundled / filename
        if packaged.is_file():
            return verify_file(packaged, expected, what=f"{what} (bundled with emzoo)")
    if release.revision is None:
        raise FileNotFoundError(f"{what} is not on the Hub yet and the bundled copy {release.bundled}/{filename} is "
                                "missing from this installation; reinstall emzoo (pip install --force-reinstall).")
    mirrored = find_in_mirror(release.repo_id, filename)
    if mirrored is not None:
        return verify_file(mirrored, expected, what=f"{what} from the mirror (EMZOO_WEIGHTS_DIR)")
    path = _required(fetch_hub_file(release.repo_id, filename, revision=release.revision, what=what,
                                    release_name=release.name), what)
    return verify_file(path, expected, what=f"{what} from the Hugging Face cache")


def find_in_mirror(repo_id: str, filename: str) -> Path | None:
    """``<mirror>/<repo_id>/<filename>`` in the first ``EMZOO_WEIGHTS_DIR`` folder that has it, else None."""
    for mirror in mirror_dirs():
        candidate = mirror / repo_id / check_filename(filename, where=repo_id)
        if candidate.is_file():
            return candidate
    return None


def _required(path: Path | None, what: str) -> Path:
    if path is None:  # only optional fetches return None
        raise FileNotFoundError(f"{what} is missing")
    return path


def fetch_release(release: WeightsSpec, files: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Verified local paths of the files of ``release`` (all of them, or those of ``files`` it lists)."""
    names = [f for f in release.files if files is None or f in files]
    return {name: fetch_file(release, name) for name in names}


def _copy_atomic(src: Path, dest: Path) -> None:
    with atomic_file(dest) as tmp:
        shutil.copyfile(src, tmp)


def download_to_mirror(names: list[str], directory: str | os.PathLike[str]) -> list[tuple[str, Path, str]]:
    """Fill a mirror folder (``<directory>/<repo_id>/<file>``) with every file of the named releases.

    Files already there and matching the manifest are kept; others are fetched (HF cache, then download),
    verified, and copied in atomically, so an interrupted run never leaves a half-written file under its real name.

    Parameters
    ----------
    names : list of str
        ``"entry"`` (its default tag) or ``"entry.tag"``.
    directory : path-like
        The mirror folder; point ``EMZOO_WEIGHTS_DIR`` at it on the machine that loads the weights.

    Returns
    -------
    list of (str, Path, str)
        ``(entry.tag, path in the mirror, "kept" | "copied")`` for every file.

    Examples
    --------
    >>> download_to_mirror(["unet.cardiac_mito"], "/data/emzoo_mirror")  # doctest: +SKIP
    """
    from emzoo.registry import split_name_tag

    root = Path(directory)
    out = []
    for name in names:
        release = resolve_weights(*split_name_tag(name))
        for filename, expected in release.files.items():
            dest = root / release.repo_id / check_filename(filename, where=release.name)
            what = f"{release.name}: {filename}"
            if dest.is_file():
                try:
                    verify_file(dest, expected, what=what)
                    out.append((release.name, dest, "kept"))
                    continue
                except ValueError:
                    pass  # a stale or broken copy in the mirror being filled is replaced below
            src = _required(fetch_hub_file(release.repo_id, filename, revision=release.revision, what=what,
                                           release_name=release.name), what)
            verify_file(src, expected, what=f"{what} from the Hugging Face cache")
            _copy_atomic(src, dest)
            verify_file(dest, expected, what=f"{what} copied to the mirror")
            out.append((release.name, dest, "copied"))
    return out
