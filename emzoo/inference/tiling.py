"""Tiled prediction: cut the data into model windows with a halo, predict them in batches, stitch or blend them back.

Geometry along each axis (data size ``N``, model window ``n_in``, output window ``n_out`` at offset ``off``,
halo ``h``, divisor ``D``):

- the trusted part of a window (its *core*) starts ``trim = max(h, off)`` pixels in and is ``step`` long, where
  ``step`` is the largest multiple of ``D`` that stays ``h`` away from both window edges;
- window ``k`` reads input ``[k*step - trim, k*step - trim + n_in)`` and owns the core ``[k*step, (k+1)*step)``;
  ``ceil(N / step)`` windows cover the data. Windows start on multiples of ``step`` (a multiple of ``D``), so
  pooling grids line up with those of one big window over the whole image;
- outside the data the input is mirrored (``numpy.pad(mode="reflect")``, computed by index arithmetic, never by
  padding the array).

With ``blend="none"`` each voxel comes from the one core that owns it: with ``h`` at least the receptive-field
margin this equals predicting the whole (mirror-padded) image at once. With ``"linear"`` or ``"spline"`` every
window contributes its whole output window (core plus halo) weighted by a window function, and the weighted sum is
normalised; neighbouring windows then overlap by about ``2h``, which hides seams when ``h`` is smaller than the
margin. The cost is the same in both cases: the tile grid does not change.

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

__all__ = ["AxisPlan", "TilePlan", "make_plan", "Source", "predict_region", "reflect_indices"]

_BLENDS = ("spline", "linear", "none")


def _roundup(n: int, d: int) -> int:
    return -(-int(n) // int(d)) * int(d)


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one axis (see the module notes)."""

    size: int
    n_in: int
    n_out: int
    off: int
    trim: int
    step: int
    halo: int

    @property
    def count(self) -> int:
        """Number of windows along the axis."""
        return -(-self.size // self.step)

    def in_start(self, k: int) -> int:
        """First input pixel read by window ``k``."""
        return k * self.step - self.trim

    def out_start(self, k: int) -> int:
        """Data position of the first output pixel of window ``k``."""
        return self.in_start(k) + self.off

    def span(self, k: int, blend: bool) -> tuple[int, int]:
        """Data range window ``k`` writes: its core, or (blending) its output window; clipped to the data."""
        if blend:
            start = self.out_start(k)
            return max(start, 0), min(start + self.n_out, self.size)
        return k * self.step, min((k + 1) * self.step, self.size)

    def windows_for(self, lo: int, hi: int, blend: bool) -> range:
        """Windows whose span meets the data range ``[lo, hi)``."""
        if blend:
            first = max(0, math.floor((lo - self.n_out + self.trim - self.off) / self.step) + 1)
            last = min(self.count - 1, math.ceil((hi + self.trim - self.off) / self.step) - 1)
        else:
            first, last = lo // self.step, min(self.count - 1, (hi - 1) // self.step)
        return range(first, last + 1)


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
    halo: int | Sequence[int] | None = None,
    blend: str = "spline",
) -> TilePlan:
    """Choose the window size, halo and step along each axis of a ``(Z, Y, X)`` data grid.

    Parameters
    ----------
    runner : ModelRunner
    shape : tuple of int
        Data size ``(Z, Y, X)`` (``Z = 1`` for a single 2D image).
    tile : int or tuple, optional
        Model input window (rounded up to the divisor). Default: about 512 px (2D) or 64 px (3D) and at least
        twice the halo plus a core of 256 (2D) / the halo (3D). Never more than one window over the whole data.
    halo : int or tuple, optional
        Context kept on each side of a window's core; default: the preset's recorded ``halo`` when there is one,
        else the receptive-field margin (:func:`~emzoo.inference.receptive.receptive_field`), rounded up to a
        multiple of the divisor.
    blend : {"spline", "linear", "none"}

    Returns
    -------
    TilePlan

    Raises
    ------
    ValueError
        If a given tile leaves no core next to the halo (the message gives the smallest tile that works).
    """
    if blend not in _BLENDS:
        raise ValueError(f"blend must be one of {_BLENDS}, got {blend!r}")
    tiles, halos = _per_axis(tile, "tile"), _per_axis(halo, "halo")
    default_halo = _per_axis(runner.metadata.get("halo"), "preset halo") if runner.metadata.get("halo") else None
    n_in, h_used = [], []
    for a in range(3):
        size, div, fixed = int(shape[a]), int(runner.divisor[a]), runner.fixed[a]
        if a == 0 and runner.kind in ("2d", "frames"):
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
            n = int(fixed)
        else:
            if tiles[a] is not None:
                n = _roundup(max(tiles[a], 1), div)
            else:
                planar = runner.kind != "3d"
                base, extra = (512, max(256, 2 * h)) if planar else (64, max(32, h))
                n = _roundup(max(base, 2 * h + extra), div)
            # Never larger than one window over the whole (padded) data.
            n = min(n, _roundup(_roundup(size, div) + 2 * h, div))
        n_in.append(n)
        h_used.append(h)
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
                          f"{n_in[a]}; tiles may show seams there (blend='spline' hides them), or rebuild the model "
                          "with a free input size.", stacklevel=3)
            h = h_new
            trim, step = step_for(h)
            if step < 1:
                raise ValueError(f"the model's fixed input {n_in[a]} along {axis} leaves no output to tile with.")
        axes.append(AxisPlan(size=int(shape[a]), n_in=n_in[a], n_out=n_out[a], off=off[a], trim=trim, step=step,
                             halo=h))
    return TilePlan(axes=tuple(axes), blend=blend)  # type: ignore[arg-type]


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
    w1 = [blend_window(plan.blend, a.n_out) for a in plan.axes] if blend else None
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
                wz, wy, wx = (w1[a][src[a]] for a in range(3))
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
