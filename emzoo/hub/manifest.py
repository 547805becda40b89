"""The weights manifest: ``weights_manifest/<entry>.json``, one file per entry, the only record of published weights.

Each file maps the entry's weight tags to a Hugging Face Hub repo pinned at a 40-hex commit, with the sha256 and
size of every file of the preset, what the weights were trained on and their measured metrics (shape:
``{"entry": "unet", "tags": {"cardiac_mito": {"repo_id": ..., "revision": ..., "files": {...}, ...}}}``). The files
are validated against ``weights_manifest/schema.json`` with :mod:`jsonschema` (draft 2020-12), and file names are
checked on their own so a manifest cannot point outside the preset folder.

A bare entry name means its default tag: the tag marked ``"default": true``, else the first one (timm's rule).
``EMZOO_MANIFEST_DIR`` replaces the packaged folder (the tests use temporary manifests).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "FileSpec",
    "WeightsSpec",
    "manifest_dir",
    "available_tags",
    "default_tag",
    "load_manifest",
    "validate_manifest",
    "check_filename",
    "resolve_weights",
    "find_release",
    "file_record",
    "tag_record",
    "update_manifest",
    "sha256_file",
]

_HEX40 = re.compile(r"[0-9a-f]{40}")

#: A preset's weights: Keras' float file, or the compact form of the bundled presets (:mod:`emzoo.hub.compact`).
WEIGHT_FILES = ("model.weights.h5", "model.weights.compact.h5")


def _packaged_dir() -> Path:
    # A source checkout (editable install) keeps the manifest at the repository root; a wheel installs it as
    # data files under <prefix>/share/emzoo/weights_manifest (setup.cfg [options.data_files]).
    source = Path(__file__).resolve().parents[2] / "weights_manifest"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "emzoo" / "weights_manifest"


_PACKAGED_DIR = _packaged_dir()


@dataclass(frozen=True)
class FileSpec:
    """Expected sha256 (hex) and size (bytes) of one file of a preset."""

    sha256: str
    size: int


@dataclass(frozen=True)
class WeightsSpec:
    """One published weights release: ``entry.tag`` -> a Hub repo pinned at a commit, with its files' hashes.

    Attributes
    ----------
    entry, tag : str
        Registry entry and weights tag (``"unet"``, ``"cardiac_mito"``).
    repo_id : str
        Hugging Face Hub repo, ``"org/name"``.
    revision : str or None
        The 40-hex commit every file is fetched at (never a branch); None while the preset is only bundled.
    files : dict of str to FileSpec
        Every file of the preset with its sha256 and size.
    trained_on, metrics : dict
        Training data (name, sha256) and measured metrics (test split, values), as in the manifest.
    license : str or None
        Licence of the weights.
    bundled : str or None
        ``entry/tag`` folder under ``emzoo/weights`` when the preset ships inside the package.
    """

    entry: str
    tag: str
    repo_id: str
    revision: str | None
    files: dict[str, FileSpec]
    trained_on: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    bundled: str | None = None

    @property
    def name(self) -> str:
        """``"entry.tag"``."""
        return f"{self.entry}.{self.tag}"

    @property
    def url(self) -> str:
        """Web address of the repo on the public Hub."""
        return f"https://huggingface.co/{self.repo_id}"


def manifest_dir() -> Path:
    """Folder holding the manifest files (``EMZOO_MANIFEST_DIR`` overrides the packaged one)."""
    env = os.environ.get("EMZOO_MANIFEST_DIR")
    if env:
        return Path(env)
    return _PACKAGED_DIR


def _schema() -> dict[str, Any]:
    for folder in (manifest_dir(), _PACKAGED_DIR):
        path = folder / "schema.json"
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"weights manifest schema not found in {manifest_dir()} or {_PACKAGED_DIR}; "
                            "reinstall emzoo from its source tree.")


def check_filename(name: str, *, where: str = "manifest") -> str:
    """Refuse a preset file name that could escape the preset folder; return it unchanged when it is safe.

    Raises
    ------
    ValueError
        For an empty name, an absolute path or drive letter, a backslash, a control character or a ``..`` part.

    Examples
    --------
    >>> check_filename("model.weights.h5")
    'model.weights.h5'
    """
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it is empty"
    elif "\\" in name:
        problem = "it contains a backslash"
    elif name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        problem = "it is an absolute path"
    elif any(ord(c) < 32 for c in name):
        problem = "it contains a control character"
    elif ".." in PurePosixPath(name).parts:
        problem = "it climbs out of the preset folder with '..'"
    elif any(part in ("", ".") for part in name.split("/")):
        problem = "it has an empty or '.' path part"
    if problem:
        raise ValueError(f"{where}: file name {name!r} is refused because {problem}; "
                         "manifest file names must be plain relative paths inside the repo (e.g. 'config.json').")
    return name


def _describe(error: Any) -> str:
    """One line for a :mod:`jsonschema` error: where (``manifest.tags.x.revision``) and what is expected.

    Worded from the error's structured fields (``validator``, ``validator_value``, ``instance``), never its text.
    """
    path = "manifest" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = [k for k in expected if k not in value]
        return f"{path}: missing required key {missing[0]!r}"
    if kind == "additionalProperties" and expected is False:
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in value if k not in allowed]
        return f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})"
    if kind == "minProperties":
        return f"{path}: must have at least {expected} key(s)"
    if kind == "minimum":
        return f"{path}: {value} is below the minimum {expected}"
    if kind == "minLength":
        return f"{path}: must not be empty"
    if kind == "pattern":
        return f"{path}: {value!r} does not match the pattern {expected!r}"
    if kind == "type":
        kinds = [expected] if isinstance(expected, str) else expected
        return f"{path}: expected {' or '.join(kinds)}, got {type(value).__name__} {value!r}"
    return f"{path}: {error.message}"


def _validate(data: Any, schema: dict[str, Any]) -> None:
    """Check ``data`` against ``schema`` (JSON Schema 2020-12); raise ValueError describing the most relevant fault."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise ValueError(_describe(error))


