"""TrainConfig round-trips through JSON; a checkpoint stores it; an old checkpoint gives a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emzoo.training.checkpoint import FORMAT, RunState, latest_checkpoint, restore
from emzoo.training.config import TrainConfig


def _config(**changes):
    values = {
        "entry": "unet", "mode": "2d", "num_classes": 1, "input_shape": (32, 32, 1), "window": (1, 32, 32),
        "label_window": (1, 32, 32), "num_outputs": 1, "steps": 4, "batch_size": 2, "seed": 0,
        "recipe": {"name": "emzoo", "loss": "bce_dice", "optimizer": "RAdam", "learning_rate": 1e-3,
                   "sampler": {"name": "uniform", "share": np.float32(0.25)}},
        "normalization": {"method": "zscore", "mean": 1.0, "std": 2.0}, "intensity_range": 3.0,
        "data": {"name": "arrays", "sha256": "ab"}, "split": {"unit": "slice", "train": [0, 1], "val": [3], "gap": 1},
        "build_kwargs": {"widths": (4, 8, 16)}, "checkpoint_every": 2, "eval_every": 2, "keep_best": True,
        "patience": None, "recalibrate_bn": 16, "loss_weights": (1.0,),
    }
    values.update(changes)
    return TrainConfig(**values)


def test_the_config_round_trips_through_json():
    config = _config()
    data = json.loads(json.dumps(config.to_dict()))
    again = TrainConfig.from_dict(data)
    assert again.fingerprint() == json.loads(json.dumps(config.fingerprint()))
    assert again.input_shape == (32, 32, 1) and again.build_kwargs == {"widths": [4, 8, 16]}
    assert again.recipe["sampler"]["share"] == 0.25
    with pytest.raises(ValueError, match="needs.*steps"):
        TrainConfig.from_dict({k: v for k, v in data.items() if k != "steps"})


def test_an_old_checkpoint_is_refused_with_a_clear_message(tmp_path):
    step = tmp_path / "checkpoints" / "step_000000002"
    step.mkdir(parents=True)
    np.savez(step / "variables.npz", model_0=np.zeros(3))
    # The layout before the config was stored: no "format", no "config".
    (step / "state.json").write_text(json.dumps({"step": 2, "fingerprint": _config().fingerprint(), "history": {},
                                                 "best_f1": -1.0, "best_step": None,
                                                 "initial_weights_sha256": "x", "seed": 0}))
    assert latest_checkpoint(tmp_path / "checkpoints") == step
    with pytest.raises(ValueError, match=f"older emzoo.*format 1.*reads {FORMAT}.*resume=False"):
        restore(tmp_path, None, _config(), resume=True, initial_weights_sha256="x")
    fresh = restore(tmp_path, None, _config(), resume=False, initial_weights_sha256="y")
    assert fresh == RunState(history={"loss": [], "val": [], "steps": 4}, initial_weights_sha256="y")
    assert not (tmp_path / "checkpoints").exists()
