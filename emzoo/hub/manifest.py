"""The weights manifest: ``weights_manifest/<entry>.json``, one file per entry, the only record of published weights."""

from __future__ import annotations

import json
import os
from pathlib import Path


def manifest_dir() -> Path:
    """Folder holding the manifest files (``EMZOO_MANIFEST_DIR`` overrides the packaged one)."""
    env = os.environ.get("EMZOO_MANIFEST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "weights_manifest"


def available_tags(entry: str) -> list[str]:
    """Weight tags published for ``entry`` (empty when it has none)."""
    path = manifest_dir() / f"{entry}.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text())["tags"])
