"""``emzoo.finetune``: train or fine-tune a zoo entry on the user's own stack, reproducibly, with checkpoints.

The one place in emzoo that compiles models. A run is fully determined by its arguments and ``seed``:

- the model is built after ``keras.utils.set_random_seed(seed)``;
- batch ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` (:class:`~emzoo.training.data.PatchDataset`), so
  data does not depend on loader threads and a resumed run sees exactly the batches of an uninterrupted one;
- a checkpoint holds every model variable (the dropout seed-generator states included), every optimiser variable
  (the step counter included) and the best weights so far; resuming from it continues bit for bit on CPU.

Defaults come from a named recipe (:mod:`emzoo.training.recipes`), chosen from the entry's family unless given.
Validation runs on whole images, un-augmented, normalised with the *training* statistics (EM-stellar bugs 2 and 3
fixed), and the best validation F1 wins. The final model is written as a preset folder
(:func:`emzoo.hub.presets.save_preset`) holding inference weights only, with the normalisation, data hash, recipe,
seed and validation scores in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from emzoo.io.normalize import fit_normalization, normalize
from emzoo.training import transfer
from emzoo.training.augment import Augment
from emzoo.training.data import DataSource, PatchDataset, TrainingVolume, load_pairs, prefetch, prepare_labels
from emzoo.training.evaluate import PixelF1, at_input_shape, predict_whole, recalibrate_batchnorm, score
from emzoo.training.folds import holdout_split
from emzoo.training.losses import PackedLoss
from emzoo.training.optimizers import make_optimizer
from emzoo.training.recipes import Recipe, default_recipe, get_recipe
from emzoo.training.sampling import Sampler, make_sampler

__all__ = ["finetune", "weights_sha256", "gpu_available"]

_WEIGHTED_LOSSES = ("masked_dice", "weighted_ce")


# ----------------------------------------------------------------------------------------------------- helpers


def weights_sha256(model: keras.Model) -> str:
    """sha256 over the model's weights (shapes and float32 bytes, in order): equal hashes = equal weights.

    Examples
    --------
    >>> import emzoo
    >>> len(weights_sha256(emzoo.build("unet", input_shape=(32, 32, 1), widths=(4, 8, 16))))
    64
    """
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(str(w.shape).encode())
        digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return digest.hexdigest()


def gpu_available() -> bool:
    """Whether the active Keras backend sees a GPU."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken GPU stack means "no GPU"
        return False
    return False


def _is_bare_entry(model_or_name: Any) -> bool:
    from emzoo.registry import list_models

    return isinstance(model_or_name, str) and model_or_name in list_models()


def _entry_of(model_or_name: Any) -> str | None:
    from emzoo.registry import list_models

    if isinstance(model_or_name, str):
        return model_or_name
    meta = getattr(model_or_name, "emzoo_metadata", None) or {}
    name = meta.get("entry") or getattr(model_or_name, "name", None)
    return name if name in list_models() else None


def _mode(model: keras.Model) -> str:
    in_rank = len(model.input_shape)
    out_shape = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
    if in_rank == 4:
        return "2d"
    if in_rank == 5:
        return "multiframe" if len(out_shape) == 4 else "3d"
    raise ValueError(f"model {model.name!r} takes {in_rank - 2}D inputs; emzoo trains 2D, multi-frame and 3D models.")


def _patch_window(patch_size: Any, mode: str, frames: int) -> tuple[int, int, int]:
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


def _check_divisor(window: tuple[int, int, int], divisor: tuple[int, ...], mode: str, name: str) -> None:
    spatial = window if mode == "3d" else window[1:]
    div = tuple(divisor[-len(spatial):]) if divisor else (1,) * len(spatial)
    if any(s % d for s, d in zip(spatial, div, strict=True)):
        fixed = tuple(max(d, round(s / d) * d) for s, d in zip(spatial, div, strict=True))
        raise ValueError(f"{name}: patch size {spatial} is not a multiple of {div}; use patch_size={fixed}.")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16 in ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


def _mixed_policy(mixed_precision: bool | str) -> str | None:
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