def validate_manifest(data: Any, *, source: str = "manifest") -> dict[str, Any]:
    """Validate one manifest document against ``schema.json`` and the file-name rules; return it unchanged.

    Parameters
    ----------
    data : dict
        The parsed JSON document.
    source : str
        Where it came from, for the error message.

    Raises
    ------
    ValueError
        One line naming the file, the faulty key and what is expected.

    Examples
    --------
    >>> validate_manifest({"entry": "unet", "tags": {}}, source="x.json")
    Traceback (most recent call last):
    ...
    ValueError: x.json is not a valid weights manifest: manifest.tags: must have at least 1 key(s)
    """
    # File names first: their message is clearer than a failed regex from the schema.
    if isinstance(data, dict) and isinstance(data.get("tags"), dict):
        if "default" in data["tags"]:
            raise ValueError(f"{source}: the tag name 'default' is reserved (weights='default' means the default "
                             "tag); give the tag a data name and mark it with \"default\": true.")
        for tag, record in data["tags"].items():
            if isinstance(record, dict) and isinstance(record.get("files"), dict):
                for name in record["files"]:
                    check_filename(name, where=f"{source} tag {tag!r}")
    schema = _schema()
    try:
        _validate(data, schema)
        # Rules the schema does not say: a weights file in every tag; no revision only for bundled presets.
        for tag, record in data["tags"].items():
            if not set(WEIGHT_FILES) & set(record["files"]):
                raise ValueError(f"manifest.tags.{tag}.files: no weights file (model.weights.h5 or "
                                 "model.weights.compact.h5)")
            if record.get("revision") is None and not record.get("bundled"):
                raise ValueError(f"manifest.tags.{tag}: revision is null but the preset is not bundled; give the "
                                 "40-hex commit of the pushed Hub repo")
    except ValueError as exc:
        raise ValueError(f"{source} is not a valid weights manifest: {exc}") from None
    return data


def load_manifest(entry: str) -> dict[str, Any] | None:
    """The validated manifest document of ``entry``, or None when it has no published weights.

    Raises
    ------
    ValueError
        If the file is not valid JSON, fails the schema, or names another entry.
    """
    path = manifest_dir() / f"{entry}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or regenerate it with `emzoo publish`.") from None
    validate_manifest(data, source=str(path))
    if data["entry"] != entry:
        raise ValueError(f"{path} describes entry {data['entry']!r}, not {entry!r}; rename the file to "
                         f"{data['entry']}.json.")
    return data


def available_tags(entry: str) -> list[str]:
    """Weight tags published for ``entry``, the default one first (empty when it has none)."""
    data = load_manifest(entry)
    if data is None:
        return []
    tags = list(data["tags"])
    first = default_tag(entry, data)
    return [first, *(t for t in tags if t != first)]


def default_tag(entry: str, data: dict[str, Any] | None = None) -> str | None:
    """The tag a bare entry name means: the one marked ``"default": true``, else the first; None without weights."""
    data = data if data is not None else load_manifest(entry)
    if not data:
        return None
    marked = [t for t, rec in data["tags"].items() if rec.get("default")]
    if len(marked) > 1:
        raise ValueError(f"manifest of {entry!r} marks several default tags {marked}; keep one 'default': true.")
    return marked[0] if marked else next(iter(data["tags"]))


def _spec(entry: str, tag: str, record: dict[str, Any]) -> WeightsSpec:
    return WeightsSpec(
        entry=entry,
        tag=tag,
        repo_id=record["repo_id"],
        revision=record["revision"],
        files={name: FileSpec(f["sha256"], f["size"]) for name, f in record["files"].items()},
        trained_on=dict(record.get("trained_on", {})),
        metrics=dict(record.get("metrics", {})),
        license=record.get("license"),
        bundled=record.get("bundled"),
    )


