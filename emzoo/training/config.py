"""A fine-tuning run's configuration, resolved once from the recipe and the caller's overrides.

:func:`emzoo.finetune` fills every argument the caller leaves out from a :class:`~emzoo.training.recipes.Recipe`,
once, into a frozen :class:`TrainConfig`. The config is plain data (JSON through :meth:`TrainConfig.to_dict`): the
checkpoint stores it, so a resumed run is checked against it and can be replayed from it, and the preset records its
:meth:`TrainConfig.recipe_record`. The live objects built from it (loss, optimiser, sampler, augmentation; or the
caller's own instances) travel beside it as :class:`TrainParts`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from emzoo._hardware import cpu_has_bf16, gpu_available
from emzoo.io.normalize import fit_normalization
from emzoo.training.augment import Augment
from emzoo.training.data import MODES, TrainingVolume
from emzoo.training.losses import PackedLoss
from emzoo.training.optimizers import make_optimizer
from emzoo.training.recipes import Recipe
from emzoo.training.sampling import Sampler, choose_sampler, make_sampler

__all__ = ["TrainConfig", "TrainParts", "mixed_policy", "patch_window", "check_divisor", "normalization_spec",
           "intensity_range", "resolve_steps", "resolve_parts", "resolve_config", "MODES"]

_WEIGHTED_LOSSES = ("masked_dice", "weighted_ce")


def mixed_policy(mixed_precision: bool | str) -> str | None:
    """``"auto"``: ``mixed_bfloat16`` on a GPU, and on a CPU with native bfloat16 under TensorFlow (there it
    trained ``emnet_v2_4x`` 1.9x and ``emnet_v1_bn`` 1.4x faster at the same test F1: ``benchmarks/training.py
    --precision``); float32 elsewhere (JAX/PyTorch on CPU emulate bfloat16 and gain nothing)."""
    if mixed_precision is False or mixed_precision is None:
        return None
    if isinstance(mixed_precision, str) and mixed_precision != "auto":
        if mixed_precision not in ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"):
            raise ValueError(f"mixed_precision={mixed_precision!r}: use 'auto', True, False or a Keras dtype policy "
                             "('mixed_bfloat16', 'mixed_float16', 'float32').")
        return None if mixed_precision == "float32" else mixed_precision
    if mixed_precision is True or gpu_available():
        return "mixed_bfloat16"
    if keras.backend.backend() == "tensorflow" and cpu_has_bf16():
        return "mixed_bfloat16"
    return None


def patch_window(patch_size: Any, mode: str, frames: int) -> tuple[int, int, int]:
    """The ``(Z, Y, X)`` input window of a patch size (``Z`` = frames of a 2D or multi-frame model)."""
    size = (patch_size,) * (3 if mode == "3d" else 2) if isinstance(patch_size, int) else tuple(patch_size)
    if mode == "3d":
        if len(size) != 3:
            raise ValueError(f"a 3D model needs a (Z, Y, X) patch size, got {patch_size!r}.")
        return (int(size[0]), int(size[1]), int(size[2]))
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2:
        raise ValueError(f"a 2D model needs a (Y, X) patch size, got {patch_size!r}.")
    return (frames, int(size[0]), int(size[1]))


def check_divisor(window: tuple[int, int, int], divisor: tuple[int, ...], mode: str, name: str) -> None:
    """Refuse a window whose spatial sides are not multiples of the entry's divisor, naming the size to use."""
    spatial = window if mode == "3d" else window[1:]
    div = tuple(divisor[-len(spatial):]) if divisor else (1,) * len(spatial)
    if any(s % d for s, d in zip(spatial, div, strict=True)):
        fixed = tuple(max(d, round(s / d) * d) for s, d in zip(spatial, div, strict=True))
        raise ValueError(f"{name}: patch size {spatial} is not a multiple of {div}; use patch_size={fixed}.")


def normalization_spec(volumes: list[TrainingVolume], normalization: Any, recipe: Recipe) -> dict[str, Any]:
    """The normalisation fitted on the training volumes (or the fixed spec given)."""
    if isinstance(normalization, dict):
        return dict(normalization)
    method = normalization if isinstance(normalization, str) else recipe.normalization
    if method == "zscore":
        # Pooled statistics over every training voxel (EM-net: one global mean and std).
        n = sum(v.raw.size for v in volumes)
        mean = sum(float(v.raw.sum(dtype=np.float64)) for v in volumes) / n
        var = sum(float(((v.raw.astype(np.float64) - mean) ** 2).sum()) for v in volumes) / n
        return {"method": "zscore", "mean": mean, "std": math.sqrt(var) if var > 0 else 1.0}
    if method == "minmax":
        # The training data's range, fixed (EM-net's images / 255 is this for 8-bit data).
        lo = min(float(v.raw.min()) for v in volumes)
        hi = max(float(v.raw.max()) for v in volumes)
        return {"method": "minmax", "min": lo, "max": hi}
    return fit_normalization(volumes[0].raw, method)


