"""Presets: one folder per weights release (KerasHub layout), written by :func:`save_preset`, read by :func:`load`.

A preset folder holds

- ``config.json``: ``{"entry": ..., "build_kwargs": {...}}``, enough to rebuild the model with emzoo's own builder
  (``emzoo.build(entry, **build_kwargs)``), plus the emzoo and Keras versions. It is never a serialised Keras
  model, so loading a preset runs no stored code;
- ``model.weights.h5``: the Keras 3 weights (``model.save_weights``);
- ``emzoo.json``: what a user needs to apply the weights right: axes, input spec, normalisation
  (:mod:`emzoo.io.normalize`), receptive field and halo, classes, the TTA valid for the data, params, FLOPs and the
  input counted at, training data name + sha256, recipe, seed, metrics with their test split, date, versions;
- ``README.md``: the Hugging Face model card (front matter: library_name keras, tags, license, datasets,
  model-index results) with a stats block.

:func:`load` resolves ``entry``, ``entry.tag``, ``hf://org/repo@rev``, a local preset folder or a ``.keras`` file,
fetches through :mod:`emzoo.hub.download` (sha256-checked) and loads with Keras safe mode on: nothing is unpickled.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

from emzoo.hub.download import fetch_hub_file, fetch_release, find_in_mirror
from emzoo.hub.manifest import WEIGHT_FILES, WeightsSpec, find_release, resolve_weights

__all__ = ["save_preset", "load", "read_preset_metadata", "PRESET_FILES", "METADATA_KEYS"]

FORMAT = "emzoo.preset/1"
PRESET_FILES = ("config.json", "model.weights.h5", "emzoo.json", "README.md")
_LOAD_FILES = ("config.json", *WEIGHT_FILES, "emzoo.json")

#: Keywords :func:`save_preset` accepts as metadata (anything else goes in ``extra=``).
METADATA_KEYS = (
    "description", "axes", "normalization", "receptive_field", "halo", "classes", "tta", "training_data",
    "recipe", "seed", "metrics", "test_split", "license", "datasets", "tags", "name", "extra",
)


# --------------------------------------------------------------------------------------------------------- helpers


def _jsonable(value: Any, what: str) -> Any:
    """Tuples become lists; anything JSON cannot hold is refused (the preset must round-trip through JSON)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise TypeError(f"{what} must hold only JSON values (numbers, strings, lists, dicts, None); got {value!r}"
                        ) from None


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples, so builders get the shapes and widths they were written for."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _walk_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_walk_layers(layer))
    return out


def _refuse_lambda(model: Any) -> None:
    import keras

    lambdas = [layer.name for layer in _walk_layers(model) if isinstance(layer, keras.layers.Lambda)]
    if lambdas:
        raise ValueError(
            f"model {model.name!r} has Lambda layers {lambdas}: they hold Python code that safe-mode loading refuses; "
            "replace each with a registered layer (emzoo/layers/) before saving a preset."
        )


def _versions() -> dict[str, str]:
    import h5py
    import keras
    import numpy as np

    from emzoo import __version__

    backend = keras.backend.backend()
    versions = {"emzoo": __version__, "keras": keras.__version__, "backend": backend, "python": platform.python_version(),
                "numpy": np.__version__, "h5py": h5py.__version__}
    module = sys.modules.get({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend))
    if module is not None and hasattr(module, "__version__"):
        versions[backend] = module.__version__
    return versions


def _shape(shape: Any) -> str:
    return "x".join("?" if s is None else str(s) for s in shape)


def _weight_shapes(model: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(w.path, tuple(int(d) for d in w.shape)) for w in model.weights]


