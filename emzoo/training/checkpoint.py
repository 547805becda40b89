"""Checkpoints of a fine-tuning run: every variable, the run's state and its :class:`~emzoo.training.config.TrainConfig`.

A checkpoint is a folder ``out_dir/checkpoints/step_<n>`` written beside its target and renamed into place
(:func:`emzoo.io.atomic.atomic_dir`), holding

- ``variables.npz``: every model variable (the dropout seed-generator states included), every optimiser variable
  (the step counter included) and the best weights so far;
- ``state.json``: the step, the history so far, the best validation F1 and its step, the hash of the initial
  weights, and the run's config (``config``, :meth:`~emzoo.training.config.TrainConfig.to_dict`) with its
  ``fingerprint``, which a resuming run must share.

Resuming from it continues bit for bit on CPU. Only the newest checkpoint is kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from emzoo.io.atomic import atomic_dir
from emzoo.training.config import TrainConfig

__all__ = ["RunState", "FORMAT", "latest_checkpoint", "save_checkpoint", "load_checkpoint", "restore"]

#: Version of the checkpoint layout; 2 stores the run's TrainConfig (checkpoints without one cannot be resumed).
FORMAT = 2


@dataclass
class RunState:
    """Where a run stands: the last finished step, its history and the best validation result so far."""

    step: int = 0
    history: dict[str, Any] = field(default_factory=dict)
    best_f1: float = -1.0
    best_step: int | None = None
    best_weights: list[np.ndarray] | None = None
    initial_weights_sha256: str | None = None
    #: (raw, foreground probability, labels) of a test slice for the preset's card; never checkpointed.
    cover: Any = None


def _to_numpy(variable: Any) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(variable))


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint folder in ``directory``, or None."""
    if not directory.is_dir():
        return None
    done = sorted(p for p in directory.glob("step_*") if (p / "state.json").exists())
    return done[-1] if done else None


def save_checkpoint(directory: Path, model: keras.Model, config: TrainConfig, state: RunState) -> Path:
    """Write ``directory/step_<state.step>`` atomically and remove the older checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"model_{i}": _to_numpy(v) for i, v in enumerate(model.variables)}
    arrays.update({f"optimizer_{i}": _to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
    if state.best_weights is not None:
        arrays.update({f"best_{i}": w for i, w in enumerate(state.best_weights)})
    record = {"format": FORMAT, "step": state.step, "fingerprint": config.fingerprint(), "history": state.history,
              "best_f1": state.best_f1, "best_step": state.best_step,
              "initial_weights_sha256": state.initial_weights_sha256, "seed": config.seed,
              "config": config.to_dict()}
    target = directory / f"step_{state.step:09d}"
    with atomic_dir(target) as tmp:
        np.savez(tmp / "variables.npz", **arrays)
        (tmp / "state.json").write_text(json.dumps(record, indent=1) + "\n")
    for old in directory.glob("step_*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path, model: keras.Model) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """Assign a checkpoint's variables to ``model`` (compiled, optimiser built); return its state and best weights.

    Raises
    ------
    ValueError
        For a checkpoint of an older layout (no stored config), or one whose variables do not fit the model.
    """
    state = json.loads((path / "state.json").read_text())
    if state.get("format") != FORMAT or "config" not in state:
        raise ValueError(f"checkpoint {path} was written by an older emzoo (checkpoint format "
                         f"{state.get('format', 1)}, this emzoo reads {FORMAT}: it stores the training config), so "
                         "it cannot be resumed exactly; pass resume=False to start over, or use another out_dir.")
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


def restore(out_dir: Path | None, model: keras.Model, config: TrainConfig, *, resume: bool,
            initial_weights_sha256: str) -> RunState:
    """The state a run starts from: its last checkpoint in ``out_dir`` (``resume``), else a fresh one.

    Without ``resume`` the old checkpoints are removed; with it, a finished preset in ``out_dir`` is refused.

    Raises
    ------
    ValueError
        If the checkpoint comes from another configuration (or an older emzoo).
    FileExistsError
        If ``out_dir`` already holds a finished preset and ``resume`` is set.
    """
    state = RunState(history={"loss": [], "val": [], "steps": config.steps},
                     initial_weights_sha256=initial_weights_sha256)
    if out_dir is None or not out_dir.exists():
        return state
    ckpt_dir = out_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_dir)
    if resume and latest is not None:
        saved, best_weights = load_checkpoint(latest, model)
        fingerprint = config.fingerprint()
        if saved["fingerprint"] != fingerprint:
            changed = sorted(k for k in fingerprint if saved["fingerprint"].get(k) != fingerprint[k])
            raise ValueError(f"the checkpoint in {ckpt_dir} comes from another configuration (differs in "
                             f"{changed}); pass resume=False to start over or use another out_dir.")
        return RunState(step=int(saved["step"]), history=saved["history"], best_f1=float(saved["best_f1"]),
                        best_step=saved["best_step"], best_weights=best_weights,
                        initial_weights_sha256=saved["initial_weights_sha256"])
    if resume and (out_dir / "emzoo.json").exists():
        raise FileExistsError(f"{out_dir} already holds a finished preset; choose another out_dir, or pass "
                              "resume=False to train again and replace it.")
    if not resume and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    return state
