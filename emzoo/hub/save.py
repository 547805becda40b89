"""Write a preset folder: :func:`save_preset` (the layout is in :mod:`emzoo.hub.layout`).

A preset is rebuilt from ``config.json`` with emzoo's own builder, so saving checks that the builder really rebuilds
the model (every variable shape, in order) and refuses Lambda layers, which safe-mode loading would refuse later.
The folder is written beside its target and renamed into place (:func:`emzoo.io.atomic.atomic_dir`).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from emzoo.hub.card import model_card
from emzoo.hub.layout import COVER_FILE, FORMAT, METADATA_KEYS, from_json, to_json
from emzoo.hub.manifest import sha256_file
from emzoo.io.atomic import atomic_dir

__all__ = ["save_preset"]


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


def _weight_shapes(model: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(w.path, tuple(int(d) for d in w.shape)) for w in model.weights]


def _infer_build_kwargs(model: Any, entry: str, build_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``build_kwargs`` completed with the model's input shape and class count, checked to rebuild the model."""
    from emzoo.registry import build

    kwargs = dict(build_kwargs or {})
    kwargs.setdefault("input_shape", tuple(model.input_shape[1:]))
    out_shape = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
    kwargs.setdefault("num_classes", int(out_shape[-1]))
    kwargs = to_json(kwargs, "build_kwargs")
    # Rebuild exactly as load() will (from the JSON form) and compare every variable shape in order.
    rebuilt = build(entry, **from_json(kwargs))
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
    """Spatial divisor of the input: the registry's, unless overrides change the depth (then read off the graph)."""
    if set(kwargs) <= {"input_shape", "num_classes"}:
        return list(registered) or None
    from emzoo.inference.receptive import model_divisor

    return list(model_divisor(model))


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


def _metadata(model: Any, info: Any, kwargs: dict[str, Any], meta_in: dict[str, Any],
              versions: dict[str, str]) -> dict[str, Any]:
    """The ``emzoo.json`` record (without the file hashes, added once the files exist)."""
    import keras

    from emzoo.blocks import output_activation
    from emzoo.flops import count_flops

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
    meta: dict[str, Any] = {
        "format": FORMAT,
        "entry": info.name,
        "axes": axes,
        "output_axes": "YXC" if info.dims == "3D->2D" else axes,
        "input": {"shape": list(input_shape), "dtype": str(model.inputs[0].dtype), "channels": input_shape[-1],
                  "divisor": _divisor(model, info.divisor, kwargs)},
        "num_classes": num_classes,
        "classes": classes,
        "output_activation": output_activation(num_classes),
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
    return to_json(meta, "preset metadata")


def _cover(cover: Any, split: str | None) -> tuple[Any, dict[str, Any]]:
    """The card's picture (:func:`emzoo.viz.cover_image` of the middle slice) and its ``emzoo.json`` record."""
    import numpy as np

    from emzoo.viz import cover_image, legend_text

    if not isinstance(cover, (tuple, list)) or len(cover) not in (2, 3):
        raise TypeError("cover must be (raw, prob) or (raw, prob, labels): test data, the model's foreground "
                        f"probabilities on it and optionally its ground truth; got {type(cover).__name__}.")
    arrays = [np.asarray(a) for a in cover]
    if any(a.shape != arrays[0].shape for a in arrays) or arrays[0].ndim not in (2, 3):
        raise ValueError(f"cover arrays must share one (Y, X) or (Z, Y, X) shape, got {[a.shape for a in arrays]}; "
                         "pass the foreground map (no class axis).")
    middle = arrays[0].shape[0] // 2 if arrays[0].ndim == 3 else None
    planes = [a if middle is None else a[middle] for a in arrays]
    truth = len(planes) == 3
    where = f"{split}, " if split else "test data, "
    where += "" if middle is None else f"slice {middle}, "
    caption = f"{where}raw (left) and prediction > 0.5 (right); {legend_text(truth)}"
    return cover_image(*planes), {"file": COVER_FILE, "caption": caption}


def save_preset(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    entry: str | None = None,
    build_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    cover: Any = None,
    **metadata: Any,
) -> Path:
    """Write a model as a preset folder: config.json, model.weights.h5, emzoo.json and a README.md model card.

    With ``cover=`` the card also shows ``cover.png``, the test data with the prediction overlaid.

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
    cover : (raw, prob) or (raw, prob, labels), optional
        Test data (2D, or a volume whose middle slice is shown), the model's foreground probabilities on it and
        its ground truth: written as ``cover.png`` (:func:`emzoo.viz.cover_image`, the bioimage.io cover's picture)
        and shown at the top of the model card.
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
    meta = _metadata(model, info, kwargs, meta_in, versions)
    picture = None
    if cover is not None:
        picture, meta["cover"] = _cover(cover, (meta.get("metrics") or {}).get("test_split"))
    config = {"format": FORMAT, "entry": info.name, "build_kwargs": kwargs, "emzoo_version": versions["emzoo"],
              "keras_version": versions["keras"]}
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        model.save_weights(tmp / "model.weights.h5")
        if picture is not None:
            from emzoo.viz import write_image

            write_image(tmp / COVER_FILE, picture)
        # load() checks these, so a corrupted local copy gets the same clear error as a corrupted download.
        meta["files"] = {n: sha256_file(tmp / n) for n in ("config.json", "model.weights.h5")}
        (tmp / "emzoo.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(meta, config))
    return target
