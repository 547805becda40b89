"""The model registry: one decorator fills it, every other part of emzoo reads it.

Modelled on timm's registry: each family file registers its entries with :func:`register_entry`, the
``emzoo.models`` package imports every family module so registration happens at import time, and names may carry a
weights tag after the first dot (``emnet_v2_4x.cardiac_mito``).

The documented parameter and FLOP figures live beside each builder (``params=...``, ``gflops=...``); the test-suite
builds every entry and checks those figures against ``model.count_params()`` and :func:`emzoo.flops.count_flops`, so
``emzoo list`` can print them without building 30 networks.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "EntryInfo",
    "register_entry",
    "list_models",
    "get_entry",
    "build",
    "info",
    "entry_info",
    "split_name_tag",
    "check_input_shape",
    "MODEL_KINDS",
    "model_kind",
    "model_kind_of",
    "kind_key",
    "KIND_KEYS",
]

#: The three kinds of model, spelled as ``EntryInfo.dims``: one image in and out, a stack of frames in and the centre
#: image out (CDeep3M 3fm/5fm), a volume in and out.
MODEL_KINDS = ("2D", "3D->2D", "3D")
#: The same kinds as lower-case keys, as training (``mode``, recorded in histories) and inference (``Runner.kind``)
#: spell them in code and file names.
KIND_KEYS = {"2D": "2d", "3D->2D": "multiframe", "3D": "3d"}
# Every accepted spelling, lower-cased, to the registry's (``"frames"`` was inference's until 2026-12).
_KIND_SPELLINGS = {"2d": "2D", "3d->2d": "3D->2D", "multiframe": "3D->2D", "multi-frame": "3D->2D",
                   "frames": "3D->2D", "3d": "3D"}


def model_kind(spelling: str) -> str:
    """The registry's spelling (one of :data:`MODEL_KINDS`) of any spelling of a model kind used in emzoo.

    Raises
    ------
    ValueError
        For a string that names no kind, listing the accepted ones.

    Examples
    --------
    >>> model_kind("2d"), model_kind("frames"), model_kind("multiframe"), model_kind("3D")
    ('2D', '3D->2D', '3D->2D', '3D')
    """
    kind = _KIND_SPELLINGS.get(str(spelling).lower())
    if kind is None:
        raise ValueError(f"unknown model kind {spelling!r}; use one of {', '.join(MODEL_KINDS)} "
                         f"(or {', '.join(sorted(_KIND_SPELLINGS))}).")
    return kind


def kind_key(spelling: str) -> str:
    """The lower-case key (``"2d"``, ``"multiframe"``, ``"3d"``) of any spelling of a model kind.

    Examples
    --------
    >>> kind_key("3D->2D"), kind_key("frames"), kind_key("3D")
    ('multiframe', 'multiframe', '3d')
    """
    return KIND_KEYS[model_kind(spelling)]


def model_kind_of(model: Any) -> str:
    """The kind of a built model, from the ranks of its first input and output (one of :data:`MODEL_KINDS`).

    Examples
    --------
    >>> model_kind_of(build("cdeep3m_5fm", input_shape=(5, 32, 32, 1)))  # doctest: +SKIP
    '3D->2D'
    """
    in_rank = len(model.inputs[0].shape) - 2
    outputs = model.outputs
    out_rank = len((outputs[0] if isinstance(outputs, (list, tuple)) else outputs).shape) - 2
    kinds = {(2, 2): "2D", (3, 2): "3D->2D", (3, 3): "3D"}
    if (in_rank, out_rank) not in kinds:
        raise ValueError(f"model {model.name!r} maps {in_rank}D inputs to {out_rank}D outputs; emzoo's models are "
                         f"{', '.join(MODEL_KINDS)}.")
    return kinds[(in_rank, out_rank)]


@dataclass(frozen=True)
class EntryInfo:
    """Facts of one registry entry.

    Attributes
    ----------
    name : str
        Entry name, e.g. ``"emnet_v2_4x"``.
    family : str
        Family module, e.g. ``"emnet"``.
    dims : str
        ``"2D"``, ``"3D"`` or ``"3D->2D"`` (multi-frame input, 2D output).
    input_shape : tuple of int
        Default (reference) input shape without the batch axis, channels last, z first for 3D.
    num_classes : int
        Output classes (1 means one sigmoid channel).
    params : int
        Documented total parameter count (trainable + non-trainable) at the default ``num_classes``.
    trainable_params : int or None
        Documented trainable parameter count, where the source gives one.
    gflops : float
        Documented GFLOPs (2 x MACs of convolutions, transposed convolutions and dense layers) at ``flops_input``.
    flops_input : tuple of int
        Input shape (with batch 1) the GFLOPs were counted at.
    divisor : tuple of int
        Each spatial side of the input must be a multiple of the matching value.
    paper : str
        Short citation, e.g. ``"Khadangi et al. 2021"``.
    reference : str
        Full reference with DOI.
    notes : str
        Deviations, reconstructions and quirks kept on purpose.
    output_names : tuple of str
        Names of the model outputs when there are several (the first is the main one).
    test_input_shape : tuple of int
        Smallest convenient input for smoke tests (derived from ``divisor`` unless the builder needs more).
    weights : tuple of str
        Published weight tags, default first: filled by :func:`emzoo.info` from the weights manifest, empty in the
        registry's own record (:func:`entry_info`).
    """

    name: str
    family: str
    dims: str
    input_shape: tuple[int, ...]
    num_classes: int
    params: int
    gflops: float
    flops_input: tuple[int, ...]
    paper: str
    reference: str
    divisor: tuple[int, ...] = ()
    trainable_params: int | None = None
    notes: str = ""
    output_names: tuple[str, ...] = ()
    test_input_shape: tuple[int, ...] = ()
    weights: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (JSON-serialisable)."""
        return asdict(self)

    def gflops_at(self, spatial: tuple[int, ...]) -> float:
        """GFLOPs at another input size, scaled by the voxel count.

        Exact for fully convolutional entries (every 2D entry); approximate for valid-convolution nets, whose
        output shrinks by a fixed margin.

        Examples
        --------
        >>> round(entry_info("unet2d_fb").gflops_at((512, 512)), 1)
        24.1
        """
        reference = self.flops_input[1:-1]
        if len(spatial) != len(reference):
            raise ValueError(f"{self.name}: expected {len(reference)} spatial sizes, got {spatial}.")
        return self.gflops * math.prod(spatial) / math.prod(reference)


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., Any]
    info: EntryInfo


