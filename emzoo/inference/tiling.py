"""Tiled prediction: cut the data into model windows with a halo, predict them in batches, stitch or blend them back.

The tiling reproduces one *whole-data pass*: the model run once on the data padded by a *border* on each side
(mirrored, ``numpy.pad(mode="reflect")``, computed by index arithmetic, never by padding the array) and up to its
divisor. The border is the halo, except with a preset's measured halo (``halo=None``), where it is 0: the data's
edges then get the model's own padding, as in ``model.predict`` on the image and in the one-window pass the
preset was scored with.

Geometry along each axis (data size ``N``, model window ``n_in``, output window ``n_out`` at offset ``off``,
halo ``h``, divisor ``D``, border ``lead``):

- the trusted part of a window (its *core*) starts ``trim = max(h, off)`` pixels in and is ``step`` long, where
  ``step`` is the largest multiple of ``D`` that stays ``h`` away from both window edges;
- the cores are the cells ``[k*step, (k+1)*step)`` of a grid, read by windows starting at ``k*step - trim``; the
  first window instead starts where the whole-data pass starts (``-lead``) and the last ends where it ends, each
  owning the cells up to its data edge, so no window reads a border the pass does not have. Every window starts on
  a multiple of ``D`` from the pass's start, so pooling grids line up with those of the pass.

An output pixel is *trustworthy* when it has at least ``h`` pixels of real (or mirrored) context on every side,
i.e. it lies at least ``h`` inside its window. With ``blend="none"`` each voxel comes from the one core that owns
it. With ``"linear"`` or ``"spline"`` every window contributes its trustworthy part, weighted by a window function
over that part, and the weighted sum is normalised; where the trustworthy parts of neighbours overlap they are
cross-faded. The halo-deep rim of a window is never used: it was the reason blended tiles did not equal the whole
image (issue 11). Every blend mode then equals the whole-data pass: to float rounding with ``h`` at least the
receptive-field margin (``halo="exact"``), within the preset's tolerance (1e-3) with its measured effective halo.

The window is the largest that fits the memory budget (:mod:`~emzoo.inference.budget`), the whole image when it
can, so the halo's share of the work is as small as the memory allows.

Per-image normalisation is resolved over the whole input first (:func:`~emzoo.io.normalize.resolve_normalization`),
so every window is scaled by the same numbers.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emzoo.inference.runner import ModelRunner, blend_window
from emzoo.inference.tta import Transform
from emzoo.io.normalize import normalize
from emzoo.io.volume import check_finite_values, is_lazy

__all__ = ["AxisPlan", "TilePlan", "make_plan", "window_voxels", "Source", "predict_region", "reflect_indices"]

_BLENDS = ("spline", "linear", "none")


def _roundup(n: int, d: int) -> int:
    return -(-int(n) // int(d)) * int(d)


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one axis (see the module notes).

    ``lead`` / ``lead_end``: mirrored context at the start / end of the data, the padding of the one whole-data
    pass the tiling reproduces (``trim`` / ``trim_after`` for a mirrored border of a full halo, ``off`` and the
    valid crop for none). ``end`` is where that pass's padded input ends; the last window ends there too.
    """

    size: int
    n_in: int
    n_out: int
    off: int
    trim: int
    step: int
    halo: int
    lead: int
    lead_end: int
    divisor: int = 1

    @property
    def end(self) -> int:
        """Data position just past the input of the whole-data pass (and of the last window)."""
        return -self.lead + _roundup(self.size + self.lead + self.lead_end, self.divisor)

    @property
    def first_cores(self) -> int:
        """Grid cores the first window owns: it starts where the whole-data pass starts (``-lead``), so with a
        border narrower than the halo it also owns the cores of the grid windows that would start before that."""
        return max(1, -(-(self.trim - self.lead) // self.step))

    @property
    def count(self) -> int:
        """Number of windows along the axis."""
        if self.n_in >= self.end + self.lead:
            return 1
        return 1 + max(1, -(-(self.end - self.n_in + self.trim) // self.step) - self.first_cores + 1)

    def in_start(self, k: int) -> int:
        """First input pixel read by window ``k``. Windows sit on a grid of ``step`` (their cores are grid cells),
        except that the first starts where the whole-data pass starts and the last ends where it ends: no window
        reads outside that pass's input, so none sees a border the pass does not have."""
        if k == 0:
            return -self.lead
        if k == self.count - 1:
            return self.end - self.n_in
        return (self.first_cores + k - 1) * self.step - self.trim

    def out_start(self, k: int) -> int:
        """Data position of the first output pixel of window ``k``."""
        return self.in_start(k) + self.off

    @property
    def trusted(self) -> tuple[int, int]:
        """Input-window range ``[a, b)`` of output pixels with ``halo`` context on both sides (inside the output)."""
        return max(self.halo, self.off), min(self.n_in - self.halo, self.off + self.n_out)

    def span(self, k: int, blend: bool) -> tuple[int, int]:
        """Data range window ``k`` writes: its core, or (blending) its trustworthy part; clipped to the data. The
        first and last windows also own the data's edges, where only the border's context exists."""
        if blend:
            a, b = self.trusted
            start = self.in_start(k)
            lo, hi = start + a, start + b
        else:
            cell = self.first_cores + k - 1
            lo, hi = cell * self.step, (cell + 1) * self.step
        lo, hi = (0 if k == 0 else lo), (self.size if k == self.count - 1 else hi)
        return max(lo, 0), min(hi, self.size)

    def windows_for(self, lo: int, hi: int, blend: bool) -> list[int]:
        """Windows whose span meets the data range ``[lo, hi)``."""
        if blend:
            a, b = self.trusted
            first = math.floor((lo + self.trim - b) / self.step)
            last = math.ceil((hi + self.trim - a) / self.step)
        else:
            first, last = lo // self.step - 1, (hi - 1) // self.step + 1
        # Grid cells to window indices, with a window of slack each side, plus the moved first and last windows;
        # then the exact test.
        shift = 1 - self.first_cores
        candidates = {*range(max(0, first + shift), min(self.count - 1, last + shift) + 1), 0, self.count - 1}
        return sorted(k for k in candidates if self.span(k, blend)[0] < hi and self.span(k, blend)[1] > lo)


@dataclass(frozen=True)
class TilePlan:
    """Tiling of a ``(Z, Y, X)`` data grid for one model."""

    axes: tuple[AxisPlan, AxisPlan, AxisPlan]
    blend: str

    @property
    def n_in(self) -> tuple[int, int, int]:
        """Model input window ``(z, y, x)``."""
        return tuple(a.n_in for a in self.axes)  # type: ignore[return-value]

    @property
    def halo(self) -> tuple[int, int, int]:
        """Halo used per axis (after any clamping to a fixed model input)."""
        return tuple(a.halo for a in self.axes)  # type: ignore[return-value]

    @property
    def n_tiles(self) -> int:
        """Total number of windows."""
        return math.prod(a.count for a in self.axes)

    def windows(self, region: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
        """Window indices contributing to ``region`` (a ``(start, stop)`` per axis)."""
        blend = self.blend != "none"
        ranges = [a.windows_for(lo, hi, blend) for a, (lo, hi) in zip(self.axes, region, strict=True)]
        return list(itertools.product(*ranges))


def _per_axis(value: int | Sequence[int] | None, what: str) -> tuple[int | None, int | None, int | None]:
    """An int (every spatial axis), (y, x) or (z, y, x) as a ``(z, y, x)`` triple (None: unset)."""
    if value is None:
        return (None, None, None)
    if isinstance(value, (int, np.integer)):
        return (int(value),) * 3
    values = tuple(None if v is None else int(v) for v in value)
    if len(values) == 2:
        return (None, *values)
    if len(values) == 3:
        return values  # type: ignore[return-value]
    raise ValueError(f"{what} must be an int, (y, x) or (z, y, x), got {value!r}")


def make_plan(
    runner: ModelRunner,
    shape: tuple[int, int, int],
    *,
    tile: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | str | None = None,
    blend: str = "spline",
    budget: int | None = None,
) -> TilePlan:
    """Choose the window size, halo and step along each axis of a ``(Z, Y, X)`` data grid.

    Parameters
    ----------
    runner : ModelRunner
    shape : tuple of int
        Data size ``(Z, Y, X)`` (``Z = 1`` for a single 2D image).
    tile : int or tuple, optional
        Model input window (rounded up to the divisor). Default: the largest window whose estimated activations
        fit ``budget`` (never more than one window over the whole data, never less than the halo plus a core of
        64 px (2D) / 16 px (3D) on each axis).
    halo : int, tuple, "exact" or None
        Context kept on each side of a window's core. ``None``: the preset's measured effective halo
        (:func:`~emzoo.inference.effective.preset_halo`) when it has one for these weights, else ``"exact"``;
        ``"exact"``: the receptive-field margin (:func:`~emzoo.inference.receptive.receptive_field`). Both are
        rounded up to a multiple of the divisor; an int is used as given.
    blend : {"spline", "linear", "none"}
    budget : int, optional
        Bytes one model call may use (default :func:`~emzoo.inference.budget.memory_budget`).

    Returns
    -------
    TilePlan

    Raises
    ------
    ValueError
        If a given tile leaves no core next to the halo (the message gives the smallest tile that works), or for
        a bad ``halo`` or ``blend``.

    Examples
    --------
    >>> import emzoo
    >>> from emzoo.inference.predict import make_runner
    >>> runner = make_runner(emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16)))
    >>> plan = make_plan(runner, (1, 300, 200), halo="exact")
    >>> plan.halo, plan.n_in  # the margin 27 rounded to the divisor 4; one window over the padded image
    ((0, 28, 28), (1, 356, 256))
    """
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {_BLENDS}, got {blend!r}")
    if isinstance(halo, str) and halo != "exact":
        raise ValueError(f"halo must be 'exact', None or an int >= 0 (or one per axis), got {halo!r}")
    tiles = _per_axis(tile, "tile")
    halos = (None, None, None) if isinstance(halo, str) else _per_axis(halo, "halo")
    default_halo = None
    if halo is None:
        from emzoo.inference.measured import preset_halo

        measured_halo = preset_halo(runner.source_model)
        default_halo = _per_axis(measured_halo, "preset halo") if measured_halo is not None else None
    n_in: list[int | None] = []
    h_used = []
    for a in range(3):
        div, fixed = int(runner.divisor[a]), runner.fixed[a]
        if a == 0 and runner.kind in ("2d", "multiframe"):
            n_in.append(int(fixed))  # 1 slice, or the frames of a multi-frame net
            h_used.append(int(fixed) // 2)
            continue
        h = halos[a]
        if h is None:
            h = default_halo[a] if default_halo and default_halo[a] is not None else runner.margin[a]
            # A multiple of the divisor pads both sides of the data alike, so a flipped or rotated window sees
            # the same pooling grid as the flipped image (TTA on windows = TTA on the whole image).
            h = _roundup(max(int(h), 0), div)
        h = max(int(h), 0)
        if fixed is not None:
            n_in.append(int(fixed))
        elif tiles[a] is not None:
            n_in.append(_roundup(max(tiles[a], 1), div))
        else:
            n_in.append(None)  # chosen from the memory budget below
        h_used.append(h)
    # Mirrored context at the data's edges: the halo, except with a preset's measured halo, where the edges get
    # the model's own padding, as in the one-window pass the preset was scored with (and as in model.predict).
    borders = [h if (a == 0 and runner.kind != "3d") or default_halo is None else 0 for a, h in enumerate(h_used)]
    n_in = _budget_window(runner, shape, n_in, h_used, borders, budget)
    for a in range(3):
        if runner.fixed[a] is None:
            # Never larger than one window over the whole (padded) data.
            n_in[a] = min(n_in[a], _roundup(int(shape[a]) + 2 * borders[a], int(runner.divisor[a])))
    n_out, off = runner.output_window(tuple(n_in))  # type: ignore[arg-type]
    axes = []
    for a in range(3):
        div = int(runner.divisor[a])
        h = h_used[a]

        def step_for(h: int, a: int = a, div: int = div) -> tuple[int, int]:
            trim = max(h, off[a])
            trim_after = max(h, n_in[a] - n_out[a] - off[a])
            usable = n_in[a] - trim - trim_after
            return trim, (usable // div) * div if usable >= div else 0

        trim, step = step_for(h)
        if step < 1 and runner.fixed[a] is None and n_in[a] >= _roundup(int(shape[a]) + 2 * borders[a], div):
            step = div  # one window over the whole pass (no mirrored border): no core grid needed
        if step < 1:
            axis = "zyx"[a]
            if runner.fixed[a] is None and tiles[a] is not None:
                need = _roundup(2 * h + div + (n_in[a] - n_out[a]), div)
                raise ValueError(f"tile {n_in[a]} along {axis} leaves no core inside a halo of {h} (model margin "
                                 f"{runner.margin[a]}, divisor {div}); use a tile of at least {need} or a smaller "
                                 "halo.")
            want = max(div, (n_in[a] // 2) // div * div)
            h_new = h
            while h_new > 0 and step_for(h_new)[1] < want:
                h_new -= 1
            warnings.warn(f"halo along {axis} reduced from {h} to {h_new} to fit the model's fixed input "
                          f"{n_in[a]}; tiles may show seams there; rebuild the model with a free input size to avoid "
                          "them.", stacklevel=3)
            h = h_new
            trim, step = step_for(h)
            if step < 1:
                raise ValueError(f"the model's fixed input {n_in[a]} along {axis} leaves no output to tile with.")
        trim_after = max(h, n_in[a] - n_out[a] - off[a])
        lead = max(min(borders[a], trim), off[a])  # min: a fixed-size model may have reduced the halo
        if (trim - lead) % div:
            lead = trim  # the first window must sit on the pooling grid of the others: mirror a full halo
        lead_end = max(min(borders[a], trim_after), n_in[a] - n_out[a] - off[a])
        axes.append(AxisPlan(size=int(shape[a]), n_in=n_in[a], n_out=n_out[a], off=off[a], trim=trim, step=step,
                             halo=h, lead=lead, lead_end=lead_end, divisor=div))
    return TilePlan(axes=tuple(axes), blend=blend)  # type: ignore[arg-type]


def window_voxels(runner: ModelRunner, budget: int | None = None) -> int:
    """Input voxels per model call that fit ``budget`` bytes (default: :func:`~emzoo.inference.budget.memory_budget`)."""
    from emzoo.inference.budget import memory_budget

    budget = memory_budget() if budget is None else int(budget)
    return max(1, int(budget / max(runner.voxel_bytes, 1.0)))


def _windows_along(size: int, n: int, halo: int, border: int, div: int) -> int:
    """Windows of side ``n`` a same-size net needs along an axis (:attr:`AxisPlan.count`'s rule)."""
    step = (n - 2 * halo) // div * div
    end = -border + _roundup(size + 2 * border, div)
    if n >= end + border:
        return 1
    if step < div:
        return 1 << 30
    first = max(1, -(-(halo - border) // step))
    return 1 + max(1, -(-(end - n + halo) // step) - first + 1)


def _budget_window(runner: ModelRunner, shape: tuple[int, int, int], n_in: list[int | None], halo: list[int],
                   border: list[int], budget: int | None) -> list[int]:
    """Fill the unset window sides with the largest that fit the budget: equal sides, except that an axis capped
    by the data (a window over the whole padded axis) hands its share to the others. Each side is then shrunk to
    the smallest that needs no more windows, so the windows share the data evenly instead of the last one being
    mostly border."""
    free = [a for a in range(3) if n_in[a] is None]
    if not free:
        return n_in  # type: ignore[return-value]
    voxels = window_voxels(runner, budget) / math.prod(n for n in n_in if n is not None)
    planar = runner.kind != "3d"
    core = 64 if planar else 16
    out = list(n_in)
    caps = {a: _roundup(int(shape[a]) + 2 * border[a], runner.divisor[a]) for a in free}
    for i, a in enumerate(sorted(free, key=lambda a: caps[a])):
        div = int(runner.divisor[a])
        side = voxels ** (1.0 / (len(free) - i))
        smallest = _roundup(2 * halo[a] + core, div)
        n = min(caps[a], max(smallest, int(side) // div * div))
        count = _windows_along(int(shape[a]), n, halo[a], border[a], div)
        while n - div >= smallest and _windows_along(int(shape[a]), n - div, halo[a], border[a], div) <= count:
            n -= div
        out[a] = n
        voxels /= n
    return out  # type: ignore[return-value]


def _trusted_weights(kind: str, axis: AxisPlan, first: bool, last: bool) -> np.ndarray:
    """Blend weights over a window's output: the window function over the trustworthy part, 0 on the rim, except
    on the data-edge side of the first / last window, which alone owns the data's border (weight 1 there)."""
    a, b = axis.trusted
    w = np.zeros(axis.n_out, np.float32)
    if b > a:  # else a lone window smaller than twice the halo, weighted 1 below
        w[a - axis.off:b - axis.off] = blend_window(kind, b - a)
    if first:
        w[:a - axis.off] = 1.0
    if last:
        w[b - axis.off:] = 1.0
    return w


def reflect_indices(start: int, stop: int, n: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[0, n)`` like ``numpy.pad(mode="reflect")`` (repeatedly if needed).

    Examples
    --------
    >>> reflect_indices(-2, 6, 4).tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    """
    idx = np.arange(start, stop)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


class Source:
    """Read normalised, mirror-padded ``(z, y, x, C)`` boxes from any array-like.

    Parameters
    ----------
    array : array_like
        numpy, dask, zarr, h5py (anything sliceable with ``shape`` and ``dtype``).
    has_z, has_c : bool
        Whether ``array`` has a leading z axis and a trailing channel axis.
    spec : dict
        A *resolved* normalisation spec (fixed numbers).
    name : str
        Used in error messages.
    """

    def __init__(self, array: Any, *, has_z: bool, has_c: bool, spec: dict[str, Any], name: str = "input") -> None:
        self.array = array
        self.has_z, self.has_c = has_z, has_c
        self.spec = spec
        self.name = name
        shape = tuple(int(s) for s in array.shape)
        self.channels = shape[-1] if has_c else 1
        spatial = shape[:-1] if has_c else shape
        self.shape = (spatial[0], spatial[1], spatial[2]) if has_z else (1, spatial[0], spatial[1])
        self.origin = (0, 0, 0)
        self.prepared = False  # True when ``array`` already holds normalised float32 (z, y, x, C) data

    def _raw(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Data of ``box`` (inside the array), as float32 ``(z, y, x, C)``."""
        sl = [slice(lo - o, hi - o) for (lo, hi), o in zip(box, self.origin, strict=True)]
        if not self.has_z:
            sl = sl[1:]
        if self.has_c:
            sl.append(slice(None))
        raw = self.array[tuple(sl)]
        if is_lazy(raw):
            raw = raw.compute(scheduler="synchronous")
        raw = np.asarray(raw)
        if self.prepared:
            return raw
        if not self.has_z:
            raw = raw[None]
        if not self.has_c:
            raw = raw[..., None]
        check_finite_values(raw, source=self.name, offset=tuple(lo for lo, _ in box))
        return normalize(raw, self.spec)

    def read(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Normalised ``(z, y, x, C)`` float32 data of ``box`` (data coordinates; outside parts mirrored)."""
        if self.prepared:
            return self._raw(box)  # a cache always covers the boxes asked of it
        idx = [None if (lo >= 0 and hi <= n) else reflect_indices(lo, hi, n)
               for (lo, hi), n in zip(box, self.shape, strict=True)]
        if all(i is None for i in idx):
            return self._raw(box)
        read_box = [(lo, hi) if i is None else (int(i.min()), int(i.max()) + 1)
                    for (lo, hi), i in zip(box, idx, strict=True)]
        raw = self._raw(read_box)
        for axis, ((lo, _), i) in enumerate(zip(read_box, idx, strict=True)):
            if i is not None:
                raw = np.take(raw, i - lo, axis=axis)
        return raw

    def cached(self, box: Sequence[tuple[int, int]]) -> Source:
        """A source over the in-memory, normalised data of ``box`` (read once; tiles then slice it)."""
        data = self.read(box)
        cache = Source.__new__(Source)
        cache.array, cache.has_z, cache.has_c = data, True, True
        cache.spec, cache.name, cache.channels = self.spec, self.name, self.channels
        cache.origin = tuple(lo for lo, _ in box)
        cache.shape = tuple(hi - lo for lo, hi in box)  # type: ignore[assignment]
        cache.prepared = True
        return cache


def predict_region(
    runner: ModelRunner,
    source: Source,
    plan: TilePlan,
    region: Sequence[tuple[int, int]],
    *,
    transforms: Sequence[Transform],
    batch_size: int,
    prefetch: bool = False,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Predict the data range ``region`` (``(start, stop)`` per ``(z, y, x)``) -> float32 ``(z, y, x, K)``.

    Every window that contributes to ``region`` is predicted (in batches of ``batch_size``, averaged over
    ``transforms``); with ``prefetch`` the input they need is read once first (one read per block of a Zarr/HDF5
    volume instead of one per window).
    """
    blend = plan.blend != "none"
    shape = tuple(hi - lo for lo, hi in region)
    out = np.zeros((*shape, runner.num_classes), np.float32)
    weight = np.zeros(shape, np.float32) if blend else None
    windows = plan.windows(region)
    if not windows:
        return out
    if prefetch:
        box = [(plan.axes[a].in_start(min(w[a] for w in windows)),
                plan.axes[a].in_start(max(w[a] for w in windows)) + plan.axes[a].n_in) for a in range(3)]
        source = source.cached(box)
    weights: dict[tuple[int, bool, bool], np.ndarray] = {}

    def w1(a: int, k: int) -> np.ndarray:
        key = (a, k == 0, k == plan.axes[a].count - 1)
        if key not in weights:
            weights[key] = _trusted_weights(plan.blend, plan.axes[a], key[1], key[2])
        return weights[key]

    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        x = np.stack([source.read([(plan.axes[a].in_start(w[a]), plan.axes[a].in_start(w[a]) + plan.axes[a].n_in)
                                   for a in range(3)]) for w in batch])
        y = None
        for t in transforms:
            pred = t.inverse(runner(t.forward(x)))
            y = pred if y is None else y + pred
        if len(transforms) > 1:
            y = y / np.float32(len(transforms))
        for w, y_w in zip(batch, y, strict=True):
            dst, src = [], []
            for a in range(3):
                ax = plan.axes[a]
                lo, hi = ax.span(w[a], blend)
                lo, hi = max(lo, region[a][0]), min(hi, region[a][1])
                start = ax.out_start(w[a])
                dst.append(slice(lo - region[a][0], hi - region[a][0]))
                src.append(slice(lo - start, hi - start))
            if blend:
                wz, wy, wx = (w1(a, w[a])[src[a]] for a in range(3))
                wt = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]
                out[tuple(dst)] += y_w[tuple(src)] * wt[..., None]
                weight[tuple(dst)] += wt
            else:
                out[tuple(dst)] = y_w[tuple(src)]
        if advance is not None:
            advance(len(batch))
    if blend:
        out /= np.maximum(weight, np.float32(1e-12))[..., None]
    return out
