"""Read presets: :func:`resolve` turns any address into local, verified files; :func:`load` builds the model.

An address is one of five kinds, and :func:`resolve` is the only place that tells them apart:

==========================  =========================================================================
``entry`` / ``entry.tag``   a release in the weights manifest, fetched and sha256-checked
``hf://org/repo@rev``       a Hub repository (checked when the manifest knows it, else with a warning)
a folder                    a preset folder written by :func:`emzoo.save_preset`
``model.keras``             a Keras 3 archive (loaded in safe mode, Lambda layers refused)
==========================  =========================================================================

Weights that do not fit the architecture are reported by comparing the file's variable shapes with the model's
(:func:`_mismatch`), not by reading Keras' error text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emzoo.hub.download import fetch_hub_file, fetch_release, find_in_mirror
from emzoo.hub.layout import LOAD_FILES, from_json
from emzoo.hub.manifest import WEIGHT_FILES, find_release, resolve_weights, sha256_file

__all__ = ["PresetFiles", "resolve", "load", "read_preset_metadata"]

KERAS_FILE = "model.keras"


@dataclass(frozen=True)
class PresetFiles:
    """What an address resolved to.

    Attributes
    ----------
    files : dict of str to Path
        File name in the preset (``config.json``, ``model.weights.h5``, ...; ``model.keras`` for a Keras archive)
        -> local path, verified where a checksum is known.
    label : str
        How error messages name the address (``unet.lucchi``, the URI or the folder).
    """

    files: dict[str, Path]
    label: str


# ---------------------------------------------------------------------------------------------------------- resolve


def _is_path(value: Any) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and not value.startswith("hf://") and (
        "/" in value or os.sep in value or value.endswith(".keras") or Path(value).exists())


def _as_local(address: str | os.PathLike[str]) -> Path | None:
    """The local path an address names, or None for an entry name or an ``hf://`` URI (an entry name wins)."""
    from emzoo.registry import list_models, split_name_tag

    if isinstance(address, str) and (address.startswith("hf://") or split_name_tag(address)[0] in set(list_models())
                                     or not _is_path(address)):
        return None
    return Path(address).expanduser()


def _parse_hf(uri: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"hf://([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?", uri)
    if not match:
        raise ValueError(f"{uri!r} is not a Hub URI; write hf://org/repo@<40-hex commit>.")
    return match.group(1), match.group(2)


def _hub_files(uri: str, entry: str | None, names: tuple[str, ...]) -> PresetFiles:
    """Files of an ``hf://`` preset: sha256-checked when the manifest knows the repo, else with a warning."""
    repo_id, revision = _parse_hf(uri)
    release = find_release(repo_id, revision, entry=entry) if revision else None
    if release is not None:
        return PresetFiles(fetch_release(release, names), release.name)
    if "config.json" in names:  # loading, not just reading the metadata
        if revision is None or not re.fullmatch(r"[0-9a-f]{40}", revision):
            warnings.warn(f"{uri} is not pinned to a 40-hex commit: the files may change under you; pin it as "
                          f"hf://{repo_id}@<commit>.", stacklevel=4)
        warnings.warn(f"{uri} is not in the weights manifest, so its files cannot be sha256-checked; loading it "
                      "anyway (safe mode, no code runs).", stacklevel=4)
    files = {}
    for name in names:
        if name == WEIGHT_FILES[1] and WEIGHT_FILES[0] in files:
            continue
        # The first file asked for is required; of the two weight files one must exist (checked below).
        path = find_in_mirror(repo_id, name) or fetch_hub_file(
            repo_id, name, revision=revision or "main", what=f"{uri}: {name}", optional=name != names[0])
        if path is not None:
            files[name] = path
    if set(WEIGHT_FILES) & set(names) and not set(WEIGHT_FILES) & set(files):
        raise FileNotFoundError(f"{uri} holds no model.weights.h5 (or model.weights.compact.h5); it is not an emzoo "
                                "preset.")
    return PresetFiles(files, uri)


def _local_files(directory: Path, names: tuple[str, ...]) -> PresetFiles:
    if not directory.exists():
        raise FileNotFoundError(f"{directory} does not exist; give an entry name (see `emzoo list`), entry.tag, "
                                "hf://org/repo@rev, a preset folder or a .keras file.")
    if directory.is_file() and directory.suffix == ".keras":
        return PresetFiles({KERAS_FILE: directory}, str(directory))
    missing = [n for n in names[:1] if not (directory / n).is_file()]
    if set(WEIGHT_FILES) & set(names) and not any((directory / n).is_file() for n in WEIGHT_FILES):
        missing.append("model.weights.h5")
    if missing:
        raise FileNotFoundError(f"{directory} is not an emzoo preset folder (no {', '.join(missing)}); write one "
                                "with emzoo.save_preset().")
    return PresetFiles({n: directory / n for n in names if (directory / n).is_file()}, str(directory))


