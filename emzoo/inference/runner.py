"""A Keras model seen from the tiler: which kind of net it is, what windows it takes and gives, and how to call it.

Every net is handled as a map from a ``(Z, Y, X)`` input window to a ``(Z, Y, X)`` output window:

- ``"2d"``: a 2D net; the window is one z slice (``Z = 1``), so a stack is predicted slice by slice.
- ``"multiframe"``: a multi-frame net (CDeep3M 3fm/5fm: input ``(frames, H, W, 1)``, 2D output for the centre slice);
  the window is ``frames`` slices in, one slice out, i.e. a net that is *valid* along z.
- ``"3d"``: a 3D net (same-size or valid: net2d3d's output is smaller than its input in y/x).
"""

from __future__ import annotations

import math
import threading
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from emzoo.inference.receptive import _first, analyse_graph, receptive_field

__all__ = ["ModelRunner", "bfloat16_copy"]

_PRECISIONS = ("float32", "bfloat16")


def bfloat16_copy(model: Any) -> Any:
    """``model`` rebuilt under Keras' ``mixed_bfloat16`` policy (bfloat16 compute, float32 weights), same weights.

    The layers that produce the outputs stay float32, so probabilities keep float32 resolution (a bfloat16 sigmoid
    has steps of 1/256 near 1). Functional and Sequential models only.

    Raises
    ------
    ValueError
        For a model without a config to rebuild (subclassed); use ``precision="float32"`` for it.
    """

    def names(outputs: Any) -> set[str]:
        # One output is saved as a single [name, node, index] triple, several as a list of them.
        outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs or []
        return {str(o[0]) for o in outputs}

    try:
        config = model.get_config()
        output_names = names(config["output_layers"])
    except (NotImplementedError, KeyError, TypeError, IndexError):
        raise ValueError(f"{model.name}: bfloat16 inference rebuilds the model from its config, which this model "
                         "does not have; use precision='float32'.") from None

    def retype(layers: list[dict[str, Any]], keep: set[str]) -> None:
        for layer in layers:
            cfg = layer.get("config", {})
            if isinstance(cfg.get("layers"), list):  # a nested model
                retype(cfg["layers"], names(cfg.get("output_layers")) if keep else set())
            if layer.get("class_name") == "InputLayer" or cfg.get("name") in keep:
                continue
            if isinstance(cfg.get("dtype"), dict) and cfg["dtype"].get("class_name") == "DTypePolicy":
                cfg["dtype"] = {**cfg["dtype"], "config": {"name": "mixed_bfloat16"}}

    retype(config["layers"], output_names)
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    object.__setattr__(copy, "emzoo_metadata", getattr(model, "emzoo_metadata", {}))
    return copy


