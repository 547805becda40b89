"""Structural fingerprints of every entry: the guard that keeps published ``.weights.h5`` files loadable.

``.weights.h5`` files are matched by layer class and order, so once weights exist an entry's layer list must not
change. ``fingerprints/<entry>.sha256`` pins the sha256 of [(layer class, layer name, weight shapes), ...].
Update it only for entries without published weights:

    .venv/bin/python -m tests.models.fingerprints ENTRY [ENTRY ...]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

FOLDER = Path(__file__).with_name("fingerprints")


def fingerprint(model) -> str:
    rows = [
        [type(layer).__name__, layer.name, [list(w.shape) for w in layer.weights]]
        for layer in model.layers
    ]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def load() -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in FOLDER.glob("*.sha256")}


def main(names: list[str]) -> None:
    import emzoo
    from emzoo.registry import entry_info

    FOLDER.mkdir(exist_ok=True)
    for name in names or emzoo.list_models():
        model = emzoo.build(name, input_shape=entry_info(name).test_input_shape)
        digest = fingerprint(model)
        (FOLDER / f"{name}.sha256").write_text(digest + "\n")
        print(name, digest[:16])


if __name__ == "__main__":
    main(sys.argv[1:])
