"""emzoo: a Keras 3 model zoo for segmenting electron-microscopy images.

The public API is re-exported here; nothing heavy is imported until first use, so ``import emzoo`` is cheap and the
CLI starts quickly.

Examples
--------
>>> import emzoo
>>> "unet" in emzoo.list_models()
True
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "list_models": "emzoo.registry",
    "build": "emzoo.registry",
    "info": "emzoo.catalog",
    "EntryInfo": "emzoo.registry",
    "count_flops": "emzoo.flops",
    "load": "emzoo.hub.presets",
    "save_preset": "emzoo.hub.presets",
    "read": "emzoo.io",
    "write": "emzoo.io",
    "predict": "emzoo.inference",
    "predict_blockwise": "emzoo.inference",
    "Ensemble": "emzoo.inference",
    "instances": "emzoo.inference.instances",
    "instances_blockwise": "emzoo.inference.instances_blockwise",
    "finetune": "emzoo.training",
    "kfold": "emzoo.training",
    "benchmark": "emzoo.benchmark",
    "train_zoo": "emzoo.zoo",
    "export": "emzoo.exporters",
}

__all__ = [*sorted(_API), "__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'emzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
