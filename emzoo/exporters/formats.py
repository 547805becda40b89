"""The writers of ``keras``, ``onnx`` and ``savedmodel`` (``bioimageio``: :mod:`emzoo.exporters.bioimageio`).

Every writer goes through Keras' own export path (``model.save`` / ``model.export``), so a custom emzoo layer
exports exactly when its ``call`` traces to plain TensorFlow ops, and writes into a temporary sibling that is renamed
into place (:mod:`emzoo.io.atomic`), so a failed export never leaves a half-written file behind.

The ONNX and SavedModel graphs take any spatial size: their input signature has ``None`` for the batch and every
spatial axis (the sizes must still be multiples of the entry's divisor), except the frame axis of ``3D->2D`` nets,
whose frame count is part of the architecture.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.io.atomic import atomic_dir, atomic_file

__all__ = ["write_keras", "write_onnx", "write_savedmodel", "max_deviation", "run_exported", "resolve_model",
           "warn_postprocess", "input_signature", "FORMATS", "SUFFIXES"]

FORMATS = ("keras", "onnx", "savedmodel", "bioimageio")

# Suffix -> format, so ``export(model, "net.onnx")`` needs no ``format=``.
SUFFIXES = {".keras": "keras", ".onnx": "onnx", ".zip": "bioimageio"}

_INSTALL = {"onnx": "pip install onnx onnxruntime tf2onnx", "bioimageio": "pip install bioimageio.core"}


def resolve_model(model_or_name: Any) -> Any:
    """A ``keras.Model`` as given, or the preset ``emzoo.load`` finds for a name or folder (random init refused).

    Examples
    --------
    >>> resolve_model("emnet_v1_bn").emzoo_metadata["entry"]
    'emnet_v1_bn'
    """
    if isinstance(model_or_name, (str, os.PathLike)):
        from emzoo.hub.load import load

        return load(model_or_name)
    if not hasattr(model_or_name, "export") or not hasattr(model_or_name, "inputs"):
        raise TypeError(f"model_or_name must be a keras.Model, a preset name ('entry.tag') or a preset folder, got "
                        f"{type(model_or_name).__name__}; build or load the model first (emzoo.build / emzoo.load).")
    return model_or_name


def _kind(model: Any) -> str | None:
    from emzoo.registry import model_kind_of

    try:
        return model_kind_of(model)
    except ValueError:  # not one of emzoo's kinds: every spatial axis is dynamic
        return None


def _walk(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _walk(layer)


def _fixed_axes(model: Any, rank: int) -> set[int]:
    """Spatial axes whose size the graph fixed when it was built: those a ``Cropping2D``/``Cropping3D`` layer cuts
    (the amounts were computed for the built size), and all of them behind a ``Reshape`` (its target shape)."""
    import keras

    axes: set[int] = set()
    for layer in _walk(model):
        if isinstance(layer, (keras.layers.Cropping2D, keras.layers.Cropping3D)) and len(layer.cropping) == rank:
            axes |= {i for i, pair in enumerate(layer.cropping) if any(pair)}
        elif isinstance(layer, keras.layers.Reshape):  # its target shape holds the built sizes (CDeep3M's z squeeze)
            axes |= set(range(rank))
    return axes


def input_signature(model: Any) -> list[Any]:
    """The dynamic input signature: ``None`` for the batch and every spatial axis the graph lets vary.

    An axis keeps the size the model was built with where the graph fixes it: the frame axis of a ``3D->2D`` net,
    any axis a cropping layer cuts by a fixed amount (the z axis of the 2D-3D nets, whose skip crops were computed
    for the built size), and every axis of a net with a ``Reshape`` (multi-frame CDeep3M squeezes z with one).

    Examples
    --------
    >>> import emzoo
    >>> input_signature(emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16)))[0].shape
    (None, None, None, 1)
    """
    import keras

    if len(model.inputs) != 1:
        raise ValueError(f"export supports single-input models; {model.name!r} has {len(model.inputs)} inputs.")
    shape = tuple(model.inputs[0].shape)
    rank = len(shape) - 2
    fixed = _fixed_axes(model, rank) | ({0} if _kind(model) == "3D->2D" else set())
    spatial = [shape[1 + i] if i in fixed else None for i in range(rank)]
    return [keras.InputSpec(shape=(None, *spatial, shape[-1]), dtype=model.inputs[0].dtype,
                            name=model.inputs[0].name)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # tf2onnx and the SavedModel tracer warn about numpy aliases and untraced functions on every export; none of it
    # is actionable for a user of emzoo.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _name_onnx_axes(path: Path) -> None:
    """Give the dynamic input axes of an ONNX graph readable names (``batch``, ``z``, ``y``, ``x``)."""
    import onnx

    graph = onnx.load(str(path))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    names = ["batch", *["z", "y", "x"][3 - (len(dims) - 2):], "channel"]
    for dim, name in zip(dims, names, strict=False):
        if dim.dim_param:  # fixed axes (channels, a 3D->2D net's frames) keep their size
            dim.dim_param = name
    onnx.save(graph, str(path))


def write_onnx(model: Any, target: Path, *, opset: int | None = None) -> Path:
    """Write ``model`` as an ONNX graph with dynamic batch and spatial axes (tf2onnx through ``model.export``)."""
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"format='onnx' needs onnx and tf2onnx ({exc}); install them with `{_INSTALL['onnx']}`.") \
            from None
    with atomic_file(target) as tmp, _quiet():
        model.export(str(tmp), format="onnx", input_signature=input_signature(model), opset_version=opset,
                     verbose=False)
        _name_onnx_axes(tmp)
    return target


def write_savedmodel(model: Any, target: Path) -> Path:
    """Write ``model`` as a TF SavedModel folder (``serve`` endpoint, dynamic batch and spatial axes)."""
    with atomic_dir(target) as tmp, _quiet():
        model.export(str(tmp), format="tf_saved_model", input_signature=input_signature(model), verbose=False)
    return target


def write_keras(model: Any, target: Path) -> Path:
    """Write ``model`` as a ``.keras`` file (loading it needs emzoo imported, for the custom layers)."""
    if target.suffix != ".keras":
        raise ValueError(f"path must end in .keras for format='keras', got {str(target)!r}; rename it.")
    with atomic_file(target) as tmp:
        model.save(str(tmp))
    return target


def run_exported(path: str | os.PathLike[str], x: np.ndarray, format: str | None = None) -> list[np.ndarray]:
    """Run an exported artefact on ``x`` with its own runtime (ONNX Runtime, ``tf.saved_model.load``, Keras).

    Returns every output as a numpy array, in the model's output order.

    Examples
    --------
    >>> run_exported(tmp / "unet.onnx", np.zeros((1, 32, 32, 1), "float32"))[0].shape  # doctest: +SKIP
    (1, 32, 32, 1)
    """
    path = Path(path)
    format = format or SUFFIXES.get(path.suffix.lower()) or ("savedmodel" if path.is_dir() else None)
    x = np.asarray(x, dtype=np.float32)
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [np.asarray(o) for o in session.run(None, {session.get_inputs()[0].name: x})]
    if format == "savedmodel":
        import tensorflow as tf  # noqa: TID251  (a SavedModel is a TensorFlow artefact; only TF runs it)

        loaded = tf.saved_model.load(str(path))  # kept alive: its variables die with it
        out = loaded.serve(tf.constant(x))
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
    if format == "keras":
        import keras

        out = keras.saving.load_model(str(path), compile=False)(x, training=False)
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
    raise ValueError(f"cannot run {str(path)!r}: pass format= one of 'onnx', 'savedmodel', 'keras'.")


def max_deviation(model: Any, path: str | os.PathLike[str], x: np.ndarray, format: str | None = None) -> float:
    """Largest absolute difference between the Keras model and its export on ``x``, over every output.

    Examples
    --------
    >>> max_deviation(model, tmp / "unet.onnx", x) < 1e-4  # doctest: +SKIP
    True
    """
    want = model(np.asarray(x, dtype=np.float32), training=False)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    have = run_exported(path, x, format)
    if len(have) != len(want) or any(h.shape != w.shape for h, w in zip(have, want, strict=True)):
        raise ValueError(f"{path} gives outputs {[h.shape for h in have]}, the model {[w.shape for w in want]}.")
    return max(float(np.max(np.abs(h - w))) for h, w in zip(have, want, strict=True))


def warn_postprocess(model: Any, format: str) -> None:
    """Say that a network file leaves out the preset's object-length filter (its scores were measured with it)."""
    if (getattr(model, "emzoo_metadata", None) or {}).get("postprocess"):
        warnings.warn(f"the {format} export holds the network only: the preset's object-length filter (predicted "
                      "objects far longer than any labelled training object removed), with which its scores were "
                      "measured, is not part of it; apply emzoo.inference.postprocess.apply_postprocess to its "
                      "output.", UserWarning, stacklevel=3)