class ModelRunner:
    """Geometry and calling convention of one model.

    Parameters
    ----------
    model : keras.Model
        The model (first output used when it has several).
    margin : tuple of int, optional
        Receptive-field margin per data axis ``(z, y, x)``; computed with :func:`receptive_field` when omitted.
    divisor : tuple of int, optional
        Extra divisor per model input spatial axis (e.g. the registry's ``info(name).divisor``), combined with the
        one found in the layer graph.

    Attributes
    ----------
    kind : {"2d", "multiframe", "3d"}
    in_channels, num_classes : int
    fixed : tuple of (int or None)
        Fixed input window per ``(z, y, x)`` (``z = 1`` for 2D nets, ``frames`` for multi-frame ones).
    divisor : tuple of int
        Per ``(z, y, x)``, the multiple a window side must be.
    margin : tuple of int
        Receptive-field margin per ``(z, y, x)`` (``frames // 2`` along z for multi-frame nets, 0 for 2D nets).
    metadata : dict
        ``model.emzoo_metadata`` (preset ``emzoo.json``) or ``{}``.
    precision : {"float32", "bfloat16"}
        Compute precision of the calls (``"bfloat16"`` runs :func:`bfloat16_copy` of the model).
    """

    def __init__(self, model: Any, *, margin: tuple[int, ...] | None = None,
                 divisor: tuple[int, ...] | None = None, precision: str = "float32") -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.source_model = model  # geometry, weights digest and memory are read from the float32 model
        model = bfloat16_copy(model) if precision == "bfloat16" else model
        self.model = model
        self.metadata: dict[str, Any] = dict(getattr(model, "emzoo_metadata", None) or {})
        in_shape = tuple(model.inputs[0].shape[1:])
        out_shape = tuple(_first(model.outputs).shape[1:])
        self.in_channels = int(in_shape[-1]) if in_shape[-1] is not None else 1
        self.num_classes = int(out_shape[-1])
        n_in, n_out = len(in_shape) - 1, len(out_shape) - 1
        if n_in == 2 and n_out == 2:
            self.kind = "2d"
            self.fixed: tuple[int | None, ...] = (1, *in_shape[:2])
        elif n_in == 3 and n_out == 2:
            self.kind = "multiframe"
            if in_shape[0] is None:
                raise ValueError(f"{model.name}: a multi-frame net needs a fixed number of frames in its input "
                                 f"shape, got {in_shape}.")
            self.fixed = tuple(in_shape[:3])
        elif n_in == 3 and n_out == 3:
            self.kind = "3d"
            self.fixed = tuple(in_shape[:3])
        else:
            raise ValueError(f"{model.name}: unsupported input/output ranks {in_shape} -> {out_shape}; emzoo predicts "
                             "2D (H, W, C), multi-frame (F, H, W, C) -> (H, W, K) and 3D (Z, Y, X, C) nets.")
        try:
            graph_div = analyse_graph(model).divisor
        except NotImplementedError:
            graph_div = (1,) * n_in
        div = list(graph_div)
        if divisor:
            div = [math.lcm(int(a), int(b)) for a, b in zip(div, divisor, strict=False)]
        if self.kind == "2d":
            self.divisor = (1, *div)
        elif self.kind == "multiframe":
            self.divisor = (1, *div[1:])
        else:
            self.divisor = tuple(div)
        if margin is None:
            margin = self._margin()
        self.margin = tuple(int(m) for m in margin)
        self._lock = threading.Lock()
        self._windows: dict[tuple[int, ...], tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._voxel_bytes: float | None = None

    @property
    def voxel_bytes(self) -> float:
        """Estimated peak memory of one call per input voxel (:func:`~emzoo.inference.budget.activation_bytes`)."""
        if self._voxel_bytes is None:
            from emzoo.inference.budget import activation_bytes

            size = tuple(self._default_probe_size())
            try:
                self._voxel_bytes = activation_bytes(self.source_model, size)
            except Exception:  # noqa: BLE001  (an estimate must never stop a prediction)
                self._voxel_bytes = 4096.0
        return self._voxel_bytes

    def _margin(self) -> tuple[int, ...]:
        probe = None
        if any(s is not None for s in self.fixed[1:]) or self.kind == "multiframe":
            probe = tuple(self._default_probe_size())
        try:
            m = receptive_field(self.model, method="analytic", input_shape=probe)
        except ValueError:
            warnings.warn(f"{self.model.name}: the layer graph holds a layer the analytic receptive field does not "
                          "know; measuring it with an impulse probe instead (a lower bound; pass halo= to be sure).",
                          stacklevel=3)
            m = receptive_field(self.model, method="probe", input_shape=probe)
        if self.kind == "2d":
            return (0, *m)
        if self.kind == "multiframe":
            return (int(self.fixed[0]) // 2, *m)
        return tuple(m)

    def _default_probe_size(self) -> list[int]:
        size = []
        axes = self.fixed if self.kind != "2d" else self.fixed[1:]
        divs = self.divisor if self.kind != "2d" else self.divisor[1:]
        for s, d in zip(axes, divs, strict=True):
            size.append(int(s) if s is not None else -(-256 // d) * d)
        return size

    def output_window(self, n_in: tuple[int, int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """``(n_out, offset)`` per ``(z, y, x)`` for an input window ``n_in``: the output covers input pixels
        ``[offset, offset + n_out)`` of the window (centred, as valid convolutions and genenet crops place it)."""
        key = tuple(int(n) for n in n_in)
        if key not in self._windows:
            from keras import KerasTensor

            if self.kind == "2d":
                shape = (1, key[1], key[2], self.in_channels)
            else:
                shape = (1, *key, self.in_channels)
            spec = _first(self.model.compute_output_spec(KerasTensor(shape)))
            out = tuple(int(s) for s in spec.shape[1:-1])
            n_out = (1, *out) if len(out) == 2 else out
            offset = tuple((a - b) // 2 for a, b in zip(key, n_out, strict=True))
            self._windows[key] = (n_out, offset)  # type: ignore[assignment]
        return self._windows[key]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Predict a batch of windows ``(B, Z, Y, X, C)`` -> ``(B, Zo, Yo, Xo, K)`` float32."""
        x = batch[:, 0] if self.kind == "2d" else batch
        y = np.asarray(_first(self.model.predict_on_batch(x)), dtype=np.float32)
        if self.kind != "3d":
            y = y[:, None]
        return y

    def warm_up(self, n_in: tuple[int, int, int]) -> None:
        """Build the predict function once on this thread (Keras creates it lazily, which is not thread-safe)."""
        with self._lock:
            self(np.zeros((1, *n_in, self.in_channels), np.float32))


@lru_cache(maxsize=64)
def blend_window(kind: str, n: int) -> np.ndarray:
    """1D blending weights of length ``n`` (all positive, mean 1).

    ``"spline"`` is the second-order spline window of "Smoothly-Blend-Image-Patches" (Franco-Barranco et al.;
    ``TRAINING.md`` §6.3); ``"linear"`` a triangle (tent) that cross-fades overlapping tiles linearly; ``"none"``
    ones.

    Examples
    --------
    >>> blend_window("linear", 4).round(3).tolist()
    [0.5, 1.5, 1.5, 0.5]
    """
    if kind == "none" or n < 4:
        return np.ones(n, np.float32)
    i = np.arange(n, dtype=np.float64)
    if kind == "linear":
        w = 1.0 - np.abs(2.0 * (i + 0.5) / n - 1.0)
    elif kind == "spline":
        from scipy.signal.windows import triang

        t = triang(n)
        q = n // 4
        outer = (np.abs(2.0 * t) ** 2) / 2.0
        outer[q:n - q] = 0.0
        inner = 1.0 - (np.abs(2.0 * (t - 1.0)) ** 2) / 2.0
        inner[:q] = 0.0
        inner[n - q:] = 0.0
        w = outer + inner
    else:
        raise ValueError(f"blend must be 'spline', 'linear' or 'none', got {kind!r}")
    return (w / w.mean()).astype(np.float32)
