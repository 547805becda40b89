"""Custom Keras layers, one registered serialisable class per file (keras.ops only)."""

import importlib
import pkgutil

# Import every layer module so each class is registered for deserialisation before any .keras file is loaded.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")

from emzoo.layers.tlu import TLU  # noqa: E402

__all__ = ["TLU"]
