"""``predict``: any zoo model (2D, multi-frame, 3D, valid-convolution) or ensemble on an image of any size."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from emzoo._reshape import free_input_shape
from emzoo.inference.ensemble import Ensemble, _Accumulator
from emzoo.inference.postprocess import apply_postprocess
from emzoo.inference.progress import progress_bar
from emzoo.inference.runner import ModelRunner
from emzoo.inference.tiling import Source, make_plan, predict_region, window_voxels
from emzoo.inference.tta import tta_transforms
from emzoo.io.normalize import resolve_normalization
from emzoo.io.volume import Volume, check_array

__all__ = ["predict", "foreground", "resolve_model", "make_runner", "data_layout", "check_tiling_args"]

# Voxels of input per predict batch without a memory estimate (4 tiles of 512², 4 of 64³).
_BATCH_VOXELS = 1 << 20
# Voxels per slab when a lazy (Zarr/HDF5/dask) input is predicted in memory slab by slab.
_SLAB_VOXELS = 1 << 26


def _relaxed_shape(model: Any) -> tuple[int | None, ...] | None:
    """The model's input shape with free y/x (and z for 3D nets), or None if nothing is fixed."""
    relaxed = free_input_shape(model)
    return None if relaxed == tuple(model.inputs[0].shape[1:]) else relaxed


def resolve_model(model: Any) -> Any:
    """A ``keras.Model`` from a model, an entry name, ``entry.tag``, ``hf://`` URI, preset folder or ``.keras`` file.

    Names are loaded with :func:`emzoo.load`; when the preset fixes the tile size, it is rebuilt with a free input
    size if the architecture allows (any tile size can then be used), keeping the same weights and metadata.
    """
    if isinstance(model, (str, os.PathLike)):
        from emzoo.hub.presets import load

        loaded = load(model)
        relaxed = _relaxed_shape(loaded)
        if relaxed is not None and not str(model).endswith(".keras"):
            try:
                free = load(model, input_shape=relaxed)
            except (ValueError, TypeError, KeyError):
                return loaded  # the architecture needs its fixed size (e.g. net2d3d's crops)
            object.__setattr__(free, "emzoo_metadata", getattr(loaded, "emzoo_metadata", {}))
            return free
        return loaded
    if hasattr(model, "predict_on_batch") and hasattr(model, "inputs"):
        return model
    raise TypeError(f"expected a keras.Model, an emzoo entry name, a preset folder, a .keras file or an Ensemble; "
                    f"got {type(model).__name__}.")


def make_runner(model: Any, precision: str = "float32") -> ModelRunner:
    """A :class:`~emzoo.inference.runner.ModelRunner` for ``model`` (resolved with :func:`resolve_model`), with
    the registry's divisor when the preset names its entry.

    ``precision``: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (:func:`~emzoo.inference.effective.auto_precision`:
    bfloat16 only where the preset measured it faster and as accurate, on a CPU that has it).
    """
    model = resolve_model(model)
    if precision == "auto":
        from emzoo.inference.measured import auto_precision

        precision = auto_precision(model)
    meta = dict(getattr(model, "emzoo_metadata", None) or {})
    divisor = None
    if isinstance(meta.get("input"), dict) and meta["input"].get("divisor"):
        divisor = tuple(int(d) for d in meta["input"]["divisor"])
    elif meta.get("entry"):
        from emzoo.registry import entry_info

        try:
            divisor = entry_info(str(meta["entry"])).divisor or None
        except KeyError:
            divisor = None
    return ModelRunner(model, divisor=divisor, precision=precision)


