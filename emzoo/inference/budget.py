"""How big a window fits in memory: the model's activation bytes per input voxel, and a budget to spend them in.

Large windows waste less work on halos (a window of side ``n`` spends ``1 - ((n - 2h) / n) ** 2`` of its pixels
on context), so the tiler takes the largest window that fits the budget, and the whole image when it does.

The estimate walks the layer graph in execution order and keeps every tensor alive until its last consumer (the
skip connections of a U-Net stay alive across the whole decoder): the peak of that live set, times
``_OVERHEAD``, is what one window costs. On ``emnet_v1_bn`` (1024² window, TensorFlow on CPU) the live-set peak is
512 bytes per input pixel and the measured peak RSS growth 956, hence the factor 2 (kernel workspaces, the copies
``predict_on_batch`` makes).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from typing import Any

import numpy as np

__all__ = ["memory_budget", "activation_bytes"]

#: Share of the free memory (RAM, or the GPU's memory when there is one) one model call may use. "Free" already
#: excludes what other processes hold, and the estimate is close to the measured peak (module notes).
BUDGET_FRACTION = 0.5
#: Measured peak / live-set estimate (module notes).
_OVERHEAD = 2.0
_ENV = "EMZOO_INFERENCE_MEMORY"


def _free_ram() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else the physical memory, else 4 GiB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _free_gpu() -> int | None:
    """Free memory of the first GPU the backend sees (``nvidia-smi``), None without one."""
    try:
        from emzoo._hardware import gpu_available

        if not gpu_available():
            return None
    except ImportError:
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 8 << 30  # a GPU the driver tool cannot describe: assume a small one
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        return int(float(out.split()[0])) << 20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 8 << 30


def memory_budget() -> int:
    """Bytes one model call may use: ``BUDGET_FRACTION`` of the free GPU memory, or of the free RAM without a GPU.

    The environment variable ``EMZOO_INFERENCE_MEMORY`` (bytes, or with a ``K``/``M``/``G`` suffix) overrides it,
    e.g. to leave room for other jobs.

    Examples
    --------
    >>> memory_budget() > 0
    True
    """
    value = os.environ.get(_ENV, "").strip()
    if value:
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1].upper(), 1)
        number = value[:-1] if value[-1].upper() in "KMG" else value
        try:
            budget = int(float(number) * scale)
        except ValueError:
            budget = 0
        if budget <= 0:
            raise ValueError(f"{_ENV}={value!r} is not a positive size; use bytes or a K/M/G suffix, e.g. 4G.")
        return budget
    gpu = _free_gpu()
    return int(BUDGET_FRACTION * (gpu if gpu is not None else _free_ram()))


def activation_bytes(model: Any, window: tuple[int, ...]) -> float:
    """Estimated peak memory of one forward pass per input voxel of ``window`` (spatial input size, no channels).

    See the module notes for the estimate. Models without a layer graph (subclassed) get a conservative
    4 KiB per voxel.

    Examples
    --------
    >>> import emzoo
    >>> model = emzoo.build("unet", input_shape=(None, None, 1), widths=(4, 8, 16))
    >>> activation_bytes(model, (64, 64)) > 0
    True
    """
    import keras
    from keras import KerasTensor

    from emzoo.flops import _graph_nodes

    nodes = _graph_nodes(model)
    if not nodes:
        return 4096.0
    nodes = [n for n in nodes if not isinstance(n.operation, keras.layers.InputLayer)]
    tensors: dict[int, Any] = {}
    for node in nodes:
        for t in node.output_tensors:
            tensors[id(t)] = t
    probe = keras.Model(model.inputs, list(tensors.values()))
    channels = model.inputs[0].shape[-1] or 1
    specs = keras.tree.flatten(probe.compute_output_spec(KerasTensor((1, *window, channels))))
    nbytes = {key: math.prod(s.shape[1:]) * np.dtype(s.dtype).itemsize for key, s in zip(tensors, specs, strict=True)}
    last_use: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for t in node.input_tensors:
            last_use[id(t)] = i
    live = peak = 0
    for i, node in enumerate(nodes):
        made = sum(nbytes[id(t)] for t in node.output_tensors)
        peak = max(peak, live + made)
        live += made
        for t in node.input_tensors:
            if last_use.get(id(t)) == i and id(t) in nbytes:
                live -= nbytes[id(t)]
    return _OVERHEAD * peak / math.prod(window)
