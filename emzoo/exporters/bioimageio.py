"""A bioimage.io model package (spec format 0.5) of an emzoo preset, written with ``bioimageio.spec``'s own classes.

What a preset knows becomes the package's fields:

- axes: ``batch``, the spatial axes (``z``, ``y``, ``x``) as parameterised sizes with the entry's divisor as step
  where the model takes any size (an axis the graph fixes, as a ``3D->2D`` net's frames or a 2D-3D net's cropped z,
  keeps its built size), ``channel``; outputs reference the input's spatial sizes and carry the receptive-field
  margin as their ``halo``;
- preprocessing from ``emzoo.json``'s normalisation: ``zscore`` -> ``fixed_zero_mean_unit_variance``, fixed
  ``minmax`` -> ``scale_linear`` (+ ``clip`` for a clipped range), per-image ``minmax`` -> ``scale_range`` 0-100,
  ``percentile`` -> ``scale_range`` + ``clip`` to [0, 1];
- test tensors: a raw input tile (the preset's own test tile, or a synthetic one in the raw intensity range the
  normalisation expects) and the preset's own prediction on it;
- a cover (input | prediction), citations with the DOIs in the entry's reference, the licence, the training data
  (name and sha256), the model card as documentation;
- weights: ``keras_v3`` (the parent: the ``.keras`` file; loading it needs ``pip install emzoo`` for the custom
  layers), ``onnx`` and ``tensorflow_saved_model_bundle`` (both standalone), converted by
  :mod:`emzoo.exporters.formats`; a model with several outputs gets no SavedModel (bioimageio.core would read its
  outputs in an order that changes between processes).

``bioimageio.core.test_model`` on the written package runs every weight format against the test tensors.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from emzoo.exporters.formats import input_signature, resolve_model, warn_postprocess, write_keras, write_onnx
from emzoo.io.atomic import atomic_dir, atomic_file

__all__ = ["export_bioimageio", "preprocessing_steps", "WEIGHT_FORMATS"]

WEIGHT_FORMATS = ("keras_v3", "onnx", "tensorflow_saved_model_bundle")

# Why a multi-output package has no SavedModel weights. A SavedModel stores the output dict as a protobuf map;
# ``tf.saved_model.load`` rebuilds the dict in that map's iteration order, which upb's per-process hash seed (ASLR)
# changes from run to run, and bioimageio.core 0.11's adapter reads ``list(result.values())`` (it asserts a dict, so
# a list cannot be served either). A two-output net came back swapped in about 1 process of 3.
_UNORDERED_SAVEDMODEL = ("bioimageio.core reads a SavedModel's outputs in the order TensorFlow restores its output "
                         "dict, which changes between processes (swapped outputs)")

_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s,;]+[^\s,;.)])")


def _spec() -> Any:
    try:
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise ImportError("format='bioimageio' needs bioimageio.spec; install it with "
                          "`pip install bioimageio.core`.") from None
    return v0_5


def preprocessing_steps(normalization: dict[str, Any] | str | None, spatial: list[str]) -> list[Any]:
    """The bioimage.io preprocessing of an emzoo normalisation spec (:mod:`emzoo.io.normalize`).

    Parameters
    ----------
    normalization : dict, str or None
        ``emzoo.json``'s ``normalization``.
    spatial : list of str
        Spatial axis ids of the input (per-image statistics are taken over them).

    Returns
    -------
    list
        ``bioimageio.spec`` preprocessing descriptions, starting with ``ensure_dtype`` float32.

    Examples
    --------
    >>> [p.id for p in preprocessing_steps({"method": "percentile", "low": 1, "high": 99}, ["y", "x"])]
    ['ensure_dtype', 'scale_range', 'clip']
    """
    spec = _spec()
    axes = [spec.AxisId(a) for a in spatial]
    steps: list[Any] = [spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))]
    norm = {"method": normalization} if isinstance(normalization, str) else dict(normalization or {"method": "none"})
    method = norm.get("method", "none")
    if method == "zscore":
        steps.append(spec.FixedZeroMeanUnitVarianceDescr(
            kwargs=spec.FixedZeroMeanUnitVarianceKwargs(mean=float(norm["mean"]), std=float(norm["std"]))))
    elif method == "minmax" and "min" in norm and "max" in norm:
        lo, hi = float(norm["min"]), float(norm["max"])
        gain = 1.0 / (hi - lo) if hi > lo else 1.0
        steps.append(spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=gain, offset=-lo * gain)))
        if norm.get("clip"):
            steps.append(spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)))
    elif method == "minmax":  # per image: its own range
        steps.append(spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(axes=axes, min_percentile=0.0,
                                                                       max_percentile=100.0)))
    elif method == "percentile":
        steps.append(spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
            axes=axes, min_percentile=float(norm.get("low", 1.0)), max_percentile=float(norm.get("high", 99.0)))))
        steps.append(spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)))
    elif method != "none":
        raise ValueError(f"normalization method {method!r} has no bioimage.io preprocessing; use zscore, minmax, "
                         "percentile or none.")
    return steps


def _synthetic_raw(shape: tuple[int, ...], normalization: dict[str, Any] | None, seed: int = 0) -> np.ndarray:
    """A smooth random tile in the raw intensity range the normalisation expects (blobs, not white noise)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    spatial = shape[:-1]
    field = ndimage.gaussian_filter(rng.standard_normal(spatial), sigma=2.0)
    field = (field - field.mean()) / (field.std() + 1e-12)
    norm = normalization or {}
    if norm.get("method") == "zscore":
        raw = norm["mean"] + norm["std"] * field
    elif norm.get("method") == "minmax" and "min" in norm and "max" in norm:
        raw = norm["min"] + (norm["max"] - norm["min"]) * (0.5 + 0.2 * field)
    else:
        raw = 127.5 + 40.0 * field
    return np.repeat(raw[..., None], shape[-1], axis=-1).astype(np.float32)


