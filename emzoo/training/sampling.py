"""Where training windows are drawn: uniform, from a probability map, CDeep3M's acceptance rule, class-balanced.

A sampler is prepared once on the training label volumes (each ``(Z, Y, X)``) and the label-window shape, then
:meth:`Sampler.sample` returns ``(volume index, window corner)`` for a seeded ``numpy.random.Generator``. Sampling
reads only what :meth:`Sampler.prepare` stored, so several loader threads may share one sampler.

Corners may lie partly outside a volume smaller than the window (the reader mirrors the borders); otherwise the label
window lies inside the volume, as in CDeep3M's PatchData layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Sampler",
    "UniformSampler",
    "ProbabilityMapSampler",
    "AcceptRejectSampler",
    "ClassBalancedSampler",
    "SAMPLERS",
    "choose_sampler",
    "SPARSE_WINDOWS",
    "make_sampler",
]

Corner = tuple[int, int, int]


class Sampler:
    """Base class: picks a volume (in proportion to its size) and a window corner uniformly."""

    def prepare(self, labels: Sequence[np.ndarray], window: tuple[int, int, int]) -> Sampler:
        """Store what sampling needs; returns ``self``.

        Parameters
        ----------
        labels : sequence of ndarray
            ``(Z, Y, X)`` label volumes.
        window : (Z, Y, X)
            Label-window shape.
        """
        self.window = tuple(int(w) for w in window)
        self.shapes = [tuple(lab.shape) for lab in labels]
        # Corners run from lo to hi inclusive on each axis; a volume smaller than the window is centred on it.
        self.lo = [tuple(min(0, (n - w) // 2) for n, w in zip(s, self.window, strict=True)) for s in self.shapes]
        self.hi = [tuple(max(n - w, lo) for n, w, lo in zip(s, self.window, lows, strict=True))
                   for s, lows in zip(self.shapes, self.lo, strict=True)]
        sizes = np.array([np.prod([h - lo + 1 for h, lo in zip(hi, lows, strict=True)])
                          for hi, lows in zip(self.hi, self.lo, strict=True)], dtype=np.float64)
        self.volume_p = sizes / sizes.sum()
        return self

    def _volume(self, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.shapes), p=self.volume_p)) if len(self.shapes) > 1 else 0

    def _uniform_corner(self, v: int, rng: np.random.Generator) -> Corner:
        return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(self.lo[v], self.hi[v], strict=True))

    def _corner_around(self, v: int, voxel: Sequence[int]) -> Corner:
        """The corner that centres the window on ``voxel``, clipped so the window stays inside the volume."""
        return tuple(int(np.clip(c - (w - 1) // 2, lo, hi))
                     for c, w, lo, hi in zip(voxel, self.window, self.lo[v], self.hi[v], strict=True))

    def sample(self, rng: np.random.Generator) -> tuple[int, Corner]:
        """``(volume index, (z, y, x) corner of the label window)``."""
        v = self._volume(rng)
        return v, self._uniform_corner(v, rng)

    def config(self) -> dict[str, Any]:
        """Name and options (recorded in the preset)."""
        return {"name": "uniform"}


class UniformSampler(Sampler):
    """Every window position equally likely.

    Examples
    --------
    >>> s = UniformSampler().prepare([np.zeros((1, 8, 8))], (1, 4, 4))
    >>> s.sample(np.random.default_rng(0))[1][0]
    0
    """


class ProbabilityMapSampler(Sampler):
    """Window centres drawn in proportion to a probability map (foreground-biased sampling).

    Parameters
    ----------
    maps : sequence of ndarray, optional
        One non-negative ``(Z, Y, X)`` map per volume. Default: ``foreground_weight`` on labelled (> 0) voxels and 1
        elsewhere.
    foreground_weight : float
        Relative weight of foreground voxels in the default map.

    Examples
    --------
    >>> lab = np.zeros((1, 64, 64)); lab[0, 60, 60] = 1
    >>> s = ProbabilityMapSampler(foreground_weight=1e9).prepare([lab], (1, 8, 8))
    >>> s.sample(np.random.default_rng(0))[1]
    (0, 56, 56)
    """

    def __init__(self, maps: Sequence[np.ndarray] | None = None, *, foreground_weight: float = 4.0) -> None:
        if foreground_weight <= 0:
            raise ValueError(f"foreground_weight must be > 0, got {foreground_weight}.")
        self.maps = maps
        self.foreground_weight = float(foreground_weight)

    def prepare(self, labels: Sequence[np.ndarray], window: tuple[int, int, int]) -> Sampler:
        super().prepare(labels, window)
        if self.maps is None:
            maps = [np.where(lab > 0, self.foreground_weight, 1.0) for lab in labels]
        else:
            maps = [np.asarray(m, dtype=np.float64) for m in self.maps]
            if [m.shape for m in maps] != self.shapes:
                raise ValueError(f"probability maps must match the label volumes' shapes {self.shapes}, got "
                                 f"{[m.shape for m in maps]}.")
            if any((m < 0).any() for m in maps):
                raise ValueError("probability maps must be non-negative.")
        totals = np.array([m.sum() for m in maps], dtype=np.float64)
        if totals.sum() <= 0:
            raise ValueError("the probability maps are zero everywhere; nothing can be sampled.")
        self.volume_p = totals / totals.sum()
        self.cumsum = [np.cumsum(m.ravel(), dtype=np.float64) for m in maps]
        return self

    def sample(self, rng: np.random.Generator) -> tuple[int, Corner]:
        v = self._volume(rng)
        c = self.cumsum[v]
        flat = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
        voxel = np.unravel_index(min(flat, c.size - 1), self.shapes[v])
        return v, self._corner_around(v, voxel)

    def config(self) -> dict[str, Any]:
        return {"name": "foreground", "foreground_weight": self.foreground_weight, "custom_maps": self.maps is not None}


class AcceptRejectSampler(Sampler):
    """CDeep3M's PatchData rule: draw a centre uniformly, accept it always on foreground, with p on background.

    Parameters
    ----------
    background_acceptance : float
        Acceptance probability of a background centre (CDeep3M: 1/4).
    max_tries : int
        After this many rejections the last centre is taken (a volume without foreground cannot stall training).

    Examples
    --------
    >>> lab = np.zeros((1, 32, 32)); lab[0, :, :16] = 1
    >>> s = AcceptRejectSampler(background_acceptance=0.0).prepare([lab], (1, 1, 1))
    >>> all(s.sample(np.random.default_rng(i))[1][2] < 16 for i in range(20))
    True
    """

    def __init__(self, background_acceptance: float = 0.25, *, max_tries: int = 1000) -> None:
        if not 0.0 <= background_acceptance <= 1.0:
            raise ValueError(f"background_acceptance must be in [0, 1], got {background_acceptance}.")
        self.background_acceptance = float(background_acceptance)
        self.max_tries = int(max_tries)

    def prepare(self, labels: Sequence[np.ndarray], window: tuple[int, int, int]) -> Sampler:
        super().prepare(labels, window)
        self.labels = list(labels)
        return self

    def sample(self, rng: np.random.Generator) -> tuple[int, Corner]:
        for _ in range(self.max_tries):
            v = self._volume(rng)
            corner = self._uniform_corner(v, rng)
            centre = tuple(int(np.clip(c + (w - 1) // 2, 0, n - 1))
                           for c, w, n in zip(corner, self.window, self.shapes[v], strict=True))
            if self.labels[v][centre] > 0 or rng.random() < self.background_acceptance:
                break
        return v, corner

    def config(self) -> dict[str, Any]:
        return {"name": "cdeep3m", "background_acceptance": self.background_acceptance}


class ClassBalancedSampler(Sampler):
    """Draw a class with fixed probabilities, then a random voxel of it, and centre the window there.

    Mekuč et al.'s window selection (P = 0.2 background, 0.4 mitochondria, 0.4 endolysosomes). Classes absent from
    the data are dropped and the rest renormalised.

    Parameters
    ----------
    class_probabilities : sequence or mapping of float
        Probability per class index (a sequence) or ``{class: p}``. Default: uniform over the classes present
        (NiftyNet's "balanced" sampler).

    Examples
    --------
    >>> lab = np.zeros((1, 32, 32), "uint8"); lab[0, 0, 0] = 1
    >>> s = ClassBalancedSampler({0: 0.0, 1: 1.0}).prepare([lab], (1, 4, 4))
    >>> s.sample(np.random.default_rng(0))[1]
    (0, 0, 0)
    """

    def __init__(self, class_probabilities: Sequence[float] | Mapping[int, float] | None = None) -> None:
        if class_probabilities is not None and not isinstance(class_probabilities, Mapping):
            class_probabilities = dict(enumerate(class_probabilities))
        if class_probabilities is not None and any(p < 0 for p in class_probabilities.values()):
            raise ValueError(f"class probabilities must be >= 0, got {class_probabilities}.")
        self.class_probabilities = class_probabilities

    def prepare(self, labels: Sequence[np.ndarray], window: tuple[int, int, int]) -> Sampler:
        super().prepare(labels, window)
        present = sorted({int(c) for lab in labels for c in np.unique(lab)})
        probs = self.class_probabilities or {c: 1.0 for c in present}
        self.classes = [c for c in present if probs.get(c, 0.0) > 0]
        if not self.classes:
            raise ValueError(f"none of the classes with a sampling probability {dict(probs)} occurs in the labels "
                             f"(classes present: {present}).")
        p = np.array([probs[c] for c in self.classes], dtype=np.float64)
        self.class_p = p / p.sum()
        # Flat voxel indices of each class in each volume (int32 where it fits, to halve the memory).
        self.index: dict[int, list[np.ndarray]] = {}
        for c in self.classes:
            per_volume = []
            for lab in labels:
                flat = np.flatnonzero(lab == c)
                per_volume.append(flat.astype(np.int32) if lab.size < 2**31 else flat)
            self.index[c] = per_volume
        return self

    def sample(self, rng: np.random.Generator) -> tuple[int, Corner]:
        c = self.classes[int(rng.choice(len(self.classes), p=self.class_p))]
        counts = np.array([len(i) for i in self.index[c]], dtype=np.float64)
        v = int(rng.choice(len(counts), p=counts / counts.sum())) if len(counts) > 1 else 0
        flat = self.index[c][v][int(rng.integers(len(self.index[c][v])))]
        return v, self._corner_around(v, np.unravel_index(int(flat), self.shapes[v]))

    def config(self) -> dict[str, Any]:
        probs = None if self.class_probabilities is None else {int(k): float(v)
                                                               for k, v in self.class_probabilities.items()}
        return {"name": "class_balanced", "class_probabilities": probs}


SAMPLERS = {
    "uniform": UniformSampler,
    "foreground": ProbabilityMapSampler,
    "cdeep3m": AcceptRejectSampler,
    "class_balanced": ClassBalancedSampler,
}


# A uniform window is "useful" when at least this share of its voxels is foreground.
USEFUL_WINDOW_FOREGROUND = 0.01
# Below this share of useful uniform windows, most batches teach "background" and a short run collapses.
SPARSE_WINDOWS = 0.5
# Share of windows centred on a foreground voxel under the automatic choice (nnU-Net forces 1/3 of its patches to
# hold foreground); the other windows stay uniform, so hard negatives (myelin, membranes) are still seen.
_AUTO_FOREGROUND_SHARE = 1 / 3


def choose_sampler(labels: Sequence[np.ndarray], window: tuple[int, int, int] | None = None, *,
                   probes: int = 256) -> tuple[Sampler, dict[str, Any]]:
    """The window sampler for these training labels: foreground-biased when uniform windows rarely hold foreground.

    Draws ``probes`` uniform label windows (a fixed seed) and counts those with at least 1 % foreground. Under half:
    a :class:`ProbabilityMapSampler` whose foreground weight centres a third of the windows on foreground (the other
    two thirds stay uniform, so hard negatives are still seen); otherwise uniform windows. Measured on cdeep3m_mito
    (8.8 % foreground, 256² windows, every window useful): uniform windows gave a higher F1 after 600 steps than
    foreground-centred ones (0.62 vs 0.60; precision 0.57 vs 0.47), so a moderate foreground share alone does not
    switch the sampler.

    Parameters
    ----------
    labels : sequence of ndarray
        ``(Z, Y, X)`` training label volumes (0 = background; voxels > 0 are foreground).
    window : (Z, Y, X), optional
        Label-window shape; without it every volume is one window.
    probes : int
        Uniform windows drawn for the estimate.

    Returns
    -------
    sampler : Sampler
        Not yet prepared.
    choice : dict
        ``{"auto": True, "foreground_fraction": f, "useful_windows": u, "reason": ...}``, recorded in the preset.

    Examples
    --------
    >>> lab = np.zeros((1, 256, 256)); lab[0, :8, :8] = 1
    >>> sampler, choice = choose_sampler([lab], (1, 32, 32))
    >>> type(sampler).__name__, choice["useful_windows"] < 0.5
    ('ProbabilityMapSampler', True)
    >>> half = np.zeros((1, 64, 64)); half[0, :, :32] = 1
    >>> type(choose_sampler([half], (1, 32, 32))[0]).__name__
    'UniformSampler'
    """
    labels = [np.asarray(lab) for lab in labels]
    total = sum(int(lab.size) for lab in labels)
    fg = sum(int(np.count_nonzero(lab > 0)) for lab in labels)
    f = fg / total if total else 0.0
    if f == 0.0:
        return UniformSampler(), {"auto": True, "foreground_fraction": 0.0, "useful_windows": 0.0,
                                  "reason": "no foreground in the training labels: uniform windows"}
    probe = UniformSampler().prepare(labels, tuple(window) if window is not None else labels[0].shape)
    rng = np.random.default_rng(0)
    useful = 0
    for _ in range(probes):
        v, corner = probe.sample(rng)
        box = tuple(slice(max(0, c), max(0, c) + w) for c, w in zip(corner, probe.window, strict=True))
        crop = labels[v][box]
        useful += int(bool(crop.size) and np.count_nonzero(crop > 0) >= USEFUL_WINDOW_FOREGROUND * crop.size)
    u = useful / probes
    record = {"auto": True, "foreground_fraction": f, "useful_windows": u}
    described = (f"foreground is {100 * f:.1f} % of the training voxels and {100 * u:.0f} % of uniform windows hold "
                 f"at least {100 * USEFUL_WINDOW_FOREGROUND:.0f} % of it")
    if u < SPARSE_WINDOWS:
        share = _AUTO_FOREGROUND_SHARE
        weight = share * (1.0 - f) / ((1.0 - share) * f)
        record["reason"] = f"{described}: {100 * share:.0f} % of the windows are centred on foreground"
        return ProbabilityMapSampler(foreground_weight=weight), record
    record["reason"] = f"{described}: uniform windows"
    return UniformSampler(), record


def make_sampler(sampler: str | Sampler, **options: Any) -> Sampler:
    """A fresh sampler by name (``uniform``, ``foreground``, ``cdeep3m``, ``class_balanced``) or the given one.

    Examples
    --------
    >>> type(make_sampler("cdeep3m", background_acceptance=0.25)).__name__
    'AcceptRejectSampler'
    """
    if isinstance(sampler, Sampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)} or pass a Sampler.")
    return SAMPLERS[sampler](**options)
