"""What a preset has measured about its own inference: the effective halo and whether bfloat16 pays.

The theoretical receptive field of a deep U-Net (247 px for ``emnet_v1_bn``) is far wider than the region that
actually moves its output: the influence of a pixel decays fast with distance, so past some *effective* halo the
tiled result stays within a tolerance of the whole-image result. :func:`measure_halo` finds that halo on real
data; ``benchmarks/effective_halo.py`` stores it in a bundled preset's ``emzoo.json`` (``"halo"``) together with
the evidence (``"inference_measured"``), and :func:`~emzoo.inference.predict` uses it by default.

Both numbers belong to one set of weights, so the record holds a digest of them (:func:`weights_digest`); a model
whose weights changed since (fine-tuned in memory) falls back to the exact margin and float32.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The lookups live below the measuring (no cycle with predict); re-exported under their first names.
from emzoo.inference.measured import RECORD, auto_precision, measured, preset_halo, weights_digest  # noqa: F401

__all__ = ["weights_digest", "measured", "preset_halo", "auto_precision", "measure_halo", "HaloReport"]


@dataclass(frozen=True)
class HaloReport:
    """Result of :func:`measure_halo`.

    Attributes
    ----------
    halo : int
        Smallest tried halo whose tiled prediction stays within ``tolerance`` of the exact one.
    exact : int
        The theoretical margin (rounded to the divisor) the reference used.
    deviation : dict
        Max absolute deviation per tried halo.
    tolerance : float
    core : int
        Core of the test windows (small, so seams cross every image).
    seconds : float
    """

    halo: int
    exact: int
    deviation: dict[int, float]
    tolerance: float
    core: int
    seconds: float


def measure_halo(model: Any, images: Sequence[np.ndarray], *, tolerance: float = 1e-3, core: int = 256,
                 normalization: Any = "auto") -> HaloReport:
    """Smallest halo (a multiple of the divisor) at which tiled prediction stays within ``tolerance`` of exact.

    The reference is :func:`~emzoo.inference.predict` with ``halo="exact"`` and one window per image; the test
    tiles each image into windows of core ``core`` with the candidate halo (``blend="none"``), so seams run
    through every image and the image borders see only the halo's mirrored context. The deviation is the max over
    all pixels and images. Halos are bisected, assuming the deviation falls with the halo.

    Parameters
    ----------
    model : keras.Model or str
    images : sequence of numpy.ndarray
        2D images (or 3D volumes for 3D nets), e.g. the preset's held-out test slices.
    tolerance : float
        Largest allowed absolute deviation of a probability.
    core : int
        Core side of the test windows.
    normalization : "auto", dict or None
        As for :func:`~emzoo.inference.predict`.

    Returns
    -------
    HaloReport

    Examples
    --------
    >>> import emzoo
    >>> model = emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))
    >>> measure_halo(model, [np.random.default_rng(0).random((64, 64))], core=32).halo <= 28
    True
    """
    from emzoo.inference.predict import make_runner, predict

    if not images:
        raise ValueError("images is empty; pass at least one image to measure the halo on.")
    if not 0 < float(tolerance):
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    start = time.perf_counter()
    runner = make_runner(model)
    model = runner.model
    div = int(max(runner.divisor[1:]))
    exact = -(-int(max(runner.margin[1:])) // div) * div
    kwargs: dict[str, Any] = dict(blend="none", normalization=normalization, progress=False, precision="float32")
    references = [predict(model, img, tile=10**6, halo="exact", **kwargs) for img in images]
    deviation: dict[int, float] = {}

    def worst(h: int) -> float:
        if h not in deviation:
            tile = -(-(core + 2 * h) // div) * div
            deviation[h] = max(float(np.abs(predict(model, img, tile=tile, halo=h, **kwargs) - ref).max())
                               for img, ref in zip(images, references, strict=True))
        return deviation[h]

    lo, hi = 0, exact // div  # in units of the divisor; hi (the exact margin) passes by construction
    deviation[exact] = 0.0
    while lo < hi:
        mid = (lo + hi) // 2
        if worst(mid * div) <= tolerance:
            hi = mid
        else:
            lo = mid + 1
    return HaloReport(halo=hi * div, exact=exact, deviation=dict(sorted(deviation.items())),
                      tolerance=float(tolerance), core=int(core), seconds=time.perf_counter() - start)
