"""Export tests: keep bioimageio.core from changing the environment of the tests that run after them."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _restore_tf_environment(monkeypatch):
    # bioimageio.core's test_model sets os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0" and never resets it; a later test's
    # subprocess would then compute with other kernels than its parent (the blockwise kill-and-resume test compares
    # their bytes). monkeypatch puts the variable back as it was after each test.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"))
