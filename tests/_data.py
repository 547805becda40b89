"""The rule for missing test data: skip locally, fail in CI (``EMZOO_REQUIRE_DATA=1``, set by ``.ci/run``)."""

from __future__ import annotations

import os

import pytest


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when CI requires the data to be present."""
    if os.environ.get("EMZOO_REQUIRE_DATA") == "1":
        pytest.fail(f"EMZOO_REQUIRE_DATA=1 but {reason}")
    pytest.skip(reason)