def resolve(address: str | os.PathLike[str], *, entry: str | None = None,
            names: tuple[str, ...] = LOAD_FILES) -> PresetFiles:
    """Local, verified paths of the preset files an address names.

    Parameters
    ----------
    address : str or path-like
        ``"entry"`` (its default weights), ``"entry.tag"``, ``"hf://org/repo@rev"``, a preset folder or a
        ``.keras`` file (see the module docstring).
    entry : str, optional
        The entry the weights are for, when known: picks the manifest release of an ``hf://`` repository that
        serves several entries.
    names : tuple of str
        The preset files wanted (default: what loading needs). The first is required; of the two weight files,
        one must exist when they are asked for.

    Returns
    -------
    PresetFiles

    Raises
    ------
    KeyError
        Unknown entry or tag (with suggestions), or an entry without published weights.
    FileNotFoundError
        A missing folder or file, or offline and not cached (the message says how to pre-fetch).
    ValueError
        A file failing its sha256/size check, or a malformed ``hf://`` URI.

    Examples
    --------
    >>> resolve("path/to/preset").files["config.json"]  # doctest: +SKIP
    PosixPath('path/to/preset/config.json')
    """
    from emzoo.registry import split_name_tag

    if isinstance(address, str) and address.startswith("hf://"):
        return _hub_files(address, entry, names)
    local = _as_local(address)
    if local is not None:
        return _local_files(local, names)
    release = resolve_weights(*split_name_tag(str(address)))
    return PresetFiles(fetch_release(release, names), release.name)


# ------------------------------------------------------------------------------------------------------------- load