def _build(entry: str, input_shape: tuple[Any, ...], num_classes: int, build_kwargs: dict[str, Any],
           policy: str | None) -> keras.Model:
    from emzoo.registry import build

    previous = keras.config.dtype_policy()
    try:
        if policy is not None:
            keras.config.set_dtype_policy(policy)
        return build(entry, input_shape=input_shape, num_classes=num_classes, **build_kwargs)
    finally:
        keras.config.set_dtype_policy(previous)


def _check_rebuildable(model: keras.Model, entry: str | None, build_kwargs: dict[str, Any],
                       input_shape: tuple[Any, ...], num_classes: int) -> None:
    """Fail before training, not after it, when the preset could not rebuild the model."""
    from emzoo.registry import build

    if entry is None:
        raise ValueError(f"model {model.name!r} is not a zoo entry, so no preset can describe it; pass out_dir=None "
                         "and save the weights yourself (model.save_weights).")
    rebuilt = build(entry, input_shape=input_shape, num_classes=num_classes, **build_kwargs)
    have = [tuple(w.shape) for w in model.weights]
    want = [tuple(w.shape) for w in rebuilt.weights]
    if have != want:
        raise ValueError(f"emzoo.build({entry!r}, **{build_kwargs}) does not rebuild this model (other weight shapes), "
                         "so its preset could not be loaded; pass build_kwargs= with the overrides it was built with "
                         "(e.g. widths=...).")


def _normalization(volumes: list[TrainingVolume], normalization: Any, recipe: Recipe) -> dict[str, Any]:
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