def data_layout(shape: tuple[int, ...], runner: ModelRunner, axes: str | None = None) -> tuple[bool, bool]:
    """``(has_z, has_c)`` of an input array for ``runner``'s model.

    ``axes`` (a :class:`~emzoo.io.Volume`'s ``"ZYX"``, ``"YXC"``...) decides when given. Otherwise: a trailing
    axis equal to the model's input channels is the channel axis when the rank allows it; 2D nets take ``(Y, X)``
    images and ``(Z, Y, X)`` stacks (predicted slice by slice); 3D nets need ``(Z, Y, X)``.

    Raises
    ------
    ValueError
        If the rank or channel count does not fit the model, or (without ``axes``) a ``(Y, X, 3)``/``(Y, X, 4)``
        array for a model taking another channel count: colour image or 3 slices with z last? ``axes`` decides.
    """
    nd = len(shape)
    c_in = runner.in_channels
    if axes:
        has_z, has_c = "Z" in axes, "C" in axes
    elif nd == 3 and shape[-1] in (3, 4) and shape[-1] != c_in and min(shape[:2]) > shape[-1]:
        raise ValueError(f"ambiguous input of shape {shape} for a {c_in}-channel model: is the last axis "
                         f"{shape[-1]} colour channels or {shape[-1]} slices? Pass axes='YXC' (colour: convert it "
                         "to grayscale first) or axes='ZYX' (a stack, z first), or give a (Z, Y, X) array.")
    elif nd == 4:
        has_z, has_c = True, True
    elif nd == 3:
        has_c = shape[-1] == c_in and (c_in > 1 or runner.kind == "2d")
        has_z = not has_c
    elif nd == 2:
        has_z, has_c = False, False
    else:
        has_z, has_c = False, False
    spatial = nd - int(has_c)
    kind_name = {"2d": "2D", "multiframe": "multi-frame", "3d": "3D"}[runner.kind]
    if spatial not in (2, 3) or (runner.kind == "3d" and not has_z):
        want = "(Z, Y, X) volumes" if runner.kind == "3d" else "(Y, X) images or (Z, Y, X) stacks"
        raise ValueError(f"wrong number of dimensions for a {kind_name} model: got an array of shape {shape}, the "
                         f"model takes {want}" + (f" with {c_in} channels last" if c_in > 1 else "") + ".")
    channels = shape[-1] if has_c else 1
    if channels != c_in:
        raise ValueError(f"the model takes {c_in} input channel(s) but the array of shape {shape} has {channels}; "
                         + ("add a trailing channel axis." if c_in > 1 else "convert it to one channel first."))
    return has_z, has_c


def _spec(runner: ModelRunner, normalization: Any) -> Any:
    if isinstance(normalization, str) and normalization == "auto":
        return runner.metadata.get("normalization")
    return normalization


def _check_tta_shape(plan: Any, runner: ModelRunner, transforms: Sequence[Any]) -> None:
    if any(t.rot % 2 for t in transforms) and plan.n_in[1] != plan.n_in[2]:
        if runner.fixed[1] is not None or runner.divisor[1] != runner.divisor[2]:
            raise ValueError(f"rotating TTA needs square windows but the model takes {plan.n_in[1:]} (y, x); use "
                             "tta='flips' or a model with a free/square input.")


def check_tiling_args(*, tile: Any, halo: Any, batch_size: Any,
                      names: dict[str, str] | None = None) -> tuple[Any, ...]:
    """Validate ``tile`` (ints > 0), ``halo`` (``"exact"`` or ints >= 0) and ``batch_size`` (int >= 1), each
    optional; returns them as ints. ``names`` renames the arguments in messages (``{"batch_size": "--batch-size"}``
    for the CLI)."""
    from emzoo._validate import check_int, check_ints

    names = names or {}
    tile = check_ints(tile, names.get("tile", "tile"), minimum=1)
    if isinstance(halo, str):
        if halo != "exact":
            raise ValueError(f"{names.get('halo', 'halo')} must be 'exact', None or an int >= 0 (or one per "
                             f"axis), got {halo!r}")
    else:
        halo = check_ints(halo, names.get("halo", "halo"), minimum=0)
    if batch_size is not None:
        batch_size = check_int(batch_size, names.get("batch_size", "batch_size"), minimum=1)
    return tile, halo, batch_size


