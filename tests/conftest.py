"""Shared fixtures. Tests never touch the network: hub tests use a local endpoint on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMZOO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (the real public EM datasets); tests needing it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        from tests._data import skip_or_fail

        # CI sets EMZOO_REQUIRE_DATA=1: a green run must have checked the data tests, not skipped them.
        skip_or_fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
