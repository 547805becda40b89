"""Checks of the numeric arguments taken at the API boundary (``predict``, ``predict_blockwise``, ``emzoo predict``).

One helper per kind of number, so every entry point refuses the same values with the same message, naming the
argument as the caller spelled it (``batch_size`` from Python, ``--batch-size`` from the command line). A value that
would silently produce a wrong result (a batch of 0 windows, a negative halo, a tile of 64.5 px, a threshold of 1)
is an error, never rounded or clamped.

Examples
--------
>>> check_int(4, "batch_size")
4
>>> check_int(0, "batch_size")
Traceback (most recent call last):
...
ValueError: batch_size must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["check_int", "check_ints", "check_probability"]


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is an integer number (``7``, ``np.int64(7)``, ``7.0``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        return int(value)
    return None


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise a ValueError naming ``name`` unless it is an integer >= ``minimum``.

    Raises
    ------
    ValueError
        ``"<name> must be an integer >= <minimum>, got <value>"`` for non-integers (``64.5``, ``"8"``, ``True``,
        NaN) and for integers below ``minimum``.
    """
    number = _as_int(value)
    if number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def check_ints(value: Any, name: str, *, minimum: int = 1, allow_none: bool = True,
               lengths: tuple[int, ...] = (2, 3)) -> int | tuple[int | None, ...] | None:
    """An int, or a tuple of ``lengths`` ints (one per spatial axis), each >= ``minimum``; None passes through.

    ``allow_none`` lets single axes of a tuple be None ("unset, use the default"). Strings are refused, so a
    command-line value must be parsed before it gets here.

    Raises
    ------
    ValueError
        Naming ``name``, the offending entry and what is expected.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be an integer >= {minimum} or a tuple of them, got {value!r}")
    if not isinstance(value, Sequence) and not hasattr(value, "__len__"):
        return check_int(value, name, minimum=minimum)
    values = tuple(value)
    if len(values) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise ValueError(f"{name} must be an integer >= {minimum} or {want} of them (one per spatial axis), got "
                         f"{value!r}")
    checked: list[int | None] = []
    for v in values:
        if v is None and allow_none:
            checked.append(None)
            continue
        number = _as_int(v)
        if number is None or number < minimum:
            raise ValueError(f"{name} must hold integers >= {minimum}, got {v!r} in {value!r}")
        checked.append(number)
    return tuple(checked)


def check_probability(value: Any, name: str) -> float:
    """Return ``value`` as a float if it lies strictly between 0 and 1, else raise a ValueError naming ``name``.

    Examples
    --------
    >>> check_probability(0.5, "threshold")
    0.5
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 < float(value) < 1.0
    if not ok:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)
