"""Helpers of the reliability tests: snapshot files (to assert that nothing was replaced, deleted or left behind)
and run ``emzoo predict`` checking that an error is one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from emzoo.cli.main import app

VOLUME = (np.random.default_rng(0).random((2, 40, 36)) * 255).astype(np.uint8)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), hidden ones included."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def invoke(*args: str):
    """Run ``emzoo predict ARGS`` in-process; returns click's Result."""
    return CliRunner().invoke(app, ["predict", *map(os.fspath, args), "--no-progress"])


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and printed exactly one line, no traceback, holding each fragment."""
    text = result.output.strip()
    assert result.exit_code == code, (result.exit_code, text, result.exception)
    assert "\n" not in text and "Traceback" not in text, text
    assert text.startswith("emzoo: error: "), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text