def _intensity_range(volumes: list[TrainingVolume]) -> float:
    sample = np.concatenate([v.raw.ravel()[:: max(1, v.raw.size // 200_000)] for v in volumes])
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(hi - lo) if hi > lo else 1.0


def _class_names(source: DataSource, num_classes: int) -> list[str] | None:
    names = source.class_names
    if names is None:
        return None
    if num_classes == 1:
        return [names[1]] if len(names) >= 2 else None
    return list(names[:num_classes]) if len(names) >= num_classes else None


def _to_numpy(variable: Any) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable))


class _Validator:
    """Whole-image validation with a copy of the model at a free (or the image's) size, weights synced each time."""

    def __init__(self, volumes: list[TrainingVolume], mode: str, entry: str | None,
                 build_kwargs: dict[str, Any]) -> None:
        self.volumes = volumes
        self.mode = mode
        self.entry = entry
        self.build_kwargs = build_kwargs
        self.copies: dict[Any, keras.Model] = {}
        self.labels = np.concatenate([v.labels.ravel() for v in volumes])
        masks = [v.weights for v in volumes]
        self.mask = None if all(m is None for m in masks) else np.concatenate(
            [(np.ones(v.labels.shape) if m is None else m).ravel() for v, m in zip(volumes, masks, strict=True)])

    def _copy(self, model: keras.Model, volume: TrainingVolume) -> keras.Model:
        if "free" not in self.copies:
            self.copies["free"] = _free_copy(model, self.mode, self.entry, self.build_kwargs)
        if self.copies["free"] is not None:
            return self.copies["free"]
        # Sizes fixed by the architecture (CDeep3M's multi-frame squeeze): one copy per image size.
        shape = tuple(model.input_shape[1:])
        div = _divisor(self.entry, len(shape) - 1)
        spatial = volume.raw.shape if self.mode == "3d" else volume.raw.shape[1:]
        sized = tuple(-(-n // d) * d for n, d in zip(spatial, div[-len(spatial):], strict=True))
        target = (*sized, shape[-1]) if self.mode != "multiframe" else (shape[0], *sized, shape[-1])
        if target not in self.copies:
            try:
                self.copies[target] = at_input_shape(model, target, entry=self.entry, build_kwargs=self.build_kwargs)
            except ValueError:
                self.copies[target] = model  # tiled at the training size by emzoo.predict
        return self.copies[target]

    def __call__(self, model: keras.Model) -> dict[str, float]:
        weights = model.get_weights()
        probs = []
        synced: set[int] = set()
        for vol in self.volumes:
            copy = self._copy(model, vol)
            if copy is not model and id(copy) not in synced:
                copy.set_weights(weights)
                synced.add(id(copy))
            probs.append(predict_whole(copy, vol.raw, mode=self.mode))
        flat = np.concatenate([p.reshape(-1, p.shape[-1]) for p in probs])
        return score(self.labels, flat, mask=self.mask)


def _divisor(entry: str | None, ndim: int) -> tuple[int, ...]:
    if entry is not None:
        from emzoo.registry import get_entry

        div = get_entry(entry).info.divisor
        if div:
            return tuple(div)
    return (1,) * ndim


def _free_copy(model: keras.Model, mode: str, entry: str | None, build_kwargs: dict[str, Any]) -> keras.Model | None:
    """The model with a free spatial input size (the frames of a multi-frame model stay), or None."""
    shape = tuple(model.input_shape[1:])
    free = (shape[0], None, None, shape[-1]) if mode == "multiframe" else (None,) * (len(shape) - 1) + (shape[-1],)
    try:
        return at_input_shape(model, free, entry=entry, build_kwargs=build_kwargs)
    except ValueError:
        return None  # architectures with static sizes (CDeep3M multi-frame, net2d3d crops)


# ---------------------------------------------------------------------------------------------------- checkpoints


def _latest_checkpoint(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    done = sorted(p for p in directory.glob("step_*") if (p / "state.json").exists())
    return done[-1] if done else None


def _save_checkpoint(directory: Path, step: int, model: keras.Model, state: dict[str, Any],
                     best_weights: list[np.ndarray] | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"model_{i}": _to_numpy(v) for i, v in enumerate(model.variables)}
    arrays.update({f"optimizer_{i}": _to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
    if best_weights is not None:
        arrays.update({f"best_{i}": w for i, w in enumerate(best_weights)})
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-"))
    try:
        np.savez(tmp / "variables.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
        target = directory / f"step_{step:09d}"
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in directory.glob("step_*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _load_checkpoint(path: Path, model: keras.Model) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    state = json.loads((path / "state.json").read_text())
    with np.load(path / "variables.npz") as data:
        model_vars, opt_vars = model.variables, model.optimizer.variables
        n_model = sum(k.startswith("model_") for k in data.files)
        n_opt = sum(k.startswith("optimizer_") for k in data.files)
        if n_model != len(model_vars) or n_opt != len(opt_vars):
            raise ValueError(f"checkpoint {path} holds {n_model} model / {n_opt} optimizer variables but this run has "
                             f"{len(model_vars)} / {len(opt_vars)}; pass resume=False or another out_dir.")
        for i, v in enumerate(model_vars):
            v.assign(data[f"model_{i}"])
        for i, v in enumerate(opt_vars):
            v.assign(data[f"optimizer_{i}"])
        n_best = sum(k.startswith("best_") for k in data.files)
        best = [data[f"best_{i}"] for i in range(n_best)] if n_best else None
    return state, best


# ------------------------------------------------------------------------------------------------------ finetune


def finetune(
    model_or_name: str | keras.Model,
    train: Any,
    val: Any = None,
    *,
    test: Any = None,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    patch_size: int | tuple[int, ...] | None = None,
    loss: str | keras.losses.Loss | None = None,
    optimizer: str | keras.optimizers.Optimizer | None = None,
    learning_rate: float | None = None,
    augment: Augment | dict[str, Any] | bool | None = None,
    sampler: str | Sampler | None = None,
    freeze_encoder: bool = False,
    num_classes: int | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    recipe: str | Recipe | None = None,
    progress: bool = True,
    normalization: str | dict[str, Any] | None = None,
    val_fraction: float | None = None,
    checkpoint_every: int | None = None,
    eval_every: int | None = None,
    keep_best: bool = True,
    keep_checkpoints: bool = False,
    recalibrate_bn: int = 16,
    workers: int = 2,
    mixed_precision: bool | str = "auto",
    build_kwargs: dict[str, Any] | None = None,
    data_name: str | None = None,
    description: str | None = None,
    on_step: Callable[[int, keras.Model], None] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Train a zoo entry (from scratch or from given weights) on the user's data.

    Parameters
    ----------
    model_or_name : str or keras.Model
        An entry name (built fresh, random weights); ``entry.tag``, ``hf://...``, a preset folder or a ``.keras``
        file (loaded with :func:`emzoo.load`, fine-tuned from those weights); or a model.
    train : data
        ``(raw, labels)`` arrays, ``(raw, labels, weights)``, a dataset folder (``train/raw.tif``,
        ``train/labels.tif``) or a list of these. Labels 0/255 or 0/1 are binarised for binary models.
    val : data, optional
        Validation data in the same forms (a dataset folder gives its ``val/`` or ``test/`` split); picks the best
        checkpoint.
    test : data, optional
        Test data (a dataset folder gives its ``test/`` split), scored once with the returned weights and never used
        for any choice; its scores become the preset's ``metrics``.
    steps : int, optional
        Training steps (batches). Default: ``epochs`` converted, else the recipe's.
    epochs : float, optional
        Passes over the training voxels (one epoch = as many label windows as it takes to cover them once).
    batch_size, patch_size : optional
        Patches per step; in-plane ``(Y, X)`` (2D, multi-frame) or ``(Z, Y, X)`` (3D) window. Recipe defaults.
    loss : str or keras Loss, optional
        Name of :data:`emzoo.training.losses.LOSSES` or a Keras loss. Recipe default.
    optimizer : str or keras Optimizer, optional
        ``"radam"``, ``"sgd"``, ``"adam"`` (with the recipe's schedule when it is the recipe's optimiser) or an
        optimiser instance. Recipe default.
    learning_rate : float, optional
        Base learning rate of a named optimiser. Recipe default.
    augment : Augment, dict, bool, optional
        Augmentation; ``False`` turns it off. Recipe default.
    sampler : str or Sampler, optional
        ``"uniform"``, ``"foreground"``, ``"cdeep3m"``, ``"class_balanced"`` or a sampler. Recipe default.
    freeze_encoder : bool
        Freeze every layer before the deepest downsampling (:func:`emzoo.training.transfer.freeze_encoder`).
    num_classes : int, optional
        Output classes; a model with another count gets a new head (:func:`~emzoo.training.transfer.replace_head`).
    seed : int
        Seed of weights, batches and augmentation.
    out_dir : path, optional
        Checkpoints go to ``out_dir/checkpoints`` during training; at the end ``out_dir`` becomes a preset folder
        (``emzoo.load(out_dir)``).
    resume : bool
        Continue from the last checkpoint in ``out_dir`` (it must come from the same configuration). False starts
        over and replaces ``out_dir``.
    recipe : str or Recipe, optional
        ``"emnet"``, ``"cdeep3m"``, ``"highres3d"``, ``"net2d3d"``, ``"franco_barranco"``; default from the family.
    progress : bool
        Show a progress bar with loss, batch F1 and validation F1.
    normalization : str or dict, optional
        Method fitted on the training data (``"zscore"``, ``"minmax"``, ``"percentile"``) or a fixed spec.
    val_fraction : float, optional
        Without ``val``: hold out this fraction of the slices (the last slab, one slice of gap) for validation.
    checkpoint_every, eval_every : int, optional
        Steps between checkpoints / validations (default: a fifth of the run, at most 1000).
    keep_best : bool
        Return (and save) the weights of the best validation F1 instead of the last ones.
    keep_checkpoints : bool
        Keep ``out_dir/checkpoints`` after the preset is written (default: removed, the preset holds no optimiser
        state).
    recalibrate_bn : int
        Before every validation and at the end, re-estimate the BatchNorm moving statistics from this many
        un-augmented training batches (:func:`~emzoo.training.evaluate.recalibrate_batchnorm`); 0 keeps Keras'
        moving averages, which lag the weights by hundreds of steps (an emzoo addition, not in the source recipes).
    workers : int
        Loader threads.
    mixed_precision : bool or str
        ``"auto"``: ``mixed_bfloat16`` on a GPU or a CPU with native bfloat16 (AMX/AVX512-BF16, TensorFlow backend;
        only for models built here), else float32; or a policy name; False for float32.
    build_kwargs : dict, optional
        Builder overrides (``widths=...``) for a named entry; recorded in the preset.
    data_name : str, optional
        Name recorded for the training data (default: the dataset folder's).
    description : str, optional
        Preset description.
    on_step : callable, optional
        ``on_step(step, model)`` after every finished step (``step`` counts from 1), e.g. to keep snapshots for a
        learning curve; it must not change the model.

    Returns
    -------
    model : keras.Model
        The trained model (spatial input size free where the architecture allows).
    history : dict
        Per-step ``loss`` (and batch ``f1``), ``val`` records, ``val_metrics`` of the returned weights, timing
        (``elapsed_s``, ``samples_per_s``), ``initial_weights_sha256``, the resolved configuration and
        ``normalization``.

    Raises
    ------
    ValueError
        Inconsistent arguments (patch size not a multiple of the divisor, labels above the class count, a checkpoint
        from another configuration...).

    Examples
    --------
    >>> model, history = finetune("emnet_v1_bn", "cardiac_mito/", "cardiac_mito/", steps=600, batch_size=4,
    ...                           patch_size=128, out_dir="emnet_cardiac")  # doctest: +SKIP
    >>> history["val_metrics"]["f1"]  # doctest: +SKIP
    """
    started = time.perf_counter()
    if isinstance(model_or_name, (str, os.PathLike)) and not _is_bare_entry(model_or_name):
        # entry.tag, hf://..., a preset folder or a .keras file: start from those weights.
        from emzoo.hub.presets import load

        model_or_name = load(model_or_name)
    entry = _entry_of(model_or_name)
    if isinstance(model_or_name, str):
        from emzoo.registry import get_entry

        dims = get_entry(entry).info.dims
    else:
        dims = {"2d": "2D", "multiframe": "3D->2D", "3d": "3D"}[_mode(model_or_name)]
    rec = get_recipe(recipe) if recipe is not None else default_recipe(entry, dims=dims)
    build_kwargs = dict(build_kwargs or {})
    keras.utils.set_random_seed(seed)

    # ---- data
    volumes, source = load_pairs(train, split="train")
    split_record = None
    if val is not None:
        val_volumes, val_source = load_pairs(val, split="val")
        if val_source.sha256 == source.sha256:
            raise ValueError("the validation data is the training data (same content digest); pass a separate "
                             "validation split, or val_fraction= to carve one from the training data.")
    elif val_fraction:
        volumes, val_volumes, split_record = holdout_split(volumes, val_fraction, gap=1)
    else:
        val_volumes = None
    source = DataSource(name=data_name or source.name, sha256=source.sha256, class_names=source.class_names)

    # ---- model
    policy = _mixed_policy(mixed_precision)
    if isinstance(model_or_name, str):
        from emzoo.registry import get_entry

        info = get_entry(entry).info
        n_classes = int(num_classes or info.num_classes)
        mode = {"2D": "2d", "3D->2D": "multiframe", "3D": "3d"}[info.dims]
        frames = int(info.input_shape[0]) if mode == "multiframe" else 1
        window = _patch_window(patch_size or rec.patch_size, mode, frames)
        _check_divisor(window, info.divisor, mode, entry)
        channels = int(info.input_shape[-1])
        input_shape = (*window[1:], channels) if mode == "2d" else (*window, channels)
        model = _build(entry, input_shape, n_classes, build_kwargs, policy)
    else:
        model = model_or_name
        out_shape = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
        n_classes = int(num_classes or out_shape[-1])
        if n_classes != out_shape[-1]:
            model = transfer.replace_head(model, n_classes, entry=entry, build_kwargs=build_kwargs)
        mode = _mode(model)
        frames = int(model.input_shape[1]) if mode == "multiframe" else 1
        window = _patch_window(patch_size or rec.patch_size, mode, frames)
        if entry is not None:
            from emzoo.registry import get_entry

            _check_divisor(window, get_entry(entry).info.divisor, mode, entry)
        channels = int(model.input_shape[-1])
        input_shape = (*window[1:], channels) if mode == "2d" else (*window, channels)
        model = at_input_shape(model, input_shape, entry=entry, build_kwargs=build_kwargs)
    if out_dir is not None:
        _check_rebuildable(model, entry, build_kwargs, input_shape, n_classes)
    frozen = transfer.freeze_encoder(model) if freeze_encoder else []
    initial_sha = weights_sha256(model)
    out_spec = model.compute_output_spec(keras.KerasTensor((1, *input_shape)))
    out_spec = out_spec[0] if isinstance(out_spec, (list, tuple)) else out_spec
    out_spatial = tuple(int(s) for s in out_spec.shape[1:-1])
    label_window = (1, *out_spatial) if mode != "3d" else out_spatial
    num_outputs = len(model.outputs)

    # ---- labels, normalisation
    for vol in volumes + (val_volumes or []):
        if np.issubdtype(vol.raw.dtype, np.floating) and not np.isfinite(vol.raw).all():
            raise ValueError(f"the raw data holds {int((~np.isfinite(vol.raw)).sum())} NaN/inf values; training on "
                             "them gives NaN weights. Fix or mask them first.")
        vol.labels = prepare_labels(vol.labels, n_classes)
    spec = _normalization(volumes, normalization, rec)
    for vol in volumes + (val_volumes or []):
        vol.raw = normalize(vol.raw, spec)
    intensity_range = _intensity_range(volumes)

    # ---- steps, loss, optimiser, sampler, augmentation
    batch = int(batch_size or rec.batch_size)
    if steps is None:
        if epochs is not None:
            voxels = sum(v.labels.size for v in volumes)
            per_epoch = math.ceil(voxels / (int(np.prod(label_window)) * batch))
            steps = max(1, int(round(epochs * per_epoch)))
        else:
            steps = rec.steps
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if loss is None:
        loss_obj: Any = PackedLoss(rec.loss, weighted=rec.weighted or any(v.weights is not None for v in volumes),
                                   options=dict(rec.loss_options))
    elif isinstance(loss, str):
        loss_obj = PackedLoss(loss, weighted=loss in _WEIGHTED_LOSSES or any(v.weights is not None for v in volumes),
                              options=dict(rec.loss_options) if loss == rec.loss else {})
    else:
        loss_obj = loss
    weighted = bool(getattr(loss_obj, "weighted", False))
    lr = float(learning_rate if learning_rate is not None else rec.learning_rate)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}.")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        opt = optimizer
    else:
        name = optimizer or rec.optimizer
        same = name == rec.optimizer
        opt = make_optimizer(name, learning_rate=lr, total_steps=steps, schedule=rec.schedule if same else None,
                             **(dict(rec.optimizer_options) if same else {}))
    if sampler is None:
        sampler_obj = make_sampler(rec.sampler, **dict(rec.sampler_options))
    elif isinstance(sampler, str):
        sampler_obj = make_sampler(sampler, **(dict(rec.sampler_options) if sampler == rec.sampler else {}))
    else:
        sampler_obj = sampler
    sampler_obj.prepare([v.labels for v in volumes], label_window)
    if augment is None:
        aug = rec.augment
    elif augment is False:
        aug = Augment.none()
    elif augment is True:
        aug = Augment()
    elif isinstance(augment, dict):
        aug = Augment(**augment)
    else:
        aug = augment
    dataset = PatchDataset(volumes, input_window=window, label_window=label_window, sampler=sampler_obj,
                           augment=aug, batch_size=batch, steps=steps, seed=seed, mode=mode, weighted=weighted,
                           num_outputs=num_outputs, intensity_range=intensity_range)

    # Un-augmented batches of their own seed stream for the BatchNorm recalibration (the same ones every time).
    calibration = PatchDataset(volumes, input_window=window, label_window=label_window, sampler=sampler_obj,
                               augment=Augment.none(), batch_size=batch, steps=max(1, recalibrate_bn),
                               seed=seed + 1_000_003, mode=mode, weighted=weighted, num_outputs=num_outputs)

    def recalibrate() -> None:
        if recalibrate_bn > 0:
            recalibrate_batchnorm(model, (calibration[i][0] for i in range(recalibrate_bn)))

    # ---- compile (the only compile in emzoo)
    out_weights = list(rec.output_loss_weights) + [0.33] * max(0, num_outputs - len(rec.output_loss_weights))
    jit: Any = False if keras.backend.backend() == "tensorflow" and not gpu_available() else "auto"
    if num_outputs == 1:
        model.compile(optimizer=opt, loss=loss_obj, metrics=[PixelF1(weighted=weighted)], jit_compile=jit)
    else:
        model.compile(optimizer=opt, loss=[loss_obj] * num_outputs, loss_weights=out_weights[:num_outputs],
                      metrics=[[PixelF1(weighted=weighted)]] + [[] for _ in range(num_outputs - 1)],
                      jit_compile=jit)
    model.optimizer.build(model.trainable_variables)

    recipe_record = {
        **rec.to_dict(),
        "steps": steps, "batch_size": batch, "patch_size": list(window if mode == "3d" else window[1:]),
        "loss": getattr(loss_obj, "loss", type(loss_obj).__name__),
        "optimizer": type(opt).__name__, "learning_rate": lr, "augment": aug.to_dict(),
        "sampler": sampler_obj.config(), "freeze_encoder": bool(freeze_encoder), "seed": seed,
        "recalibrate_bn": recalibrate_bn, "precision": policy or "float32",
    }
    fingerprint = {"entry": entry, "num_classes": n_classes, "input_shape": list(input_shape), "batch_size": batch,
                   "steps": steps, "seed": seed, "recipe": rec.name, "data_sha256": source.sha256,
                   "loss": recipe_record["loss"], "optimizer": recipe_record["optimizer"], "learning_rate": lr}

    # ---- resume
    out_path = Path(out_dir) if out_dir is not None else None
    ckpt_dir = out_path / "checkpoints" if out_path is not None else None
    history: dict[str, Any] = {"loss": [], "val": [], "steps": steps}
    start, best_f1, best_step, best_weights = 0, -1.0, None, None
    if out_path is not None and out_path.exists():
        latest = _latest_checkpoint(ckpt_dir)
        if resume and latest is not None:
            state, best_weights = _load_checkpoint(latest, model)
            if state["fingerprint"] != fingerprint:
                changed = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
                raise ValueError(f"the checkpoint in {ckpt_dir} comes from another configuration (differs in "
                                 f"{changed}); pass resume=False to start over or use another out_dir.")
            start, history = int(state["step"]), state["history"]
            best_f1, best_step = float(state["best_f1"]), state["best_step"]
            initial_sha = state["initial_weights_sha256"]
        elif resume and (out_path / "emzoo.json").exists():
            raise FileExistsError(f"{out_path} already holds a finished preset; choose another out_dir, or pass "
                                  "resume=False to train again and replace it.")
        elif not resume and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)

    # ---- train
    checkpoint_every = int(checkpoint_every or min(1000, max(1, math.ceil(steps / 5))))
    eval_every = int(eval_every or checkpoint_every)
    validator = _Validator(val_volumes, mode, entry, build_kwargs) if val_volumes else None
    bar = keras.utils.Progbar(steps, stateful_metrics=["f1", "val_f1"], verbose=1 if progress else 0)
    if start:
        bar.update(start)
    train_started = time.perf_counter()
    calibrated = False
    for step, (x, y) in enumerate(prefetch(dataset, start, steps, workers=workers), start=start):
        logs = model.train_on_batch(x, y, return_dict=True)
        done = step + 1
        logs = {k: float(v) for k, v in logs.items()}
        if not math.isfinite(logs["loss"]):
            raise RuntimeError(f"training diverged: the loss is {logs['loss']} at step {done}; no preset was written. "
                               "Check the data for NaN/inf and lower the learning rate.")
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        shown = [("loss", logs["loss"])] + [(k, v) for k, v in logs.items() if k.endswith("f1")][:1]
        calibrated = False
        if validator is not None and (done % eval_every == 0 or done == steps):
            recalibrate()
            calibrated = True
            metrics = validator(model)
            history["val"].append({"step": done, **metrics})
            shown.append(("val_f1", metrics["f1"]))
            if metrics["f1"] > best_f1:
                best_f1, best_step = metrics["f1"], done
                best_weights = model.get_weights() if keep_best else None
        if ckpt_dir is not None and done % checkpoint_every == 0 and done < steps:
            state = {"step": done, "fingerprint": fingerprint, "history": history, "best_f1": best_f1,
                     "best_step": best_step, "initial_weights_sha256": initial_sha, "seed": seed}
            _save_checkpoint(ckpt_dir, done, model, state, best_weights)
        if on_step is not None:
            on_step(done, model)
        bar.update(done, shown)
    train_time = time.perf_counter() - train_started
    if start < steps and not calibrated:
        recalibrate()

    # ---- result
    if keep_best and best_weights is not None:
        model.set_weights(best_weights)
    val_metrics = None
    if history["val"]:
        record = next((r for r in history["val"] if r["step"] == best_step), history["val"][-1]) if keep_best \
            else history["val"][-1]
        val_metrics = {k: v for k, v in record.items() if k != "step"}
    test_metrics = None
    if test is not None:
        test_volumes, test_source = load_pairs(test, split="test")
        if test_source.sha256 == source.sha256:
            raise ValueError("the test data is the training data (same content digest); scoring on it would report "
                             "training performance as test performance. Pass a held-out test split.")
        for vol in test_volumes:
            vol.labels = prepare_labels(vol.labels, n_classes)
            vol.raw = normalize(vol.raw, spec)
        test_metrics = _Validator(test_volumes, mode, entry, build_kwargs)(model)
        history["test_metrics"] = test_metrics
        history["test_data"] = {"name": test_source.name, "sha256": test_source.sha256}
    ran = steps - start
    history.update({
        "val_metrics": val_metrics, "best_step": best_step, "start_step": start,
        "elapsed_s": time.perf_counter() - started, "train_s": train_time,
        "seconds_per_step": train_time / ran if ran else None,
        "samples_per_s": ran * batch / train_time if ran and train_time > 0 else None,
        "initial_weights_sha256": initial_sha, "final_weights_sha256": weights_sha256(model),
        "normalization": spec, "training_data": {"name": source.name, "sha256": source.sha256},
        "entry": entry, "mode": mode, "num_classes": n_classes, "frozen_layers": frozen,
        "recipe": recipe_record, "split": split_record, "seed": seed, "out_dir": None,
    })
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        raise RuntimeError("training produced NaN/inf weights; no preset was written. Check the data and lower the "
                           "learning rate.")
    if out_path is not None:
        history["out_dir"] = str(_write_preset(model, out_path, entry=entry, build_kwargs=build_kwargs,
                                               spec=spec, source=source, recipe=recipe_record, seed=seed,
                                               val_metrics=val_metrics, n_classes=n_classes,
                                               keep_checkpoints=keep_checkpoints, description=description,
                                               split=split_record, test_metrics=test_metrics,
                                               test_name=history.get("test_data", {}).get("name")))
    model = _free_copy(model, mode, entry, build_kwargs) or model
    # What emzoo.predict reads from a loaded preset: predict(model, raw) then normalises like training did.
    metadata = {"entry": entry, "normalization": spec, "num_classes": n_classes,
                "classes": _class_names(source, n_classes), "seed": seed}
    if entry is not None:
        from emzoo.registry import get_entry

        metadata["input"] = {"divisor": list(get_entry(entry).info.divisor) or None}
    object.__setattr__(model, "emzoo_metadata", metadata)
    return model, history


def _write_preset(model: keras.Model, out_path: Path, *, entry: str | None,
                  build_kwargs: dict[str, Any], spec: dict[str, Any], source: DataSource, recipe: dict[str, Any],
                  seed: int, val_metrics: dict[str, float] | None, n_classes: int, keep_checkpoints: bool,
                  description: str | None, split: dict[str, Any] | None, test_metrics: dict[str, float] | None,
                  test_name: str | None) -> Path:
    from emzoo.hub.presets import save_preset

    if entry is None:
        raise ValueError(f"model {model.name!r} is not a zoo entry, so no preset can describe it; pass out_dir=None "
                         "and save the weights yourself (model.save_weights).")
    from emzoo.registry import get_entry

    reference = get_entry(entry).info.input_shape
    try:
        to_save = at_input_shape(model, reference, entry=entry, build_kwargs=build_kwargs)
    except ValueError:
        to_save = model
    ckpt = out_path / "checkpoints"
    parked = None
    if keep_checkpoints and ckpt.exists():
        parked = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}.ckpt-"))
        os.replace(ckpt, parked / "checkpoints")
    extra: dict[str, Any] = {}
    if split:
        extra["split"] = split
    if test_metrics and val_metrics:
        extra["validation_metrics"] = val_metrics
    metadata: dict[str, Any] = {
        "normalization": spec,
        "training_data": {"name": source.name, "sha256": source.sha256},
        "recipe": recipe,
        "seed": seed,
        "classes": _class_names(source, n_classes),
    }
    if test_metrics:
        metadata["metrics"] = test_metrics
        metadata["test_split"] = f"{test_name or 'given'} test data (never used in training or model choice)"
    elif val_metrics:
        metadata["metrics"] = val_metrics
        metadata["test_split"] = "validation data of the training run (picked the best checkpoint)"
    if description:
        metadata["description"] = description
    if extra:
        metadata["extra"] = extra
    path = save_preset(to_save, out_path, entry=entry, build_kwargs=build_kwargs or None, overwrite=True, **metadata)
    if parked is not None:
        os.replace(parked / "checkpoints", path / "checkpoints")
        shutil.rmtree(parked, ignore_errors=True)
    return path