def _snake_case(name: str) -> str:
    # Keras' own rule (keras.src.utils.naming.to_snake_case) for naming a layer's group in a weights file.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_groups(path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Top-level layer group (``layers/conv2d_3``) -> {variable path inside it: shape} of a ``.weights.h5``."""
    import h5py

    groups: dict[str, dict[str, tuple[int, ...]]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            parts = name.split("/")
            key = "/".join(parts[:2]) if parts[0] == "layers" else parts[0]
            groups.setdefault(key, {})[name] = tuple(int(d) for d in obj.shape)

    with h5py.File(path, "r") as h5:
        h5.visititems(visit)
    return groups


def _group_names(model: Any) -> dict[str, Any]:
    """Weights-file group of each top-level layer, named as Keras names them (class name, counted per class)."""
    used: dict[str, int] = {}
    out = {}
    for layer in model.layers:
        name = _snake_case(type(layer).__name__)
        used[name] = used.get(name, -1) + 1
        out[f"layers/{name}" + (f"_{used[name]}" if used[name] else "")] = layer
    return out


def _mismatch(model: Any, weights_file: Path) -> tuple[str, int] | None:
    """(What does not fit, how many layers do not) comparing the file's variable shapes with the model's own.

    The model's layout is what Keras writes for it (saved to a temporary file), so the comparison holds whatever
    Keras' layout; only naming the layer relies on Keras' group names, and falls back to the group's path.
    """
    with tempfile.TemporaryDirectory(prefix="emzoo_layout_") as tmp:
        model.save_weights(Path(tmp) / "expected.weights.h5")
        want = _h5_groups(Path(tmp) / "expected.weights.h5")
    have = _h5_groups(weights_file)
    layers = _group_names(model)
    if not set(want) <= set(layers):
        layers = {}  # Keras names groups differently than we assume: name them by path rather than wrongly
    order = {key: i for i, key in enumerate(layers)}
    bad = sorted((k for k in set(want) | set(have) if want.get(k) != have.get(k)), key=lambda k: (order.get(k, 1e9), k))
    if not bad:
        return None
    key = bad[0]
    layer = layers.get(key)
    where = f"layer {layer.name!r} ({type(layer).__name__})" if layer is not None else f"weights group {key!r}"
    expected, held = want.get(key, {}), have.get(key, {})
    if expected.keys() == held.keys():
        var = next(v for v in expected if expected[v] != held[v])
        what = f"needs a variable of shape {expected[var]} but the file holds {held[var]}"
    else:
        what = f"has {len(expected)} variables but the file holds {len(held)} for it"
    return f"{where} {what}", len(bad)


def _mismatch_message(model: Any, weights_file: Path, exc: Exception, *, label: str, entry: str,
                      kwargs: dict[str, Any], overrides: dict[str, Any]) -> str:
    """One line naming the first layer whose weights do not fit (Keras' own error buries it in a dump of values)."""
    found = _mismatch(model, weights_file)
    if found is None:
        what = f"the model could not be loaded ({str(exc).splitlines()[0][:200]})"
    else:
        what = found[0] + (f" ({found[1]} of the model's layers do not fit in all)" if found[1] > 1 else "")
    hint = (f"drop the overrides {overrides} (they change the architecture or the input channels)" if overrides
            else "the file holds weights for another architecture or number of input channels")
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (f"{label}: the weights do not fit emzoo.build({entry!r}, {args}): {what}; {hint}, or "
            "pass weights=None for random initial weights.")


def _check_recorded_hashes(files: dict[str, Path], meta: dict[str, Any], label: str) -> None:
    """A preset whose ``emzoo.json`` records its files' sha256 must match them (a corrupted copy is refused)."""
    for name, expected in (meta.get("files") or {}).items():
        if name in files and sha256_file(files[name]) != expected:
            raise ValueError(f"{label}: {name} does not match the sha256 recorded in its emzoo.json (the file is "
                             "corrupted or was changed); restore the preset from its source or write it again.")


def _load_weights(model: Any, files: dict[str, Path], exc_message: Any) -> None:
    """Load the plain or compact weights file into ``model``; ``exc_message(weights_file, exc)`` words a misfit."""
    decoded_dir = None
    try:
        weights_file = files.get(WEIGHT_FILES[0])
        if weights_file is None:
            from emzoo.hub.compact import decode_weights

            decoded_dir = Path(tempfile.mkdtemp(prefix="emzoo_decoded_"))
            weights_file = decode_weights(files[WEIGHT_FILES[1]], decoded_dir / WEIGHT_FILES[0])
        try:
            with warnings.catch_warnings():
                # A failed load warns once per variable before raising; the error below says it in one line.
                warnings.simplefilter("ignore")
                model.load_weights(weights_file)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(exc_message(Path(weights_file), exc)) from None
    finally:
        if decoded_dir is not None:
            shutil.rmtree(decoded_dir, ignore_errors=True)


def _from_files(files: dict[str, Path], *, label: str, entry: str | None, overrides: dict[str, Any],
                compile: bool) -> Any:
    from emzoo.registry import build, get_entry

    if compile:
        raise ValueError("compile=True: a preset holds no optimizer or loss; compile the returned model yourself "
                         "(model.compile(...)) or fine-tune it with emzoo.finetune.")
    config = json.loads(Path(files["config.json"]).read_text())
    if not isinstance(config, dict) or "entry" not in config or not isinstance(config.get("build_kwargs"), dict):
        raise ValueError(f"{label}: config.json is not an emzoo preset config (needs 'entry' and 'build_kwargs').")
    preset_entry = config["entry"]
    if entry is not None and get_entry(entry).info.name != preset_entry:
        raise ValueError(f"{label} holds weights for entry {preset_entry!r}, not {entry!r}; load it as "
                         f"emzoo.load({preset_entry!r}, weights=...) or pick weights published for {entry!r}.")
    kwargs = {**from_json(config["build_kwargs"]), **overrides}
    meta = json.loads(Path(files["emzoo.json"]).read_text()) if "emzoo.json" in files else {}
    _check_recorded_hashes(files, meta, label)
    model = build(preset_entry, **kwargs)
    _load_weights(model, files, lambda weights_file, exc: _mismatch_message(
        model, weights_file, exc, label=label, entry=preset_entry, kwargs=kwargs, overrides=overrides))
    # object.__setattr__ keeps Keras from tracking the dict (it would wrap it and walk it when saving).
    object.__setattr__(model, "emzoo_metadata", meta)
    warning = (meta.get("extra") or {}).get("warning") if isinstance(meta.get("extra"), dict) else None
    if warning:
        # A preset its own training marked as bad (e.g. collapsed to background) is kept for inspection only.
        warnings.warn(f"{label}: {warning}", UserWarning, stacklevel=3)
    return model


def _lambda_layers(config: Any) -> list[str]:
    found = []
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            found.append(str((config.get("config") or {}).get("name", "?")))
        for value in config.values():
            found.extend(_lambda_layers(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(_lambda_layers(value))
    return found


def _load_keras_file(path: Path, compile: bool) -> Any:
    import keras

    from emzoo.registry import list_models

    list_models()  # registers every emzoo layer before Keras deserialises
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a Keras 3 .keras archive; emzoo loads .keras files and preset folders.") \
            from None
    lambdas = _lambda_layers(config)
    if lambdas:
        raise ValueError(
            f"{path} contains Lambda layers {lambdas}: a Lambda holds Python code that would run on load, and emzoo "
            "loads only with Keras safe mode on; rebuild the model without Lambda layers (use a registered layer) "
            "and save it again."
        )
    model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    object.__setattr__(model, "emzoo_metadata", {})
    return model


def _weights_address(name: str, entry: str, tag: str | None, weights: str | os.PathLike[str]) -> Any:
    """The address ``weights=`` names for ``entry`` (a folder, an ``hf://`` URI or ``entry.tag``)."""
    if isinstance(weights, os.PathLike) or _is_path(weights):
        path = Path(weights).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"weights folder {path} does not exist; give a tag, hf://org/repo@rev or a "
                                    "preset folder written by emzoo.save_preset().")
        return path
    if str(weights).startswith("hf://"):
        return str(weights)
    if weights != "default":
        if tag is not None and tag != weights:
            raise ValueError(f"{name!r} names tag {tag!r} but weights={weights!r}; give the tag once.")
        tag = str(weights)
    return f"{entry}.{tag}" if tag else entry


def load(name: str | os.PathLike[str], weights: str | os.PathLike[str] | None = "default", compile: bool = False,
         **build_overrides: Any) -> Any:
    """Build an entry and load its pretrained weights (sha256-checked; Keras safe mode, nothing unpickled).

    Parameters
    ----------
    name : str or path-like
        ``"entry"`` (its default weights), ``"entry.tag"`` (timm style), ``"hf://org/repo@rev"``, a local preset
        folder, or a ``.keras`` file.
    weights : str, path-like or None
        ``"default"`` (the tag in ``name``, else the entry's default tag), ``None`` (random initial weights),
        a tag, ``"hf://org/repo@rev"`` or a local preset folder.
    compile : bool
        Only for ``.keras`` files that store a training config; presets hold no optimizer.
    **build_overrides
        Passed to the builder on top of the preset's build kwargs (``input_shape=(None, None, 1)`` to take any
        tile size). Overrides that change the architecture fail with a message naming the layer.

    Returns
    -------
    keras.Model
        With an ``emzoo_metadata`` attribute: the preset's ``emzoo.json`` (axes, normalisation, metrics, ...).

    Raises
    ------
    KeyError
        Unknown entry or tag (with suggestions), or an entry without published weights.
    FileNotFoundError
        Offline and not cached; the message says how to pre-fetch (``emzoo download``, ``EMZOO_WEIGHTS_DIR``).
    ValueError
        A file failing its sha256/size check, weights that do not fit the architecture (naming the layer), or a
        ``.keras`` file with Lambda layers.

    Examples
    --------
    >>> model = load("unet", weights=None, input_shape=(32, 32, 1), widths=(4, 8, 16))
    >>> model.output_shape
    (None, 32, 32, 1)
    """
    from emzoo.registry import build, get_entry, list_models, split_name_tag

    entry: str | None = None
    if isinstance(name, str) and split_name_tag(name)[0] in set(list_models()):
        entry, tag = split_name_tag(name)
        entry = get_entry(entry).info.name
        if weights is None:
            if tag is not None:
                raise ValueError(f"{name!r} names weights {tag!r} but weights=None asks for random initial weights; "
                                 "drop one of them.")
            model = build(entry, **build_overrides)
            object.__setattr__(model, "emzoo_metadata", {})
            return model
        address: Any = _weights_address(name, entry, tag, weights)
    else:
        local = _as_local(name)
        if local is None and not str(name).startswith("hf://"):
            get_entry(split_name_tag(str(name))[0])  # neither an entry nor a path: KeyError with close names
        if weights != "default":
            raise ValueError(f"{str(local or name)!r} already names the weights; leave weights='default'.")
        address = name
    found = resolve(address, entry=entry)
    if KERAS_FILE in found.files:
        if build_overrides:
            raise TypeError(f"build overrides {sorted(build_overrides)} do not apply to a .keras file.")
        return _load_keras_file(found.files[KERAS_FILE], compile)
    return _from_files(found.files, label=found.label, entry=entry, overrides=build_overrides, compile=compile)


def read_preset_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``emzoo.json`` of a preset: a folder, an ``emzoo.json`` file, ``entry[.tag]`` or ``hf://org/repo@rev``.

    Only ``emzoo.json`` is fetched (sha256-checked) for a name; no model is built.

    Examples
    --------
    >>> read_preset_metadata("path/to/preset")["axes"]  # doctest: +SKIP
    'YXC'
    """
    local = _as_local(path)
    if local is None:
        file: Path | None = resolve(path, names=("emzoo.json",)).files.get("emzoo.json")
    else:
        file = local / "emzoo.json" if local.is_dir() else local
    if file is None or not Path(file).is_file():
        raise FileNotFoundError(f"no emzoo.json for {path}; presets written by emzoo.save_preset() have one.")
    return json.loads(Path(file).read_text())