def _test_shape(model: Any, step: tuple[int, ...], margins: tuple[int, ...], free: tuple[bool, ...]
                ) -> tuple[int, ...]:
    """The test tile: the built size on fixed axes; elsewhere the smallest multiple of the divisor whose output
    exceeds twice the halo by 16 pixels (at least 32 per side in 2D, 16 in 3D)."""
    shape = tuple(model.inputs[0].shape[1:])
    least = 32 if len(shape) == 3 else 16
    sides = [int(size) if not free[i] else step[i] * math.ceil(max(2 * margins[i] + 16, least) / step[i])
             for i, size in enumerate(shape[:-1])]
    return (*sides, int(shape[-1]))


def _license(meta: dict[str, Any], license: str | None) -> Any:
    spec = _spec()
    text = license or str(meta.get("license") or "")
    candidate = text.split()[0] if text.split() else ""
    try:
        return spec.LicenseId(candidate)
    except Exception:
        raise ValueError(f"the preset's licence {text!r} is not an SPDX identifier bioimage.io accepts; pass "
                         "license='MIT' (or another SPDX id).") from None


def _citations(entry_info: Any) -> list[Any]:
    """One citation per DOI in the entry's reference, its text the part of the reference that ends with that DOI."""
    spec = _spec()
    reference = entry_info.reference or ""
    cites, start = [], 0
    for match in _DOI.finditer(reference):
        text = reference[start:match.start()].strip(" ;,.") or entry_info.paper
        text = re.sub(r"\s*(doi:|https://doi.org/)\s*$", "", text, flags=re.I).strip(" ;,.")
        cites.append(spec.CiteEntry(text=text or entry_info.paper, doi=spec.Doi(match.group(1))))
        start = match.end()
    if not cites:
        raise ValueError(f"entry {entry_info.name!r} has no DOI in its reference; bioimage.io needs a citation with "
                         "a DOI or URL (add it to the entry's reference=).")
    return cites


