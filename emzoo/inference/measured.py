"""What a preset has measured about its own inference, read back: its effective halo and its bfloat16 verdict.

The lookups :func:`~emzoo.inference.predict` and the tiling need (:func:`preset_halo`, :func:`auto_precision`), kept
apart from the measuring (:mod:`emzoo.inference.effective`, which runs predictions) so that neither imports the
other's users. A record belongs to one set of weights (:func:`weights_digest`); a model whose weights changed since
falls back to the exact margin and float32.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np

__all__ = ["RECORD", "weights_digest", "measured", "preset_halo", "auto_precision"]

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