_REGISTRY: dict[str, _Entry] = {}


def register_entry(
    *,
    family: str,
    dims: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    params: int,
    gflops: float,
    paper: str,
    reference: str,
    divisor: tuple[int, ...] = (),
    trainable_params: int | None = None,
    flops_input: tuple[int, ...] | None = None,
    notes: str = "",
    output_names: tuple[str, ...] = (),
    test_input_shape: tuple[int, ...] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a builder under its function name.

    The decorated function must accept ``input_shape``, ``num_classes`` and arbitrary keyword overrides and return an
    uncompiled ``keras.Model``.

    Examples
    --------
    >>> @register_entry(family="toy", dims="2D", input_shape=(16, 16, 1), num_classes=1, params=10,
    ...                 gflops=0.0, paper="-", reference="-")  # doctest: +SKIP
    ... def toy_net(input_shape=(16, 16, 1), num_classes=1, **kw): ...
    """
    if dims not in MODEL_KINDS:
        raise ValueError(f"dims must be one of {', '.join(MODEL_KINDS)}, got {dims!r}")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__
        if name in _REGISTRY:
            warnings.warn(f"emzoo entry {name!r} registered twice; the second registration wins", stacklevel=2)
        record = EntryInfo(
            name=name,
            family=family,
            dims=dims,
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            params=params,
            trainable_params=trainable_params,
            gflops=gflops,
            flops_input=tuple(flops_input) if flops_input else (1, *input_shape),
            divisor=tuple(divisor),
            paper=paper,
            reference=reference,
            notes=notes,
            output_names=tuple(output_names),
            test_input_shape=tuple(test_input_shape) if test_input_shape else _small_shape(input_shape, divisor),
        )
        _REGISTRY[name] = _Entry(fn=fn, info=record)
        module = __import__(fn.__module__, fromlist=["__all__"])
        all_list = getattr(module, "__all__", None)
        if isinstance(all_list, list) and name not in all_list:
            all_list.append(name)
        return fn

    return decorator


def _small_shape(input_shape: tuple[int, ...], divisor: tuple[int, ...]) -> tuple[int, ...]:
    spatial = input_shape[:-1]
    div = divisor or (1,) * len(spatial)
    small = tuple(min(s, max(2 * d, 16)) if s > 1 else s for s, d in zip(spatial, div, strict=True))
    return (*small, input_shape[-1])


def _ensure_loaded() -> None:
    # Importing the models package imports every family module, which fills the registry.
    import emzoo.models  # noqa: F401


def split_name_tag(name: str) -> tuple[str, str | None]:
    """Split ``"entry.tag"`` into ``("entry", "tag")``; a bare entry gives ``("entry", None)``.

    Examples
    --------
    >>> split_name_tag("emnet_v2_4x.cardiac_mito")
    ('emnet_v2_4x', 'cardiac_mito')
    >>> split_name_tag("unet")
    ('unet', None)
    """
    entry, sep, tag = name.partition(".")
    return entry, (tag if sep else None)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered entries, sorted, optionally filtered by a shell-style pattern.

    Parameters
    ----------
    pattern : str, optional
        ``fnmatch`` pattern such as ``"emnet*"`` or ``"*3d*"``.

    Returns
    -------
    list of str

    Examples
    --------
    >>> "emnet_v2_4x" in list_models("emnet*")
    True
    """
    _ensure_loaded()
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def get_entry(name: str) -> _Entry:
    """Return the registry record of ``name`` (a tag after a dot is ignored).

    Raises
    ------
    KeyError
        If the entry does not exist; the message lists the closest names.
    """
    _ensure_loaded()
    entry, _ = split_name_tag(name)
    if entry not in _REGISTRY:
        close = difflib.get_close_matches(entry, list(_REGISTRY), n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown emzoo entry {entry!r}.{hint} Run `emzoo list` to see all entries.")
    return _REGISTRY[entry]


def entry_info(name: str) -> EntryInfo:
    """Registered facts of one entry: reference, input spec, documented params/FLOPs (``weights`` left empty).

    The published weight tags live in the hub's manifest, which the registry does not read (it is a leaf every
    module may import); :func:`emzoo.info` returns the record with them.

    Examples
    --------
    >>> entry_info("unet").params
    31031685
    """
    return get_entry(name).info


def info(name: str) -> EntryInfo:
    """Deprecated: use :func:`emzoo.info` (with published weights) or :func:`entry_info` (registry facts only).

    Returns :func:`entry_info`, so ``weights`` is empty: the registry no longer reads the weights manifest.
    """
    warnings.warn("emzoo.registry.info is deprecated and no longer lists published weights: call emzoo.info(name) "
                  "for the full record, or emzoo.registry.entry_info(name) for the registry's facts only.",
                  DeprecationWarning, stacklevel=2)
    return entry_info(name)


def check_input_shape(
    input_shape: tuple[int | None, ...], *, ndim: int, divisor: tuple[int, ...] = (), name: str = "model"
) -> tuple[int | None, ...]:
    """Validate an input shape (no batch axis, channels last) and return it as a tuple.

    Raises
    ------
    ValueError
        With the offending shape and the nearest valid one (the SMP pattern: say what to pad to).
    """
    shape = tuple(input_shape)
    if len(shape) != ndim:
        raise ValueError(
            f"{name}: input_shape must have {ndim} axes ({'(Z, Y, X, C)' if ndim == 4 else '(Y, X, C)'}), "
            f"got {shape}."
        )
    channels = shape[-1]
    if channels is None or channels < 1:
        raise ValueError(f"{name}: input_shape needs at least 1 channel, got {channels} in {shape}.")
    spatial = shape[:-1]
    div = divisor or (1,) * len(spatial)
    for size, d in zip(spatial, div, strict=True):
        if size is None:
            continue
        if size < 1 or size % d:
            padded = tuple(s if s is None else max(d, -(-s // d) * d) for s, d in zip(spatial, div, strict=True))
            raise ValueError(
                f"{name}: every spatial side must be a positive multiple of {div}, got {spatial}; "
                f"pad the input to {padded} (e.g. with numpy.pad mode='reflect')."
            )
    return shape


def build(
    name: str,
    input_shape: tuple[int | None, ...] | None = None,
    num_classes: int | None = None,
    **overrides: Any,
) -> Any:
    """Build an entry with random initial weights (not compiled).

    Parameters
    ----------
    name : str
        Entry name (a ``.tag`` suffix is accepted and ignored).
    input_shape : tuple of int, optional
        Input shape without the batch axis; defaults to the entry's reference shape.
    num_classes : int, optional
        Output classes; defaults to the entry's.
    **overrides
        Further keyword arguments of the family builder.

    Returns
    -------
    keras.Model

    Examples
    --------
    >>> model = build("emnet_v1_bn", input_shape=(64, 64, 1))
    >>> model.output_shape
    (None, 64, 64, 1)
    """
    entry = get_entry(name)
    kwargs: dict[str, Any] = dict(overrides)
    kwargs["input_shape"] = tuple(input_shape) if input_shape is not None else entry.info.input_shape
    kwargs["num_classes"] = num_classes if num_classes is not None else entry.info.num_classes
    if not isinstance(kwargs["num_classes"], int) or kwargs["num_classes"] < 1:
        raise ValueError(f"{entry.info.name}: num_classes must be a positive int, got {kwargs['num_classes']!r}.")
    return entry.fn(**kwargs)
