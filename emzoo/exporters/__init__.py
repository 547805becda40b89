"""Export a model or preset to other runtimes: a ``.keras`` file, an ONNX graph, a TF SavedModel, a bioimage.io package.

:func:`export` (:mod:`emzoo.exporters.core`) is the one entry point (``emzoo.export``, ``emzoo export``); :func:`max_deviation` runs an exported
artefact next to the Keras model and says how far apart they are. The writers live in :mod:`emzoo.exporters.formats`
(keras/onnx/savedmodel) and :mod:`emzoo.exporters.bioimageio` (the package, spec format 0.5).

The package is ``exporters``, not ``export``: importing a submodule binds the package to its parent's attribute,
which would replace the function ``emzoo.export`` with a module.
"""

from __future__ import annotations

from emzoo.exporters.core import export
from emzoo.exporters.formats import FORMATS, max_deviation, resolve_model, run_exported

__all__ = ["export", "max_deviation", "run_exported", "resolve_model", "FORMATS"]