def resolve_weights(entry: str, tag: str | None = None) -> WeightsSpec:
    """The release ``entry.tag`` names (``tag=None`` or ``"default"``: the default tag).

    Raises
    ------
    KeyError
        Unknown entry (with close names), an entry without published weights, or an unknown tag (with close tags).

    Examples
    --------
    >>> resolve_weights("unet", "nope")  # doctest: +SKIP
    KeyError: "no weights tag 'nope' for 'unet'. ..."
    """
    data = load_manifest(entry)
    if data is None:
        # Only now ask the registry (it imports Keras): an unknown entry gets close names, a known one the fix.
        from emzoo.registry import get_entry

        get_entry(entry)
        raise KeyError(f"entry {entry!r} has no published weights (no {manifest_dir() / (entry + '.json')}); "
                       "pass weights=None for random initial weights, or a local preset folder.")
    if tag in (None, "default"):
        tag = default_tag(entry, data)
    if tag not in data["tags"]:
        close = difflib.get_close_matches(tag, list(data["tags"]), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"no weights tag {tag!r} for {entry!r}.{hint} Published tags: {', '.join(data['tags'])} "
                       f"(see `emzoo info {entry}`).")
    return _spec(entry, tag, data["tags"][tag])


def find_release(repo_id: str, revision: str | None = None, entry: str | None = None) -> WeightsSpec | None:
    """The manifest release of a Hub repo (at ``revision`` if given), searching one entry or every manifest file."""
    folder = manifest_dir()
    names = [entry] if entry else sorted(p.stem for p in folder.glob("*.json")
                                   if p.name != "schema.json" and not p.name.startswith("."))  # "." = a write under way
    for name in names:
        data = load_manifest(name)
        for tag, record in (data or {}).get("tags", {}).items():
            if record["repo_id"] == repo_id and (revision is None or record["revision"] == revision):
                return _spec(name, tag, record)
    return None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: What the run that made a preset leaves in its folder but is not part of the preset: ``emzoo finetune``'s resolved
#: ``config.yaml`` (local absolute paths) and its kept ``checkpoints/``. Never hashed into a record, never pushed.
RUN_FILES = ("config.yaml", "checkpoints")


def file_record(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{relative name: {"sha256", "size"}}`` of every file in a preset folder, sorted (hidden files and the run's
    own files, :data:`RUN_FILES`, skipped)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"preset folder {root} does not exist; write one with emzoo.save_preset().")
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if path.is_file() and not any(part.startswith(".") for part in parts) and parts[0] not in RUN_FILES:
            out[check_filename(rel, where=str(root))] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def tag_record(
    directory: str | os.PathLike[str],
    *,
    repo_id: str,
    revision: str | None,
    default: bool = False,
) -> dict[str, Any]:
    """The manifest record of one preset folder: repo, revision, files' hashes, training data, metrics, licence.

    ``trained_on``, ``metrics`` and ``license`` are copied from the preset's ``emzoo.json`` when present.
    """
    files = file_record(directory)
    if "config.json" not in files or not set(WEIGHT_FILES) & set(files):
        raise FileNotFoundError(f"{directory} has no config.json and weights file; it is not an emzoo preset (write "
                                "one with emzoo.save_preset()).")
    meta_path = Path(directory) / "emzoo.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    record: dict[str, Any] = {"repo_id": repo_id, "revision": revision}
    if default:
        record["default"] = True
    if meta.get("license"):
        record["license"] = meta["license"]
    if meta.get("training_data"):
        record["trained_on"] = {k: v for k, v in meta["training_data"].items() if k in ("name", "sha256")}
    if meta.get("metrics"):
        record["metrics"] = meta["metrics"]
    record["files"] = files
    return record


def update_manifest(entry: str, tag: str, record: dict[str, Any], *, folder: str | os.PathLike[str] | None = None
                    ) -> Path:
    """Insert or replace ``tag`` in ``<folder>/<entry>.json`` (validated, written atomically); return the path."""
    if record.get("revision") is None and record.get("bundled"):
        pass  # shipped inside the package, not pushed yet: no revision exists to record
    elif record.get("revision") is None or not _HEX40.fullmatch(str(record["revision"])):
        raise ValueError(f"revision {record.get('revision')!r} is not a 40-hex commit; pass --revision with the "
                         "commit of the pushed Hub repo (or use --push).")
    root = Path(folder) if folder is not None else manifest_dir()
    path = root / f"{entry}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"entry": entry, "tags": {}}
    if record.get("default"):
        for other in data["tags"].values():
            other.pop("default", None)
    old = data["tags"].get(tag, {})
    if old.get("bundled") and "bundled" not in record and old.get("files") == record.get("files"):
        record = {**record, "bundled": old["bundled"]}  # a push of the bundled files keeps their location
    data["tags"][tag] = record
    validate_manifest(data, source=str(path))
    # Imported here: emzoo.io pulls in numpy, which reading a manifest (e.g. for `emzoo list`) does not need.
    from emzoo.io.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path
