"""Compact weight files for presets shipped inside the package, and the bundled-preset location.

Two encodings of a Keras ``model.weights.h5`` (same groups and dataset paths, so decoding rebuilds it exactly):

``int8``
    Every weight array with at least 2 dimensions and :data:`MIN_QUANTIZED` elements (convolution, transposed
    convolution and dense kernels) is stored as symmetric int8 with one float32 scale per channel of its last axis
    (the output channel of convolution and dense kernels; the input channel of a transposed convolution's):
    ``w ≈ q * scale``, ``scale = max|w| / 127`` over the channel. Biases, BatchNorm statistics, TLU and PReLU
    parameters and every small array stay float32.
``float16``
    The same arrays as float16 (IEEE half), the rest float32.

The file is ``model.weights.compact.h5``; a Keras ``load_weights`` refuses its name, so it is never mistaken for a
float file. :func:`decode_weights` writes the float32 ``.weights.h5`` Keras loads (:func:`emzoo.load` does this in a
temporary folder). The encoding is recorded in the file (root attribute ``emzoo_encoding``) and in the preset's
``emzoo.json`` (``weights_encoding``).

Examples
--------
>>> import numpy as np
>>> q, scale = quantize_int8(np.array([[1.0, -0.5], [0.25, 2.0]], np.float32))
>>> q.tolist(), np.round(scale * 127, 3).tolist()
([[127, -32], [32, 127]], [1.0, 2.0])
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.hub.manifest import WEIGHT_FILES

__all__ = [
    "COMPACT_FILE", "ENCODINGS", "MIN_QUANTIZED", "quantize_int8", "encode_weights", "decode_weights",
    "write_compact_preset", "bundled_dir", "bundled_location", "preset_file_hashes", "layer_signature",
]

COMPACT_FILE = WEIGHT_FILES[1]
ENCODINGS = ("int8", "float16")
#: Arrays smaller than this stay float32 (they cost nothing and hold the sensitive per-channel parameters).
MIN_QUANTIZED = 1024
_FORMAT_NOTE = {
    "int8": "symmetric int8 per channel of the last axis (scale = max|w|/127, float32 scales in the dataset's "
            "'scale' attribute) for arrays with >= 2 dims and >= 1024 elements; all other arrays float32",
    "float16": "float16 for arrays with >= 2 dims and >= 1024 elements; all other arrays float32",
}


def quantize_int8(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes and float32 scales, one per channel of the last axis (``w ≈ q * scale``)."""
    w = np.asarray(weights, np.float32)
    flat = w.reshape(-1, w.shape[-1])
    scale = np.abs(flat).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def _compressible(data: np.ndarray) -> bool:
    return data.dtype.kind == "f" and data.ndim >= 2 and data.size >= MIN_QUANTIZED


def _copy_attrs(src: Any, dst: Any) -> None:
    for key, value in src.attrs.items():
        dst.attrs[key] = value


def _atomic_h5(dst: Path, fill: Any) -> Path:
    import h5py

    from emzoo.io.atomic import atomic_file

    with atomic_file(dst) as tmp, h5py.File(tmp, "w") as out:
        fill(out)
    return dst


def encode_weights(src: str | os.PathLike[str], dst: str | os.PathLike[str], encoding: str) -> Path:
    """Write the compact form of a Keras ``.weights.h5`` file (atomically).

    Raises
    ------
    ValueError
        Unknown encoding, or a file with non-finite weights.
    """
    import h5py

    if encoding not in ENCODINGS:
        raise ValueError(f"unknown weights encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}.")

    def fill(out: Any) -> None:
        with h5py.File(src, "r") as f:
            _copy_attrs(f, out)
            out.attrs["emzoo_encoding"] = encoding

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group):
                    _copy_attrs(obj, out.require_group(name))
                    return
                data = obj[()]
                if isinstance(data, np.ndarray) and data.dtype.kind == "f" and not np.isfinite(data).all():
                    raise ValueError(f"{src}: weight {name} holds NaN or infinite values; it cannot be published.")
                if isinstance(data, np.ndarray) and _compressible(data):
                    if encoding == "int8":
                        q, scale = quantize_int8(data)
                        ds = out.create_dataset(name, data=q)
                        ds.attrs["scale"] = scale
                    else:
                        ds = out.create_dataset(name, data=data.astype(np.float16))
                    ds.attrs["dtype"] = str(data.dtype)
                else:
                    ds = out.create_dataset(name, data=data)
                for key, value in obj.attrs.items():
                    ds.attrs[key] = value

            f.visititems(visit)

    return _atomic_h5(Path(dst), fill)