def _cover(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """The cover: :func:`emzoo.viz.cover_image` of the centre slice (input | input with the prediction overlaid).

    The same picture as a preset's model card (``save_preset(cover=...)``): 2:1 for a square test tile.
    """
    from emzoo.viz import cover_image, write_image

    def plane(a: np.ndarray) -> np.ndarray:
        a = a[0]
        while a.ndim > 3:
            a = a[a.shape[0] // 2]
        return a.astype(np.float32)

    left, right = plane(x)[..., 0], plane(y)
    # The foreground as emzoo.inference.foreground reads it (more classes: anything but class 0).
    right = right[..., 0] if right.shape[-1] == 1 else right[..., 1] if right.shape[-1] == 2 else 1 - right[..., 0]
    if right.shape != left.shape:  # valid-convolution outputs: centre-crop the input to the output's size
        off = [(a - b) // 2 for a, b in zip(left.shape, right.shape, strict=True)]
        left = left[off[0]:off[0] + right.shape[0], off[1]:off[1] + right.shape[1]]
    write_image(path, cover_image(left, np.clip(right, 0.0, 1.0)))


def _output_axes(spec: Any, model: Any, out_index: int, in_axes: list[str], test_shape: tuple[int, ...],
                 step: tuple[int, ...], margins: dict[str, int], free: tuple[bool, ...], names: list[str]
                 ) -> list[Any]:
    """Output axes: a free input axis is referenced (with the offset of valid convolutions), a fixed one is fixed."""
    import keras

    def shapes(spatial: tuple[int, ...]) -> tuple[int, ...]:
        out = model.compute_output_spec(keras.KerasTensor((1, *spatial, test_shape[-1])))
        out = out[out_index] if isinstance(out, (list, tuple)) else out
        return tuple(out.shape[1:])

    base = shapes(test_shape[:-1])
    bigger = shapes(tuple(s + (step[i] if free[i] else 0) for i, s in enumerate(test_shape[:-1])))
    out_spatial = ["z", "y", "x"][3 - (len(base) - 1):]
    axes: list[Any] = [spec.BatchAxis()]
    for k, axis in enumerate(out_spatial):
        i = in_axes.index(axis)
        if not free[i]:
            axes.append(spec.SpaceOutputAxis(id=spec.AxisId(axis), size=int(base[k])))
            continue
        if bigger[k] - base[k] != step[i]:
            raise ValueError(f"output {out_index} axis {axis} does not grow with the input ({base[k]} -> "
                             f"{bigger[k]} for +{step[i]}); bioimage.io size references cannot express it.")
        offset = int(base[k] - test_shape[i])
        # The margin is in input pixels around the output voxel; valid convolutions already cut half the offset.
        margin = max(0, min(margins.get(axis, 0) + min(offset, 0) // 2, (base[k] - 1) // 2))
        ref = spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId(axis), offset=offset)
        axes.append(spec.SpaceOutputAxisWithHalo(id=spec.AxisId(axis), size=ref, halo=margin)
                    if margin else spec.SpaceOutputAxis(id=spec.AxisId(axis), size=ref))
    axes.append(spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in names]))
    return axes


def _export_savedmodel_dict(model: Any, path: Path) -> None:
    """A SavedModel whose ``serve`` endpoint returns ``{"output0": ..., "output1": ...}``.

    bioimageio.core opens the bundle with ``TFSMLayer(call_endpoint="serve")`` and insists on a dict. Readers that
    look the outputs up by key get them right; bioimageio.core 0.11 takes ``dict.values()`` instead, whose order is
    not kept (see :data:`_UNORDERED_SAVEDMODEL`), so packages of multi-output models leave this format out.
    """
    import keras
    import tensorflow as tf  # noqa: TID251  (a SavedModel is a TensorFlow artefact)

    spec = input_signature(model)[0]

    def serve(x: Any) -> dict[str, Any]:
        out = model(x, training=False)
        return {f"output{k}": v for k, v in enumerate(out if isinstance(out, (list, tuple)) else [out])}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec(spec.shape, spec.dtype or "float32",
                                                                        name=spec.name)])
    archive.write_out(str(path), verbose=False)


def _package_name(meta: dict[str, Any]) -> str:
    """bioimage.io names take letters, digits, ``_+- ()`` and 5 to 128 characters: ``emnet_v1_bn cardiac_mito``."""
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", " ", str(meta.get("name") or meta["entry"])).strip()
    return (name if len(name) >= 5 else f"emzoo {name}")[:128]


def _class_names(meta: dict[str, Any], n: int) -> list[str]:
    names = [re.sub(r"\W", "_", str(c)) for c in (meta.get("classes") or [])]
    if len(names) != n:
        names = ["foreground"] if n == 1 else [f"class{i}" for i in range(n)]
    return names


