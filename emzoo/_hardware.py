"""What the machine offers: a GPU for the active Keras backend, native bfloat16 on the CPU.

A leaf module (it imports nothing from emzoo), so that inference and training can both ask without importing each
other.
"""

from __future__ import annotations

import keras

__all__ = ["gpu_available", "cpu_has_bf16"]


def gpu_available() -> bool:
    """Whether the active Keras backend sees a GPU.

    Examples
    --------
    >>> isinstance(gpu_available(), bool)
    True
    """
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf  # noqa: TID251 - asks the backend, builds no model

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken GPU stack means "no GPU"
        return False
    return False


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16 in ``/proc/cpuinfo``).

    Examples
    --------
    >>> isinstance(cpu_has_bf16(), bool)
    True
    """
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False