def decode_weights(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write the float ``.weights.h5`` Keras loads from a compact file (atomically).

    Raises
    ------
    ValueError
        If ``src`` is not a compact weights file.
    """
    import h5py

    def fill(out: Any) -> None:
        with h5py.File(src, "r") as f:
            encoding = f.attrs.get("emzoo_encoding")
            if encoding not in ENCODINGS:
                raise ValueError(f"{src} is not an emzoo compact weights file (no emzoo_encoding attribute).")
            for key, value in f.attrs.items():
                if key != "emzoo_encoding":
                    out.attrs[key] = value

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group):
                    _copy_attrs(obj, out.require_group(name))
                    return
                data = obj[()]
                attrs = dict(obj.attrs)
                dtype = attrs.pop("dtype", None)
                if "scale" in attrs:
                    data = data.astype(np.float32) * np.asarray(attrs.pop("scale"), np.float32)
                if dtype is not None:
                    data = np.asarray(data).astype(dtype)
                ds = out.create_dataset(name, data=data)
                for key, value in attrs.items():
                    ds.attrs[key] = value

            f.visititems(visit)

    return _atomic_h5(Path(dst), fill)


def preset_file_hashes(directory: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of a preset's config and weights files (recorded in its ``emzoo.json`` and checked at load)."""
    from emzoo.hub.manifest import sha256_file

    root = Path(directory)
    names = ("config.json", "model.weights.h5", COMPACT_FILE)
    return {n: sha256_file(root / n) for n in names if (root / n).is_file()}


def write_compact_preset(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, encoding: str,
                         overwrite: bool = False) -> Path:
    """Copy a float32 preset folder with its weights in ``encoding`` (:data:`COMPACT_FILE`), atomically.

    ``emzoo.json`` gains ``weights_encoding`` and ``files`` (sha256 of config and weights), so a corrupted copy is
    refused at load.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True or choose another folder.")
    if dst.resolve() == src.resolve():
        raise ValueError(f"the compact preset {dst} would replace its source; choose another folder.")
    from emzoo.hub.layout import COVER_FILE
    from emzoo.io.atomic import atomic_dir

    with atomic_dir(dst) as tmp:
        shutil.copyfile(src / "config.json", tmp / "config.json")
        encode_weights(src / "model.weights.h5", tmp / COMPACT_FILE, encoding)
        meta = json.loads((src / "emzoo.json").read_text())
        meta["weights_encoding"] = {"name": encoding, "file": COMPACT_FILE, "format": _FORMAT_NOTE[encoding],
                                    "decoded_dtype": "float32"}
        meta["files"] = preset_file_hashes(tmp)
        (tmp / "emzoo.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name in ("README.md", COVER_FILE):  # the card and the picture it shows
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
    return dst


def bundled_dir() -> Path:
    """Folder of the presets shipped inside the package (``emzoo/weights``)."""
    return Path(__file__).resolve().parents[1] / "weights"


def bundled_location(entry: str, tag: str) -> str:
    """Manifest value of a bundled preset: its folder relative to :func:`bundled_dir`."""
    return f"{entry}/{tag}"


def layer_signature(model: Any) -> str:
    """sha256 of the model's weight layout: every layer's class and weight shapes, in order.

    ``.weights.h5`` files are keyed by layer class and order, so published weights pin this signature; a builder
    change that alters it would load the wrong weights or fail (the test-suite compares it for every bundled preset).
    """
    import hashlib

    layout = [[type(layer).__name__, [list(w.shape) for w in layer.weights]] for layer in model._flatten_layers(
        include_self=False, recursive=True) if layer.weights]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()