def intensity_range(volumes: list[TrainingVolume]) -> float:
    """The 0.5-99.5 percentile range of the (normalised) training voxels: the scale of intensity augmentation."""
    sample = np.concatenate([v.raw.ravel()[:: max(1, v.raw.size // 200_000)] for v in volumes])
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(hi - lo) if hi > lo else 1.0


def resolve_steps(steps: int | None, epochs: float | None, recipe: Recipe, volumes: list[TrainingVolume],
                  label_window: Sequence[int], batch: int) -> int:
    """Training steps: given, else ``epochs`` over the training voxels, else the recipe's."""
    if steps is None:
        if epochs is not None:
            voxels = sum(v.labels.size for v in volumes)
            per_epoch = math.ceil(voxels / (int(np.prod(label_window)) * batch))
            steps = max(1, int(round(epochs * per_epoch)))
        else:
            steps = recipe.steps
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    return steps


@dataclass(frozen=True)
class TrainParts:
    """The live objects of a run, built from its :class:`TrainConfig` (or the caller's own instances)."""

    loss: Any
    optimizer: keras.optimizers.Optimizer
    sampler: Sampler
    augment: Augment
    sampler_choice: dict[str, Any] | None = None

    @property
    def weighted(self) -> bool:
        """Whether the loss reads a weight map packed after the labels."""
        return bool(getattr(self.loss, "weighted", False))


def resolve_parts(recipe: Recipe, volumes: list[TrainingVolume], *, loss: Any, optimizer: Any, learning_rate: Any,
                  sampler: Any, augment: Any, steps: int, label_window: tuple[int, ...]) -> tuple[TrainParts, float]:
    """Loss, optimiser, sampler (prepared on the labels) and augmentation: the caller's, else the recipe's.

    Returns the parts and the resolved learning rate.
    """
    has_weights = any(v.weights is not None for v in volumes)
    if loss is None:
        loss_obj: Any = PackedLoss(recipe.loss, weighted=recipe.weighted or has_weights,
                                   options=dict(recipe.loss_options))
    elif isinstance(loss, str):
        loss_obj = PackedLoss(loss, weighted=loss in _WEIGHTED_LOSSES or has_weights,
                              options=dict(recipe.loss_options) if loss == recipe.loss else {})
    else:
        loss_obj = loss
    lr = float(learning_rate if learning_rate is not None else recipe.learning_rate)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}.")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        opt = optimizer
    else:
        name = optimizer or recipe.optimizer
        same = name == recipe.optimizer
        opt = make_optimizer(name, learning_rate=lr, total_steps=steps, schedule=recipe.schedule if same else None,
                             **(dict(recipe.optimizer_options) if same else {}))
    choice = None
    sampler_name = recipe.sampler if sampler is None else sampler
    if sampler_name == "auto":
        sampler_obj, choice = choose_sampler([v.labels for v in volumes], label_window)
    elif isinstance(sampler_name, str):
        options = dict(recipe.sampler_options) if sampler_name == recipe.sampler else {}
        sampler_obj = make_sampler(sampler_name, **options)
    else:
        sampler_obj = sampler_name
    sampler_obj.prepare([v.labels for v in volumes], label_window)
    if augment is None:
        aug = recipe.augment
    elif augment is False:
        aug = Augment.none()
    elif augment is True:
        aug = Augment()
    elif isinstance(augment, dict):
        aug = Augment(**augment)
    else:
        aug = augment
    return TrainParts(loss_obj, opt, sampler_obj, aug, choice), lr


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_plain))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a fine-tuning run, resolved once (frozen, JSON-serialisable).

    Attributes
    ----------
    entry : str or None
        Registry entry (None for a model that is no zoo entry).
    mode : {"2d", "multiframe", "3d"}
        Training's spelling of the model kind (:data:`MODES`).
    num_classes : int
        Output classes.
    input_shape : tuple of int
        The model's training input shape (no batch axis).
    window, label_window : tuple of int
        Input and label windows ``(Z, Y, X)`` of a patch.
    num_outputs : int
        Model outputs (net2d3d: 2).
    steps, batch_size, seed : int
        Length, batch and seed of the run.
    recipe : dict
        The recipe record: the recipe's fields with the resolved overrides (what the preset records).
    normalization : dict
        The normalisation spec fitted on the training data.
    intensity_range : float
        Scale of the intensity augmentation.
    data : dict
        ``{"name", "sha256"}`` of the training data.
    split : dict or None
        How validation data were held out of the training data.
    build_kwargs : dict
        Builder overrides of the entry.
    checkpoint_every, eval_every : int
        Steps between checkpoints and between validations.
    keep_best : bool
        Keep the weights of the best validation F1.
    patience : int or None
        Validations without improvement before the run stops.
    recalibrate_bn : int
        BatchNorm recalibration batches before each validation and at the end.
    loss_weights : tuple of float
        Loss weight of each output.
    """

    entry: str | None
    mode: str
    num_classes: int
    input_shape: tuple[int, ...]
    window: tuple[int, ...]
    label_window: tuple[int, ...]
    num_outputs: int
    steps: int
    batch_size: int
    seed: int
    recipe: dict[str, Any]
    normalization: dict[str, Any]
    intensity_range: float
    data: dict[str, Any]
    split: dict[str, Any] | None
    build_kwargs: dict[str, Any]
    checkpoint_every: int
    eval_every: int
    keep_best: bool
    patience: int | None
    recalibrate_bn: int
    loss_weights: tuple[float, ...]

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must share with a run that resumes from it."""
        return {"entry": self.entry, "num_classes": self.num_classes, "input_shape": list(self.input_shape),
                "batch_size": self.batch_size, "steps": self.steps, "seed": self.seed, "recipe": self.recipe["name"],
                "data_sha256": self.data["sha256"], "loss": self.recipe["loss"], "optimizer": self.recipe["optimizer"],
                "learning_rate": self.recipe["learning_rate"], "split": self.split}

    def recipe_record(self) -> dict[str, Any]:
        """The resolved recipe recorded in the history and the preset (a shallow copy)."""
        return dict(self.recipe)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-able data (:meth:`from_dict` inverts it)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config of :meth:`to_dict`'s output (a checkpoint's ``config``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise ValueError(f"a training config needs {missing}; got the keys {sorted(data)}.")
        values = {k: data[k] for k in names}
        for key in ("input_shape", "window", "label_window", "loss_weights"):
            values[key] = tuple(values[key])
        return cls(**values)


def resolve_config(recipe: Recipe, parts: TrainParts, *, entry: str | None, mode: str, num_classes: int,
                   input_shape: tuple[int, ...], window: tuple[int, ...], label_window: tuple[int, ...],
                   num_outputs: int, steps: int, batch_size: int, seed: int, learning_rate: float,
                   normalization: dict[str, Any], intensity: float, data: dict[str, Any],
                   split: dict[str, Any] | None, build_kwargs: dict[str, Any], checkpoint_every: int | None,
                   eval_every: int | None, keep_best: bool, patience: int | None, recalibrate_bn: int,
                   freeze_encoder: bool, policy: str | None) -> TrainConfig:
    """The :class:`TrainConfig` of resolved values (checkpoint and validation intervals defaulted here)."""
    checkpoint_every = int(checkpoint_every or min(1000, max(1, math.ceil(steps / 5))))
    record = {
        **recipe.to_dict(),
        "steps": steps, "batch_size": batch_size, "patch_size": list(window if mode == "3d" else window[1:]),
        "loss": getattr(parts.loss, "loss", type(parts.loss).__name__),
        "optimizer": type(parts.optimizer).__name__, "learning_rate": learning_rate,
        "augment": parts.augment.to_dict(), "sampler": {**parts.sampler.config(), **(parts.sampler_choice or {})},
        "freeze_encoder": bool(freeze_encoder), "seed": seed, "recalibrate_bn": recalibrate_bn,
        "precision": policy or "float32",
    }
    loss_weights = list(recipe.output_loss_weights) + [0.33] * max(0, num_outputs - len(recipe.output_loss_weights))
    return TrainConfig(
        entry=entry, mode=mode, num_classes=num_classes, input_shape=tuple(input_shape), window=tuple(window),
        label_window=tuple(label_window), num_outputs=num_outputs, steps=steps, batch_size=batch_size, seed=seed,
        recipe=record, normalization=dict(normalization), intensity_range=float(intensity), data=dict(data),
        split=split, build_kwargs=dict(build_kwargs), checkpoint_every=checkpoint_every,
        eval_every=int(eval_every or checkpoint_every), keep_best=bool(keep_best), patience=patience,
        recalibrate_bn=int(recalibrate_bn), loss_weights=tuple(float(w) for w in loss_weights[:num_outputs]))
