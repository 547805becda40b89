"""One argument order for every metric: scikit-image's ``(image_true, image_test)``, ground truth first.

Before emzoo 0.x the pixel metrics took ``(ground_truth, prediction)`` but the thinned Fiji scores
(:func:`emzoo.metrics.rand_info_thinned`, :func:`~emzoo.metrics.vrand_thinned`,
:func:`~emzoo.metrics.vinfo_thinned`) took ``(prediction, ground_truth)``; the thinned scores are asymmetric, so a
swapped call gave a plausible wrong number. :func:`true_test_order` keeps the old spellings working for a
deprecation period:

- the old keyword names (``ground_truth=``, ``prediction=``, ``prediction_labels=``) are mapped to
  ``image_true`` / ``image_test`` with a :class:`DeprecationWarning`; positional arguments mixed with them are
  bound in the function's *old* order, so every call that was valid before still means what it meant;
- for the thinned scores (``detect_swap=True``), two positional arguments in the clearly old order (the first a
  non-binary float probability map, the second a binary mask) are swapped, with a :class:`DeprecationWarning`.
  A non-binary ground truth with a binary proposal must then be passed by keyword
  (``image_true=..., image_test=...``): keyword calls are never swapped.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

__all__ = ["true_test_order"]

F = TypeVar("F", bound=Callable[..., Any])

_NEW = ("image_true", "image_test")
# Old keyword name -> new keyword name.
_RENAMED = {"ground_truth": "image_true", "prediction": "image_test", "prediction_labels": "image_test"}


def _is_binary(data: Any) -> bool:
    """A bool array, or a numeric array whose values are all 0 or 1."""
    array = np.asarray(data)
    if array.dtype.kind == "b":
        return True
    if array.dtype.kind not in "uif" or array.size == 0:
        return False
    return bool(np.isin(array, (0, 1)).all())


def _is_soft_probability(data: Any) -> bool:
    """A float array holding at least one value strictly between 0 and 1 (and nothing outside [0, 1])."""
    array = np.asarray(data)
    if array.dtype.kind != "f" or array.size == 0 or not np.isfinite(array).all():
        return False
    if float(array.min()) < 0.0 or float(array.max()) > 1.0:
        return False
    return bool(((array > 0) & (array < 1)).any())


def looks_swapped(first: Any, second: Any) -> bool:
    """True when ``(first, second)`` is clearly ``(probability map, binary ground truth)``: the old order."""
    try:
        return _is_soft_probability(first) and _is_binary(second)
    except (TypeError, ValueError):  # not numeric: the metric's own validation reports it
        return False


def true_test_order(old_order: tuple[str, str], *, detect_swap: bool = False) -> Callable[[F], F]:
    """Decorate a metric ``f(image_true, image_test, *, ...)`` that used to be ``f(*old_order, *, ...)``.

    Parameters
    ----------
    old_order : (str, str)
        The old names of the first two parameters, in their old order, e.g. ``("prediction", "ground_truth")``.
    detect_swap : bool
        Swap two positional arguments given in the clearly old order (see the module notes).
    """
    for name in old_order:
        if name not in _RENAMED:
            raise ValueError(f"unknown old argument name {name!r}")

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            old = [name for name in old_order if name in kwargs]
            if old:
                mixed = [name for name in _NEW if name in kwargs]
                if mixed:
                    raise TypeError(f"{func.__name__}() got old ({', '.join(old)}) and new ({', '.join(mixed)}) "
                                    "argument names; pass image_true= (ground truth) and image_test= only.")
                bound = dict(zip(old_order, args[:2], strict=False))
                for name in old:
                    if name in bound:
                        raise TypeError(f"{func.__name__}() got multiple values for argument {name!r}")
                    bound[name] = kwargs.pop(name)
                missing = [name for name in old_order if name not in bound]
                if missing:
                    raise TypeError(f"{func.__name__}() missing argument(s): {', '.join(missing)}")
                for name, value in bound.items():
                    kwargs[_RENAMED[name]] = value
                warnings.warn(
                    f"{func.__name__}({', '.join(n + '=' for n in old_order)}) is deprecated; call "
                    f"{func.__name__}(image_true, image_test): ground truth first, as in scikit-image.",
                    DeprecationWarning, stacklevel=2)
                return func(*args[2:], **kwargs)
            if detect_swap and len(args) >= 2 and looks_swapped(args[0], args[1]):
                warnings.warn(
                    f"{func.__name__}() got a probability map first and a binary mask second: the old "
                    f"(prediction, ground_truth) order, swapped for you. The order is now "
                    f"{func.__name__}(image_true, image_test), ground truth first; positional calls in the old order "
                    "are deprecated. Pass image_true= and image_test= by keyword to score a soft ground truth "
                    "against a binary proposal.",
                    DeprecationWarning, stacklevel=2)
                args = (args[1], args[0], *args[2:])
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
