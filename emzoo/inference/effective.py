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

import hashlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["weights_digest", "measured", "preset_halo", "auto_precision", "measure_halo", "HaloReport"]

#: Key of the evidence record in ``emzoo.json``.
RECORD = "inference_measured"


def weights_digest(model: Any) -> str:
    """sha256 over the shapes and a strided sample (<= 256 values) of every weight array of ``model``.

    A sample keeps it cheap (milliseconds for 100M parameters) and still changes when any training step ran.

    Examples
    --------
    >>> import emzoo
    >>> len(weights_digest(emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))))
    64
    """
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.asarray(w.numpy() if hasattr(w, "numpy") else w, dtype=np.float32).ravel()
        digest.update(repr(tuple(w.shape)).encode())
        digest.update(np.ascontiguousarray(value[:: max(1, value.size // 256)][:256]).tobytes())
    return digest.hexdigest()


def measured(model: Any) -> dict[str, Any]:
    """The preset's inference record when it was measured on exactly these weights, else ``{}``."""
    meta = getattr(model, "emzoo_metadata", None) or {}
    record = meta.get(RECORD)
    if not isinstance(record, dict):
        return {}
    # Recomputed on every call (milliseconds): the model may have been trained since the last one.
    if record.get("weights_digest") == weights_digest(model):
        return record
    if not getattr(model, "_emzoo_warned_digest", False):  # once per model object
        object.__setattr__(model, "_emzoo_warned_digest", True)
        warnings.warn(f"{model.name}: the preset's measured halo/precision were measured for other weights (a "
                      "fine-tuned copy?); using the exact receptive-field halo and float32.", stacklevel=4)
    return {}


def preset_halo(model: Any) -> Any:
    """The preset's ``halo`` (int or per-axis list) when it may be trusted for ``model``'s weights, else None.

    A ``halo`` written by hand into a preset (no measurement record) is the preset author's word and is used.
    """
    meta = getattr(model, "emzoo_metadata", None) or {}
    halo = meta.get("halo")
    if halo is None:
        return None
    if RECORD in meta and not measured(model):
        return None
    return halo


def auto_precision(model: Any) -> str:
    """``"bfloat16"`` where the preset measured bfloat16 inference faster *and* as accurate and this CPU has it.

    Needs TensorFlow on a CPU with AMX-BF16 or AVX512-BF16 and no GPU (JAX and PyTorch emulate bfloat16 on CPUs;
    GPUs have not been measured); everything else runs float32.
    """
    record = measured(model).get("bfloat16")
    if not isinstance(record, dict) or not record.get("use"):
        return "float32"
    import keras

    from emzoo._hardware import cpu_has_bf16, gpu_available

    if keras.backend.backend() != "tensorflow" or gpu_available() or not cpu_has_bf16():
        return "float32"
    return "bfloat16"


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
