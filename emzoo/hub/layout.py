"""The preset folder's layout: its file names, its format tag and the JSON round-trip both sides rely on.

:mod:`emzoo.hub.save` writes this layout and :mod:`emzoo.hub.load` reads it; neither imports the other.

Examples
--------
>>> PRESET_FILES
('config.json', 'model.weights.h5', 'emzoo.json', 'README.md')
>>> from_json(to_json({"widths": (4, 8)}, "build_kwargs"))
{'widths': (4, 8)}
"""

from __future__ import annotations

import json
from typing import Any

from emzoo.hub.manifest import WEIGHT_FILES

__all__ = ["FORMAT", "PRESET_FILES", "COVER_FILE", "LOAD_FILES", "METADATA_KEYS", "to_json", "from_json"]

FORMAT = "emzoo.preset/1"
#: What :func:`emzoo.save_preset` writes.
PRESET_FILES = ("config.json", "model.weights.h5", "emzoo.json", "README.md")
#: The model card's picture, written beside them when :func:`emzoo.save_preset` is given ``cover=`` (test data and
#: its prediction); loading never needs it.
COVER_FILE = "cover.png"
#: What loading needs: the config, one of the two weight files (plain or compact), the metadata.
LOAD_FILES = ("config.json", *WEIGHT_FILES, "emzoo.json")

#: Keywords :func:`emzoo.save_preset` accepts as metadata (anything else goes in ``extra=``).
METADATA_KEYS = (
    "description", "axes", "normalization", "receptive_field", "halo", "classes", "tta", "training_data",
    "recipe", "seed", "metrics", "test_split", "license", "datasets", "tags", "name", "extra", "postprocess",
)


def to_json(value: Any, what: str) -> Any:
    """``value`` as JSON gives it back (tuples become lists); anything JSON cannot hold is refused.

    Raises
    ------
    TypeError
        Naming ``what`` and the value, when it holds something other than numbers, strings, lists, dicts, None.
    """
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise TypeError(f"{what} must hold only JSON values (numbers, strings, lists, dicts, None); got {value!r}"
                        ) from None


def from_json(value: Any) -> Any:
    """JSON lists back to tuples, so builders get the shapes and widths they were written for."""
    if isinstance(value, list):
        return tuple(from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: from_json(v) for k, v in value.items()}
    return value