def default_batch_size(plan: Any, runner: ModelRunner | None = None, workers: int = 1) -> int:
    """Windows per model call: as many as fit the memory budget shared by ``workers`` concurrent calls
    (:func:`~emzoo.inference.tiling.window_voxels`), or about 2**20 input voxels without a runner; 1 to 64."""
    voxels = _BATCH_VOXELS if runner is None else window_voxels(runner) // max(1, int(workers))
    return int(max(1, min(64, voxels // max(1, math.prod(plan.n_in)))))


def _predict_single(runner: ModelRunner, data: Any, axes: str | None, *, tile: Any, halo: Any, blend: str,
                    tta: str | None, batch_size: int | None, normalization: Any, progress: bool,
                    description: str) -> np.ndarray:
    has_z, has_c = data_layout(tuple(int(s) for s in data.shape), runner, axes)
    spec = resolve_normalization(data, _spec(runner, normalization))
    source = Source(data, has_z=has_z, has_c=has_c, spec=spec)
    plan = make_plan(runner, source.shape, tile=tile, halo=halo, blend=blend)
    transforms = tta_transforms(tta, runner.kind)
    _check_tta_shape(plan, runner, transforms)
    batch = int(batch_size) if batch_size else default_batch_size(plan, runner)
    z_size = source.shape[0]
    if isinstance(data, np.ndarray):
        slabs = [(0, z_size)]
    else:
        # Lazy input: slabs of whole z steps, each read once (prefetch), so memory stays bounded.
        step = plan.axes[0].step
        per = max(1, _SLAB_VOXELS // max(1, step * source.shape[1] * source.shape[2])) * step
        slabs = [(z, min(z + per, z_size)) for z in range(0, z_size, per)]
    regions = [((z0, z1), (0, source.shape[1]), (0, source.shape[2])) for z0, z1 in slabs]
    total = sum(len(plan.windows(r)) for r in regions)
    out = np.empty((*source.shape, runner.num_classes), np.float32)
    with progress_bar(total, description, progress) as advance:
        for region in regions:
            out[region[0][0]:region[0][1]] = predict_region(
                runner, source, plan, region, transforms=transforms, batch_size=batch,
                prefetch=not isinstance(data, np.ndarray), advance=advance)
    return out if has_z else out[0]


_AXES = ("YX", "ZYX", "YXC", "ZYXC")


def _data_and_axes(array: Any, axes: str | None) -> tuple[Any, str | None]:
    """The array behind ``array`` (a Volume's data) and its axes: ``axes`` if given (checked against the rank
    and a Volume's own axes), else the Volume's, else None (guessed later by :func:`data_layout`)."""
    own = array.axes if isinstance(array, Volume) else None
    data = array.data if isinstance(array, Volume) else array
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if axes is None:
        return data, own or None
    if not isinstance(axes, str) or axes.upper() not in _AXES:
        raise ValueError(f"axes must be one of {', '.join(_AXES)}, got {axes!r}")
    axes = axes.upper()
    if len(axes) != len(data.shape):
        raise ValueError(f"axes={axes!r} names {len(axes)} axes but the array has shape {tuple(data.shape)}; give "
                         "one letter per axis.")
    if own and own != axes:
        raise ValueError(f"axes={axes!r} contradicts the Volume's own axes {own!r}; drop axes= or fix the Volume.")
    return data, axes


def predict(
    model: Any,
    array: Any,
    *,
    tile: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | str | None = None,
    blend: str = "spline",
    tta: str | None = None,
    batch_size: int | None = None,
    normalization: Any = "auto",
    precision: str = "auto",
    out: Any = None,
    progress: bool = True,
    axes: str | None = None,
    postprocess: bool = True,
) -> Any:
    """Predict class probabilities for an image or volume of any size, tile by tile.

    Parameters
    ----------
    model : keras.Model, str or Ensemble
        A model, an entry name / ``entry.tag`` / ``hf://`` URI / preset folder / ``.keras`` file (loaded with
        :func:`emzoo.load`), or an :class:`Ensemble`.
    array : array_like or Volume
        ``(Y, X)`` image, ``(Z, Y, X)`` stack or volume, optionally with channels last; numpy, dask, zarr or h5py
        (lazy inputs are read slab by slab). 2D nets predict a stack slice by slice; multi-frame nets (CDeep3M
        3fm/5fm) take each slice's neighbours as context, mirrored at the ends; 3D nets tile in z too.
    tile : int or tuple, optional
        Model input window per axis (int, ``(y, x)`` or ``(z, y, x)``), rounded up to the model's divisor. A model
        with a fixed input size always uses that. Default: the largest window that fits half of the free
        memory (:mod:`~emzoo.inference.budget`; ``EMZOO_INFERENCE_MEMORY`` overrides), the whole image if it fits.
    halo : int, tuple or "exact", optional
        Context on each side of a window's core. Default: the preset's measured effective halo (the smallest at
        which tiles stay within 1e-3 of the whole image on its test data, :mod:`~emzoo.inference.effective`), else
        ``"exact"``: the receptive-field margin (:func:`~emzoo.inference.receptive.receptive_field`), which makes
        the tiled result equal the whole-image result. Random-weight and fine-tuned models always get ``"exact"``.
        A smaller halo is faster but shows seams.
    blend : {"spline", "linear", "none"}
        ``"none"``: each voxel from the one window core that owns it. ``"spline"`` (Franco-Barranco et al.'s
        second-order spline window) / ``"linear"`` (a tent): the trustworthy parts of overlapping windows (at least
        a halo inside them) are cross-faded. Every mode equals the whole image at the default halo.
    tta : {None, "flips", "d4", "d4+z"}
        Test-time augmentation (:mod:`~emzoo.inference.tta`): 4/8 flips, the 8 in-plane D4 transforms, or D4 times
        the z reversal (16, 3D and multi-frame nets).
    batch_size : int, optional
        Windows per model call, at least 1 (default about 2**20 input voxels per call).
    normalization : "auto", dict, str or None
        ``"auto"``: the preset's recorded spec (``model.emzoo_metadata["normalization"]``), none for a plain
        model. Per-image statistics are taken over the whole ``array``.
    precision : {"auto", "float32", "bfloat16"}
        Compute precision. ``"auto"``: bfloat16 where the preset measured it faster and as accurate (foreground
        F1 within 0.002 of float32 on its test data) and the CPU computes bfloat16 natively (AMX/AVX512-BF16,
        TensorFlow, no GPU); float32 otherwise.
    out : array_like, optional
        Array of the output shape to write the result into (returned).
    progress : bool
        Show a progress bar on stderr.
    axes : {"YX", "ZYX", "YXC", "ZYXC"}, optional
        What each axis of ``array`` is (default: a :class:`~emzoo.io.Volume`'s ``axes``, else guessed from the
        shape and the model's input channels). Required for a ``(Y, X, 3)`` or ``(Y, X, 4)`` array given to a
        model with another channel count, which could be a colour image or a stack with z last.
    postprocess : bool
        Apply the preset's recorded post-processing (``model.emzoo_metadata["postprocess"]``: predicted objects
        more than 1.5 times longer than the longest labelled training object get foreground probability 0,
        :mod:`~emzoo.inference.postprocess`); its scores were measured with it. False: the network's output as is.

    Returns
    -------
    numpy.ndarray
        float32 probabilities of shape ``(*spatial, C)``, ``spatial`` as in ``array`` and ``C`` the model's
        classes (1 for a sigmoid net). :func:`foreground` gives the foreground map of binary models. An ensemble
        in ``"majority"`` mode returns vote fractions.

    Raises
    ------
    ValueError
        Wrong rank or channels for the model, an ambiguous ``(Y, X, 3)`` array without ``axes``, NaN/Inf (with
        their count), empty or non-numeric input, bad options, or a model that predicted NaN/Inf.

    Examples
    --------
    >>> import numpy as np, emzoo
    >>> model = emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))
    >>> emzoo.predict(model, np.zeros((100, 70), "float32"), progress=False).shape
    (100, 70, 1)
    """
    tile, halo, batch_size = check_tiling_args(tile=tile, halo=halo, batch_size=batch_size)
    data, axes = _data_and_axes(array, axes)
    check_array(data, source="input")
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
    if not isinstance(postprocess, bool):
        raise ValueError(f"postprocess must be True or False, got {postprocess!r}.")
    kwargs = dict(tile=tile, halo=halo, blend=blend, tta=tta, batch_size=batch_size, normalization=normalization,
                  progress=progress)
    if isinstance(model, Ensemble):
        selected = model.selected
        runners = [make_runner(model.members[i], precision) for i in selected]
        acc = _Accumulator(model, max(r.num_classes for r in runners))
        for n, runner in enumerate(runners, 1):
            member = _predict_single(runner, data, axes, description=f"member {n}/{len(runners)}", **kwargs)
            acc.add(_postprocess(member, runner, postprocess))
        result = acc.result()
    else:
        runner = make_runner(model, precision)
        result = _postprocess(_predict_single(runner, data, axes, description="predict", **kwargs), runner,
                              postprocess)
    if not np.isfinite(result).all():
        bad = int(result.size - np.count_nonzero(np.isfinite(result)))
        raise ValueError(f"the model predicted {bad} NaN/Inf value(s); nothing was written or returned (the input "
                         "was finite). Check the model's weights and the input normalisation.")
    if out is not None:
        if tuple(out.shape) != result.shape:
            raise ValueError(f"out has shape {tuple(out.shape)} but the prediction is {result.shape}.")
        out[...] = result
        return out
    return result


def _postprocess(prob: np.ndarray, runner: ModelRunner, enabled: bool) -> np.ndarray:
    return apply_postprocess(prob, runner.metadata.get("postprocess")) if enabled else prob


def foreground(prob: np.ndarray, channel: int | None = None) -> np.ndarray:
    """Foreground probability map from :func:`predict`'s ``(*spatial, C)`` output.

    Parameters
    ----------
    prob : numpy.ndarray
        Probabilities, classes last.
    channel : int, optional
        Class to return; default: channel 0 of a 1-channel sigmoid output, channel 1 of a 2-class softmax.

    Returns
    -------
    numpy.ndarray
        ``prob`` without the class axis.

    Raises
    ------
    ValueError
        For more than two classes without ``channel`` (which class is "foreground" is then the user's choice).

    Examples
    --------
    >>> foreground(np.array([[[0.3, 0.7]]])).tolist()
    [[0.7]]
    """
    classes = prob.shape[-1]
    if channel is None:
        if classes > 2:
            raise ValueError(f"the output has {classes} classes; pick the foreground with channel=<index> (or use "
                             "prob.argmax(-1) for a label map).")
        channel = classes - 1
    if not -classes <= channel < classes:
        raise ValueError(f"channel {channel} out of range for {classes} classes.")
    return prob[..., channel]
