"""Presets: one folder per weights release (KerasHub layout), written by :func:`save_preset`, read by :func:`load`.

A preset folder holds

- ``config.json``: ``{"entry": ..., "build_kwargs": {...}}``, enough to rebuild the model with emzoo's own builder
  (``emzoo.build(entry, **build_kwargs)``), plus the emzoo and Keras versions. It is never a serialised Keras
  model, so loading a preset runs no stored code;
- ``model.weights.h5``: the Keras 3 weights (``model.save_weights``);
- ``emzoo.json``: what a user needs to apply the weights right: axes, input spec, normalisation
  (:mod:`emzoo.io.normalize`), receptive field and halo, classes, the TTA valid for the data, params, FLOPs and the
  input counted at, training data name + sha256, recipe, seed, metrics with their test split, date, versions;
- ``README.md``: the Hugging Face model card (front matter: library_name emzoo, tags, license, datasets,
  model-index results) with the ``emzoo.load`` line and a stats block.

This module is the stable import path; the work is split by what it does:

- :mod:`emzoo.hub.layout`: the file names, format tag and JSON round-trip both sides share;
- :mod:`emzoo.hub.card`: the model card;
- :mod:`emzoo.hub.save`: :func:`save_preset`;
- :mod:`emzoo.hub.load`: :func:`resolve` (``entry``, ``entry.tag``, ``hf://org/repo@rev``, a folder or a
  ``.keras`` file -> local sha256-checked files), :func:`load` (Keras safe mode on: nothing is unpickled) and
  :func:`read_preset_metadata`.
"""

from __future__ import annotations

from emzoo.hub.card import model_card as _model_card  # noqa: F401  (old private name, kept for callers)
from emzoo.hub.layout import FORMAT, LOAD_FILES, METADATA_KEYS, PRESET_FILES
from emzoo.hub.layout import from_json as _tuples  # noqa: F401  (old private name, used by emzoo.zoo.train)
from emzoo.hub.layout import to_json as _jsonable  # noqa: F401  (old private name, kept for callers)
from emzoo.hub.load import PresetFiles, load, read_preset_metadata, resolve
from emzoo.hub.save import save_preset

__all__ = ["save_preset", "load", "read_preset_metadata", "resolve", "PresetFiles", "PRESET_FILES",
           "METADATA_KEYS", "FORMAT"]

_LOAD_FILES = LOAD_FILES  # old private name