def export_bioimageio(model_or_name: Any, path: str | os.PathLike[str], *, test_input: np.ndarray | None = None,
                      authors: list[str] | None = None, license: str | None = None, opset: int | None = None,
                      weight_formats: tuple[str, ...] | None = None) -> Path:
    """Write a bioimage.io model package (``.zip``, or an unzipped folder) of an emzoo preset.

    Parameters
    ----------
    model_or_name : keras.Model, str or path-like
        A preset name or folder, or a model loaded with :func:`emzoo.load` (it needs the preset's metadata: entry,
        normalisation, licence).
    path : str or path-like
        ``.zip`` file, or a folder for the unzipped package.
    test_input : numpy.ndarray, optional
        Raw input tile with batch and channel axes (default: a synthetic tile in the normalisation's raw range,
        large enough for the output to exceed twice the halo). The test output is the preset's prediction on it.
    authors : list of str, optional
        Author names (default: ``["emzoo contributors"]``).
    license : str, optional
        SPDX licence id, when the preset's ``license`` does not start with one.
    opset : int, optional
        ONNX opset.
    weight_formats : tuple of str, optional
        A subset of ``("keras_v3", "onnx", "tensorflow_saved_model_bundle")``; ``keras_v3`` is always written (it
        is the parent the others are converted from). Default: all three, or ``keras_v3`` and ``onnx`` for a model
        with several outputs, whose SavedModel outputs bioimageio.core may read back swapped (refused if asked for).

    Returns
    -------
    pathlib.Path
        The package.

    Examples
    --------
    >>> export_bioimageio("emnet_v1_bn", tmp / "emnet.zip")  # doctest: +SKIP
    PosixPath('.../emnet.zip')
    """

    spec = _spec()
    unknown = set(weight_formats or ()) - set(WEIGHT_FORMATS)
    if unknown:
        raise ValueError(f"weight_formats must be taken from {WEIGHT_FORMATS}, got {sorted(unknown)}.")
    model = resolve_model(model_or_name)
    warn_postprocess(model, "bioimage.io")
    meta = dict(getattr(model, "emzoo_metadata", None) or {})
    if not meta.get("entry"):
        raise ValueError("format='bioimageio' needs a preset (its normalisation, licence and training data): pass "
                         "a preset name or folder, or a model from emzoo.load(); save a trained model first with "
                         "emzoo.save_preset().")
    if len(model.inputs) != 1:
        raise ValueError(f"format='bioimageio' supports single-input models; {model.name!r} has {len(model.inputs)}.")
    if weight_formats is None:
        weight_formats = WEIGHT_FORMATS[:2] if len(model.outputs) > 1 else WEIGHT_FORMATS
    elif len(model.outputs) > 1 and "tensorflow_saved_model_bundle" in weight_formats:
        raise ValueError(f"weight_formats cannot hold 'tensorflow_saved_model_bundle' for {model.name!r} with "
                         f"{len(model.outputs)} outputs: {_UNORDERED_SAVEDMODEL}; leave it out (the default does).")

    import keras

    from emzoo import __version__
    from emzoo.hub.card import model_card
    from emzoo.inference.receptive import receptive_field
    from emzoo.io.normalize import normalize
    from emzoo.registry import entry_info, model_kind_of

    info = entry_info(meta["entry"])
    rank = len(model.inputs[0].shape) - 2
    in_axes = ["z", "y", "x"][3 - rank:]
    # An axis is parameterised where the model was built for any size and the export graph lets it vary.
    signature = input_signature(model)[0].shape
    free = tuple(model.inputs[0].shape[1 + i] is None and signature[1 + i] is None for i in range(rank))
    divisor = tuple(meta.get("input", {}).get("divisor") or info.divisor or (1,) * rank)
    step = tuple(int(d) for d in divisor)
    out_axes = ["z", "y", "x"][3 - (rank - (model_kind_of(model) == "3D->2D")):]
    try:
        halo = tuple(int(h) for h in receptive_field(model))
    except ValueError:  # an unknown layer: the preset's recorded halo
        recorded = meta.get("halo") or 0
        halo = tuple(recorded) if isinstance(recorded, (list, tuple)) else (int(recorded),) * len(out_axes)
    margins = dict(zip(out_axes, halo, strict=False))

    if test_input is None:
        shape = _test_shape(model, step, tuple(margins.get(a, 0) for a in in_axes), free)
        test_input = _synthetic_raw(shape, meta.get("normalization"))[None]
    x = np.asarray(test_input, dtype=np.float32)
    if x.ndim != rank + 2 or x.shape[-1] != model.inputs[0].shape[-1]:
        raise ValueError(f"test_input must have shape (1, {', '.join(in_axes)}, channels) = rank {rank + 2} with "
                         f"{model.inputs[0].shape[-1]} channels, got {x.shape}.")
    y = model(normalize(x, meta.get("normalization")), training=False)
    ys = [np.asarray(v) for v in (y if isinstance(y, (list, tuple)) else [y])]

    target = Path(path)
    with tempfile.TemporaryDirectory(prefix="emzoo-bioimageio-") as work_dir:
        work = Path(work_dir)
        np.save(work / "test_input.npy", x)
        for k, v in enumerate(ys):
            np.save(work / f"test_output{k}.npy", v)
        _cover(x, ys[0], work / "cover.png")
        config = {"emzoo_version": __version__, "keras_version": keras.__version__}
        (work / "README.md").write_text(model_card(meta, config).split("---\n", 2)[-1])

        in_spec = [spec.BatchAxis()]
        for i, axis in enumerate(in_axes):
            # The smallest tile is the test tile: its output must exceed twice the halo (bioimage.io checks it).
            size = spec.ParameterizedSize(min=int(x.shape[1 + i]), step=step[i]) if free[i] else int(x.shape[1 + i])
            in_spec.append(spec.SpaceInputAxis(id=spec.AxisId(axis), size=size))
        in_spec.append(spec.ChannelAxis(channel_names=[spec.Identifier("raw")] if x.shape[-1] == 1 else
                                        [spec.Identifier(f"raw{c}") for c in range(x.shape[-1])]))
        inputs = [spec.InputTensorDescr(
            id=spec.TensorId("raw"), axes=in_spec, test_tensor=spec.FileDescr(source=work / "test_input.npy"),
            description=f"raw EM image, normalised as {json.dumps(meta.get('normalization'))}",
            preprocessing=preprocessing_steps(meta.get("normalization"), in_axes))]
        out_names = list(info.output_names) or ["prob"]
        outputs = [spec.OutputTensorDescr(
            id=spec.TensorId(out_names[k] if k < len(out_names) else f"output{k}"),
            axes=_output_axes(spec, model, k, in_axes, x.shape[1:], step, margins, free,
                              _class_names(meta, v.shape[-1])),
            test_tensor=spec.FileDescr(source=work / f"test_output{k}.npy"),
            description=f"{meta.get('output_activation') or 'model'} output {k}") for k, v in enumerate(ys)]

        write_keras(model, work / "model.keras")
        import tensorflow as tf  # noqa: TID251  (the versions the weights were written with)

        weights: dict[str, Any] = {"keras_v3": spec.KerasV3WeightsDescr(
            source=work / "model.keras", keras_version=spec.Version(keras.__version__),
            backend=(keras.backend.backend(), spec.Version(tf.__version__)),
            comment="needs `pip install emzoo` (custom layers registered under the 'emzoo' package)")}
        if "onnx" in weight_formats:
            write_onnx(model, work / "model.onnx", opset=opset)
            import onnx

            version = max(o.version for o in onnx.load(str(work / "model.onnx")).opset_import if o.domain in ("",
                                                                                                          "ai.onnx"))
            weights["onnx"] = spec.OnnxWeightsDescr(source=work / "model.onnx", opset_version=version,
                                                    parent="keras_v3")
        if "tensorflow_saved_model_bundle" in weight_formats:
            _export_savedmodel_dict(model, work / "saved_model")
            bundle = shutil.make_archive(str(work / "tf_saved_model"), "zip", work / "saved_model")
            weights["tensorflow_saved_model_bundle"] = spec.TensorflowSavedModelBundleWeightsDescr(
                source=Path(bundle), tensorflow_version=spec.Version(tf.__version__), parent="keras_v3")

        data = meta.get("training_data") or {}
        training = None
        if data.get("name"):
            from bioimageio.spec.dataset.v0_3 import DatasetDescr

            training = DatasetDescr(name=str(data["name"]), format_version=DatasetDescr.implemented_format_version,
                                    type="dataset",
                                    description=f"emzoo dataset {data['name']}"
                                                + (f" (sha256 {data['sha256']})" if data.get("sha256") else ""))
        descr = spec.ModelDescr(
            format_version=spec.ModelDescr.implemented_format_version, type="model",
            name=_package_name(meta),
            description=meta.get("description") or f"emzoo preset of {meta['entry']} ({info.paper}).",
            authors=[spec.Author(name=a) for a in (authors or ["emzoo contributors"])],
            cite=_citations(info), license=_license(meta, license),
            documentation=spec.FileDescr(source=work / "README.md"),
            covers=[spec.FileDescr(source=work / "cover.png")],
            tags=["emzoo", "electron-microscopy", "segmentation", meta["entry"], *(meta.get("datasets") or [])],
            inputs=inputs, outputs=outputs, training_data=training,
            weights=spec.WeightsDescr(**weights),
            config={"emzoo": {"entry": meta["entry"], "load": f"emzoo.load({meta.get('name') or meta['entry']!r})"}},
        )
        from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder

        if target.suffix.lower() == ".zip":
            with atomic_file(target) as tmp:
                save_bioimageio_package(descr, output_path=tmp)
        else:
            with atomic_dir(target) as tmp:
                save_bioimageio_package_as_folder(descr, output_path=tmp)
    return target
