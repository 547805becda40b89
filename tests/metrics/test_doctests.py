"""The numpydoc Examples of the metrics modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

MODULES = [
    "emzoo.metrics",
    "emzoo.metrics.pixel",
    "emzoo.metrics.rand_info",
    "emzoo.metrics.watershed",
    "emzoo.metrics._validate",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no Examples"
    assert result.failed == 0