def _infer_build_kwargs(model: Any, entry: str, build_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``build_kwargs`` completed with the model's input shape and class count, checked to rebuild the model."""
    from emzoo.registry import build

    kwargs = dict(build_kwargs or {})
    kwargs.setdefault("input_shape", tuple(model.input_shape[1:]))
    out_shape = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
    kwargs.setdefault("num_classes", int(out_shape[-1]))
    kwargs = _jsonable(kwargs, "build_kwargs")
    # Rebuild exactly as load() will (from the JSON form) and compare every variable shape in order.
    rebuilt = build(entry, **_tuples(kwargs))
    have, want = _weight_shapes(model), _weight_shapes(rebuilt)
    for (path, shape), (_, shape_rebuilt) in zip(have, want, strict=False):
        if shape != shape_rebuilt:
            raise ValueError(
                f"emzoo.build({entry!r}, **{kwargs}) does not rebuild this model: {path} has shape {shape} in the "
                f"model but {shape_rebuilt} when rebuilt; pass build_kwargs= with the overrides the model was built "
                "with (e.g. widths=...)."
            )
    if len(have) != len(want):
        raise ValueError(f"emzoo.build({entry!r}, **{kwargs}) does not rebuild this model: {len(want)} weight "
                         f"variables instead of {len(have)}; pass build_kwargs= with the overrides it was built with.")
    return kwargs


def _divisor(model: Any, registered: tuple[int, ...], kwargs: dict[str, Any]) -> list[int] | None:
    """Spatial divisor of the input: the registry's, unless overrides change the depth (then measured, or None)."""
    if set(kwargs) <= {"input_shape", "num_classes"}:
        return list(registered) or None
    spatial = tuple(model.input_shape[1:-1])
    if None in spatial:
        return None
    # The deepest downsampling sets the divisor: input side / smallest side of any same-rank layer output.
    smallest = list(spatial)
    for layer in _walk_layers(model):
        for node in getattr(layer, "_inbound_nodes", []):
            for out in node.outputs:
                shape = tuple(out.shape)
                if len(shape) == len(spatial) + 2 and None not in shape[1:-1]:
                    smallest = [min(a, b) for a, b in zip(smallest, shape[1:-1], strict=True)]
    return [s // m if m and s % m == 0 else 1 for s, m in zip(spatial, smallest, strict=True)]


def _check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    from emzoo.io.normalize import METHODS

    unknown = [k for k in metadata if k not in METADATA_KEYS]
    if unknown:
        hints = {k: difflib.get_close_matches(k, METADATA_KEYS, n=1) for k in unknown}
        hint = "; ".join(f"{k!r} (did you mean {h[0]!r}?)" if h else repr(k) for k, h in hints.items())
        raise TypeError(f"save_preset() got unknown metadata {hint}; known keys: {', '.join(METADATA_KEYS)} "
                        "(put anything else in extra={...}).")
    meta = dict(metadata)
    norm = meta.get("normalization")
    if isinstance(norm, str):
        norm = {"method": norm}
    if norm is not None and (not isinstance(norm, dict) or norm.get("method") not in METHODS):
        raise ValueError(f"normalization must be a spec from emzoo.io.normalize with method in {METHODS}, got {norm!r}")
    meta["normalization"] = norm
    metrics, split = meta.pop("metrics", None), meta.pop("test_split", None)
    if metrics is not None:
        if set(metrics) == {"test_split", "values"}:
            split, metrics = metrics["test_split"], metrics["values"]
        if not split:
            raise ValueError("metrics need the split they were measured on: pass test_split='...' (e.g. "
                             "'lucchi test volume, 165 slices').")
        bad = {k: v for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"metric values must be numbers, got {bad}")
        meta["metrics"] = {"test_split": str(split), "values": {k: float(v) for k, v in metrics.items()}}
    elif split:
        raise ValueError("test_split given without metrics=; pass both or neither.")
    data = meta.get("training_data")
    if isinstance(data, str):
        data = {"name": data}
    if data is not None:
        if not isinstance(data, dict) or not data.get("name"):
            raise ValueError(f"training_data must be {{'name': ..., 'sha256': ...}}, got {data!r}")
        sha = data.get("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
            raise ValueError(f"training_data sha256 must be 64 lowercase hex digits, got {sha!r}")
        meta["training_data"] = data
    return meta


def _model_card(meta: dict[str, Any], config: dict[str, Any]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    name = meta.get("name") or meta["entry"]
    metrics = meta.get("metrics") or {}
    data = meta.get("training_data") or {}
    datasets = list(meta.get("datasets") or ([data["name"]] if data.get("name") else []))
    results = [
        EvalResult(task_type="image-segmentation", dataset_type=(datasets or ["custom"])[0],
                   dataset_name=data.get("name") or (datasets or ["custom"])[0], dataset_split=metrics["test_split"],
                   metric_type=key, metric_value=value)
        for key, value in metrics.get("values", {}).items()
    ]
    card = ModelCardData(
        library_name="keras",
        license=meta.get("license"),
        tags=["emzoo", "image-segmentation", "electron-microscopy", meta["entry"], *(meta.get("tags") or [])],
        datasets=datasets or None,
        pipeline_tag="image-segmentation",
        model_name=name if results else None,
        eval_results=results or None,
    )
    flops = meta.get("flops") or {}
    inp = meta["input"]
    rows = [
        ("entry", f"`{meta['entry']}` (`emzoo.build({meta['entry']!r}, **build_kwargs)`, see config.json)"),
        ("params", f"{meta['params']:,}"),
        ("GFLOPs", f"{flops['gflops']:.4g} at input {_shape(flops['input_shape'])}" if flops else "not counted"),
        ("input", f"{meta['axes']} {_shape(inp['shape'])} {inp['dtype']}"
                  + (f", spatial sides divisible by {_shape(inp['divisor'])}" if inp.get("divisor") else "")),
        ("classes", f"{meta['num_classes']} ({', '.join(meta['classes']) if meta.get('classes') else 'unnamed'})"),
        ("normalization", f"`{json.dumps(meta.get('normalization'))}`"),
        ("receptive field / halo", f"{meta.get('receptive_field')} / {meta.get('halo')}"),
        ("valid TTA", ", ".join(meta.get("tta") or []) or "-"),
        ("trained on", f"{data.get('name', '-')}" + (f" (sha256 `{data['sha256']}`)" if data.get("sha256") else "")),
        ("seed", str(meta.get("seed"))),
    ]
    lines = [
        "---", card.to_yaml(), "---", "",
        f"# {name}", "",
        meta.get("description") or f"emzoo preset of `{meta['entry']}` (Keras 3).", "",
        "```python", "import emzoo", "", 'model = emzoo.load("path/to/this/folder")  # or "entry.tag" / "hf://org/repo@rev"',
        "```", "",
        "## Stats", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
    ]
    if metrics:
        lines += [f"## Metrics (test split: {metrics['test_split']})", "", "| metric | value |", "|---|---|",
                  *(f"| {k} | {v:.4f} |" for k, v in metrics["values"].items()), ""]
    if meta.get("recipe"):
        lines += ["## Training recipe", "", "```json", json.dumps(meta["recipe"], indent=1), "```", ""]
    lines += ["## Files", "", "- `config.json`: entry and build kwargs (rebuilt with emzoo's builder, no pickles)",
              "- `model.weights.h5`: Keras 3 weights", "- `emzoo.json`: axes, input, normalisation, metrics, versions",
              "", f"Written {meta['date']} with emzoo {config['emzoo_version']}, Keras {config['keras_version']}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ save_preset


def save_preset(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    entry: str | None = None,
    build_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    **metadata: Any,
) -> Path:
    """Write a model as a preset folder: config.json, model.weights.h5, emzoo.json and a README.md model card.

    The folder is written into a temporary sibling and renamed into place, so a failure leaves nothing half-written.

    Parameters
    ----------
    model : keras.Model
        A model built by an emzoo entry (possibly with overrides) and trained.
    directory : path-like
        The preset folder to create.
    entry : str, optional
        Registry entry the model was built from; defaults to ``model.name`` when that is an entry.
    build_kwargs : dict, optional
        Overrides the model was built with (``widths=...``); ``input_shape`` and ``num_classes`` are filled in from
        the model. The preset is checked to rebuild the model's exact variable shapes.
    overwrite : bool
        Replace an existing folder (atomically) instead of refusing.
    **metadata
        Recorded in ``emzoo.json`` and the model card: ``description``, ``axes`` (default ``"YXC"``/``"ZYXC"`` from
        the input rank), ``normalization`` (an :mod:`emzoo.io.normalize` spec), ``receptive_field``, ``halo``,
        ``classes`` (names), ``tta`` (valid augmentations), ``training_data`` (``{"name", "sha256"}``), ``recipe``,
        ``seed``, ``metrics`` (name -> value) with ``test_split``, ``license``, ``datasets``, ``tags``, ``name``
        and ``extra`` (anything else).

    Returns
    -------
    Path
        The preset folder.

    Raises
    ------
    ValueError
        Lambda layers, a model the entry cannot rebuild, or bad metadata.
    FileExistsError
        If ``directory`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import emzoo
    >>> model = emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))
    >>> path = save_preset(model, tmp / "unet_tiny", build_kwargs={"widths": (4, 8, 16)})  # doctest: +SKIP
    >>> sorted(p.name for p in path.iterdir())  # doctest: +SKIP
    ['README.md', 'config.json', 'emzoo.json', 'model.weights.h5']
    """
    import keras

    from emzoo.flops import count_flops
    from emzoo.registry import get_entry, list_models

    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it or choose a new folder.")
    _refuse_lambda(model)
    if entry is None:
        if model.name not in list_models():
            raise ValueError(f"cannot tell which emzoo entry model {model.name!r} was built from; pass entry=<name> "
                             "(see `emzoo list`).")
        entry = model.name
    info = get_entry(entry).info
    meta_in = _check_metadata(metadata)
    kwargs = _infer_build_kwargs(model, info.name, build_kwargs)
    versions = _versions()
    input_shape = tuple(model.input_shape[1:])
    if None not in input_shape:
        report = count_flops(model)
    else:
        # Any tile size: count at the entry's reference tile, with this model's channels.
        report = count_flops(model, input_shape=(*info.flops_input[1:-1], input_shape[-1]))
    axes = meta_in.pop("axes", None) or ("ZYXC" if len(input_shape) == 4 else "YXC")
    if len(axes) != len(input_shape):
        raise ValueError(f"axes {axes!r} does not fit the input shape {input_shape}; use e.g. 'YXC' or 'ZYXC'.")
    num_classes = int(kwargs["num_classes"])
    classes = meta_in.pop("classes", None)
    if classes is not None and len(classes) != num_classes:
        raise ValueError(f"classes names {classes} do not match the {num_classes} output channel(s).")
    config = {"format": FORMAT, "entry": info.name, "build_kwargs": kwargs, "emzoo_version": versions["emzoo"],
              "keras_version": versions["keras"]}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "entry": info.name,
        "axes": axes,
        "output_axes": "YXC" if info.dims == "3D->2D" else axes,
        "input": {"shape": list(input_shape), "dtype": str(model.inputs[0].dtype), "channels": input_shape[-1],
                  "divisor": _divisor(model, info.divisor, kwargs)},
        "num_classes": num_classes,
        "classes": classes,
        "output_activation": "sigmoid" if num_classes == 1 else "softmax",
        "normalization": meta_in.pop("normalization"),
        "receptive_field": meta_in.pop("receptive_field", None),
        "halo": meta_in.pop("halo", None),
        "tta": meta_in.pop("tta", None),
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(keras.ops.size(w)) for w in model.trainable_weights)),
        "flops": {"gflops": report.gflops, "input_shape": list(report.input_shape)},
        "training_data": meta_in.pop("training_data", None),
        "recipe": meta_in.pop("recipe", None),
        "seed": meta_in.pop("seed", None),
        "metrics": meta_in.pop("metrics", None),
        "license": meta_in.pop("license", None),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "versions": versions,
    }
    meta.update(meta_in)  # description, datasets, tags, name, extra
    meta = _jsonable(meta, "preset metadata")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        model.save_weights(tmp / "model.weights.h5")
        from emzoo.hub.manifest import sha256_file

        # load() checks these, so a corrupted local copy gets the same clear error as a corrupted download.
        meta["files"] = {n: sha256_file(tmp / n) for n in ("config.json", "model.weights.h5")}
        (tmp / "emzoo.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(_model_card(meta, config))
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------------------------------------------------- load


def _is_path(value: Any) -> bool:
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and not value.startswith("hf://") and (
        "/" in value or os.sep in value or value.endswith(".keras") or Path(value).exists())


def _parse_hf(uri: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"hf://([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?", uri)
    if not match:
        raise ValueError(f"{uri!r} is not a Hub URI; write hf://org/repo@<40-hex commit>.")
    return match.group(1), match.group(2)


def _hub_files(uri: str, entry: str | None) -> tuple[dict[str, Path], str]:
    """Files of an ``hf://`` preset: sha256-checked when the manifest knows the repo, else with a warning."""
    repo_id, revision = _parse_hf(uri)
    release = find_release(repo_id, revision, entry=entry) if revision else None
    if release is not None:
        return fetch_release(release, _LOAD_FILES), release.name
    if revision is None or not re.fullmatch(r"[0-9a-f]{40}", revision):
        warnings.warn(f"{uri} is not pinned to a 40-hex commit: the files may change under you; pin it as "
                      f"hf://{repo_id}@<commit>.", stacklevel=3)
    warnings.warn(f"{uri} is not in the weights manifest, so its files cannot be sha256-checked; loading it anyway "
                  "(safe mode, no code runs).", stacklevel=3)
    files = {}
    for name in _LOAD_FILES:
        if name == WEIGHT_FILES[1] and WEIGHT_FILES[0] in files:
            continue
        # Only config.json is required up front; of the two weight files one must exist (checked below).
        path = find_in_mirror(repo_id, name) or fetch_hub_file(
            repo_id, name, revision=revision or "main", what=f"{uri}: {name}", optional=name != "config.json")
        if path is not None:
            files[name] = path
    if not any(n in files for n in WEIGHT_FILES):
        raise FileNotFoundError(f"{uri} holds no model.weights.h5 (or model.weights.compact.h5); it is not an emzoo "
                                "preset.")
    return files, uri


def _local_files(directory: Path) -> dict[str, Path]:
    missing = [n for n in ("config.json",) if not (directory / n).is_file()]
    if not any((directory / n).is_file() for n in WEIGHT_FILES):
        missing.append("model.weights.h5")
    if missing:
        raise FileNotFoundError(f"{directory} is not an emzoo preset folder (no {', '.join(missing)}); write one "
                                "with emzoo.save_preset().")
    return {n: directory / n for n in _LOAD_FILES if (directory / n).is_file()}


def _mismatch_message(exc: Exception, *, label: str, entry: str, kwargs: dict[str, Any],
                      overrides: dict[str, Any]) -> str:
    """Keras' load error (which buries the layer in a long dump of values) as one line naming the layer."""
    text = str(exc)
    layer = re.search(r"object <(\w+) name=([^,>]+)", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    count = re.search(r"A total of (\d+) objects could not be loaded", text)
    variables = re.search(r"expected (\d+) variables, but received (\d+)", text)
    if layer:
        where = f"layer {layer.group(2)!r} ({layer.group(1)})"
    else:
        where = "the model"
    if shapes:
        what = f"needs a variable of shape {shapes.group(1)} but the file holds {shapes.group(2)}"
    elif variables:
        what = f"has {variables.group(1)} variables but the file holds {variables.group(2)} for it"
    else:
        what = f"could not be loaded ({text.splitlines()[0][:200]})"
    total = f" ({count.group(1)} of the model's layers do not fit in all)" if count else ""
    hint = (f"drop the overrides {overrides} (they change the architecture or the input channels)" if overrides
            else "the file holds weights for another architecture or number of input channels")
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (f"{label}: the weights do not fit emzoo.build({entry!r}, {args}): {where} {what}{total}; {hint}, or "
            "pass weights=None for random initial weights.")


def _check_recorded_hashes(files: dict[str, Path], meta: dict[str, Any], label: str) -> None:
    """A preset whose ``emzoo.json`` records its files' sha256 must match them (a corrupted copy is refused)."""
    from emzoo.hub.manifest import sha256_file

    for name, expected in (meta.get("files") or {}).items():
        if name in files and sha256_file(files[name]) != expected:
            raise ValueError(f"{label}: {name} does not match the sha256 recorded in its emzoo.json (the file is "
                             "corrupted or was changed); restore the preset from its source or write it again.")


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
    kwargs = {**_tuples(config["build_kwargs"]), **overrides}
    meta = json.loads(Path(files["emzoo.json"]).read_text()) if "emzoo.json" in files else {}
    _check_recorded_hashes(files, meta, label)
    model = build(preset_entry, **kwargs)
    decoded_dir = None
    try:
        weights_file = files.get("model.weights.h5")
        if weights_file is None:
            from emzoo.hub.compact import decode_weights

            decoded_dir = Path(tempfile.mkdtemp(prefix="emzoo_decoded_"))
            weights_file = decode_weights(files[WEIGHT_FILES[1]], decoded_dir / WEIGHT_FILES[0])
        with warnings.catch_warnings():
            # A failed load warns once per variable before raising; the error below says it in one line.
            warnings.simplefilter("ignore")
            model.load_weights(weights_file)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(_mismatch_message(exc, label=label, entry=preset_entry, kwargs=kwargs, overrides=overrides)
                         ) from None
    finally:
        if decoded_dir is not None:
            shutil.rmtree(decoded_dir, ignore_errors=True)
    # object.__setattr__ keeps Keras from tracking the dict (it would wrap it and walk it when saving).
    object.__setattr__(model, "emzoo_metadata", meta)
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

    known = set(list_models())
    if isinstance(name, str) and name.startswith("hf://"):
        if weights != "default":
            raise ValueError(f"{name!r} already names the weights; leave weights='default'.")
        files, label = _hub_files(name, entry=None)
        return _from_files(files, label=label, entry=None, overrides=build_overrides, compile=compile)
    if not isinstance(name, str) or (split_name_tag(name)[0] not in known and _is_path(name)):
        path = Path(name).expanduser()
        if weights != "default":
            raise ValueError(f"{path} already names the weights; leave weights='default'.")
        if path.is_file() and path.suffix == ".keras":
            if build_overrides:
                raise TypeError(f"build overrides {sorted(build_overrides)} do not apply to a .keras file.")
            return _load_keras_file(path, compile)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; give an entry name (see `emzoo list`), entry.tag, "
                                    "hf://org/repo@rev, a preset folder or a .keras file.")
        return _from_files(_local_files(path), label=str(path), entry=None, overrides=build_overrides,
                           compile=compile)

    entry, tag = split_name_tag(name)
    entry = get_entry(entry).info.name  # unknown entry -> KeyError with close names
    if weights is None:
        if tag is not None:
            raise ValueError(f"{name!r} names weights {tag!r} but weights=None asks for random initial weights; "
                             "drop one of them.")
        model = build(entry, **build_overrides)
        object.__setattr__(model, "emzoo_metadata", {})
        return model
    if isinstance(weights, os.PathLike) or _is_path(weights):
        path = Path(weights).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"weights folder {path} does not exist; give a tag, hf://org/repo@rev or a "
                                    "preset folder written by emzoo.save_preset().")
        return _from_files(_local_files(path), label=str(path), entry=entry, overrides=build_overrides,
                           compile=compile)
    if str(weights).startswith("hf://"):
        files, label = _hub_files(str(weights), entry=entry)
        return _from_files(files, label=label, entry=entry, overrides=build_overrides, compile=compile)
    if weights != "default":
        if tag is not None and tag != weights:
            raise ValueError(f"{name!r} names tag {tag!r} but weights={weights!r}; give the tag once.")
        tag = str(weights)
    release: WeightsSpec = resolve_weights(entry, tag)
    files = fetch_release(release, _LOAD_FILES)
    return _from_files(files, label=release.name, entry=entry, overrides=build_overrides, compile=compile)


def read_preset_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``emzoo.json`` of a preset: a folder, an ``emzoo.json`` file, ``entry[.tag]`` or ``hf://org/repo@rev``.

    Only ``emzoo.json`` is fetched (sha256-checked) for a name; no model is built.

    Examples
    --------
    >>> read_preset_metadata("path/to/preset")["axes"]  # doctest: +SKIP
    'YXC'
    """
    from emzoo.registry import list_models, split_name_tag

    if isinstance(path, str) and path.startswith("hf://"):
        repo_id, revision = _parse_hf(path)
        release = find_release(repo_id, revision) if revision else None
        if release is not None:
            file = fetch_release(release, ("emzoo.json",)).get("emzoo.json")
        else:
            file = find_in_mirror(repo_id, "emzoo.json") or fetch_hub_file(
                repo_id, "emzoo.json", revision=revision or "main", what=f"{path}: emzoo.json")
    elif isinstance(path, str) and split_name_tag(path)[0] in list_models() and not Path(path).exists():
        release = resolve_weights(*split_name_tag(path))
        file = fetch_release(release, ("emzoo.json",)).get("emzoo.json")
    else:
        p = Path(path).expanduser()
        file = p / "emzoo.json" if p.is_dir() else p
    if file is None or not Path(file).is_file():
        raise FileNotFoundError(f"no emzoo.json for {path}; presets written by emzoo.save_preset() have one.")
    return json.loads(Path(file).read_text())
