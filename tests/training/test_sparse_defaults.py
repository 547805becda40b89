"""Fine-tuning defaults on sparse targets: automatic sampler and validation split, collapse detection."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from emzoo.training import finetune
from emzoo.training.finetune import CollapseWarning, collapse_message
from emzoo.training.recipes import default_recipe, get_recipe
from emzoo.training.sampling import ProbabilityMapSampler, UniformSampler, choose_sampler

TINY = {"widths": (4, 8, 16)}


def _sparse(n=6, size=48, seed=0, radius=2):
    """A stack whose foreground is ~1 % of the pixels (one small disc per slice)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        labels[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = 1
    raw = (120 - 60 * labels + rng.normal(0, 15, labels.shape)).clip(0, 255).astype(np.uint8)
    return raw, labels


def test_the_sampler_follows_how_often_uniform_windows_hold_foreground():
    dense = np.zeros((1, 50, 50))
    dense[0, :25] = 1
    sampler, choice = choose_sampler([dense], (1, 16, 16))
    assert isinstance(sampler, UniformSampler) and choice["foreground_fraction"] == 0.5
    sparse = np.zeros((1, 200, 200))
    sparse[0, :20, :20] = 1  # 1 % of the voxels, in one corner
    sampler, choice = choose_sampler([sparse], (1, 32, 32))
    assert isinstance(sampler, ProbabilityMapSampler) and choice["useful_windows"] < 0.5
    assert "1.0 %" in choice["reason"]
    # a third of the windows are centred on foreground
    f, w = 0.01, sampler.foreground_weight
    assert w * f / (w * f + 1 - f) == pytest.approx(1 / 3)
    # the same labels in windows that always hold enough foreground: uniform
    assert isinstance(choose_sampler([sparse], (1, 200, 200))[0], UniformSampler)
    assert isinstance(choose_sampler([np.zeros((1, 8, 8))], (1, 4, 4))[0], UniformSampler)


def test_2d_entries_default_to_the_short_recipe_and_paper_recipes_stay_by_name():
    assert default_recipe("unet2d_fb").name == "emzoo"
    assert default_recipe("emnet_v1_bn").name == "emzoo"
    assert default_recipe("unet3d_fb").name == "franco_barranco"
    assert get_recipe("franco_barranco").optimizer == "sgd"
    assert get_recipe("emzoo").sampler == "auto" and get_recipe("emzoo").loss == "bce_dice"


@pytest.mark.filterwarnings("ignore::emzoo.training.finetune.CollapseWarning")
def test_auto_validation_is_carved_from_train_and_recorded():
    raw, labels = _sparse(n=10, size=96)
    _model, history = finetune("unet", (raw, labels), steps=2, batch_size=2, patch_size=32, build_kwargs=TINY,
                               progress=False, workers=1)
    split = history["split"]
    assert split["auto"] and split["val"] == [9] and split["train"] == list(range(8))  # slice 8 is the gap
    assert history["val"] and "predicted_fraction" in history["val"][-1]
    assert history["recipe"]["sampler"]["auto"] is True
    assert history["recipe"]["sampler"]["name"] == "foreground"
    # val_fraction=0: no validation at all
    _model, history = finetune("unet", (raw, labels), steps=2, batch_size=2, patch_size=32, build_kwargs=TINY,
                               progress=False, workers=1, val_fraction=0)
    assert history["split"] is None and history["val"] == [] and history["foreground"]["on"] == "training windows"


@pytest.mark.filterwarnings("ignore::emzoo.training.finetune.CollapseWarning")
def test_too_few_slices_train_without_validation_and_say_why():
    raw, labels = _sparse(n=3)
    _model, history = finetune("unet", (raw, labels), steps=1, batch_size=2, patch_size=32, build_kwargs=TINY,
                               progress=False, workers=1)
    assert history["split"]["validation"] is None and "too few" in history["split"]["reason"]


def test_collapse_message_rules():
    assert collapse_message({"f1": 0.0, "predicted_fraction": 0.0, "label_fraction": 0.01})
    assert collapse_message({"f1": 0.02, "predicted_fraction": 0.99, "label_fraction": 0.01})
    assert collapse_message({"f1": 0.6, "predicted_fraction": 0.012, "label_fraction": 0.01}) is None
    # no foreground labelled: nothing to collapse from
    assert collapse_message({"f1": 1.0, "predicted_fraction": 0.0, "label_fraction": 0.0}) is None


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory):
    """1 % foreground, BCE on uniform windows and a deliberately large learning rate: background everywhere."""
    raw, labels = _sparse(n=10)
    out = tmp_path_factory.mktemp("collapse") / "preset"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model, history = finetune("unet", (raw, labels), steps=30, batch_size=2, patch_size=32, build_kwargs=TINY,
                                   progress=False, workers=1, loss="bce", sampler="uniform", optimizer="adam",
                                   learning_rate=0.05, augment=False, out_dir=out, eval_every=10)
    return history, caught, out


def test_a_collapsed_run_warns_and_marks_its_preset(collapsed):
    history, caught, out = collapsed
    assert history["collapse"] and "collapsed" in history["collapse"]
    assert any(issubclass(w.category, CollapseWarning) for w in caught)
    meta = json.loads((out / "emzoo.json").read_text())
    assert "collapsed" in json.dumps(meta)
    import emzoo

    with pytest.warns(UserWarning, match="collapsed"):
        emzoo.load(out)


@pytest.mark.filterwarnings("ignore::emzoo.training.finetune.CollapseWarning")
def test_the_cli_refuses_to_present_a_collapsed_preset(tmp_path, monkeypatch):
    import tifffile

    from emzoo.cli.main import app

    raw, labels = _sparse(n=10)
    (tmp_path / "ds" / "train").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "ds" / "train" / "raw.tif", raw)
    tifffile.imwrite(tmp_path / "ds" / "train" / "labels.tif", labels)
    import emzoo.training as training

    real = training.finetune

    def tiny(*args, **kwargs):
        kwargs.update(build_kwargs=TINY, batch_size=2, patch_size=32, loss="bce", sampler="uniform",
                      optimizer="adam", learning_rate=0.05, augment=False, eval_every=10)
        return real("unet", *args[1:], **kwargs)

    monkeypatch.setattr(training, "finetune", tiny)
    result = CliRunner().invoke(app, ["finetune", "unet", "--data", str(tmp_path / "ds"), "--out",
                                      str(tmp_path / "out"), "--steps", "30", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "collapsed" in result.output and "inspection" in result.output


@pytest.mark.filterwarnings("ignore::emzoo.training.finetune.CollapseWarning")
def test_patience_stops_early_and_is_validated():
    raw, labels = _sparse(n=10)
    with pytest.raises(ValueError, match="patience"):
        finetune("unet", (raw, labels), steps=2, patience=0, build_kwargs=TINY, progress=False)
    # learning rate so small that F1 never improves after the first validation
    _model, history = finetune("unet", (raw, labels), steps=12, batch_size=2, patch_size=32, build_kwargs=TINY,
                               progress=False, workers=1, eval_every=2, patience=2, optimizer="sgd",
                               learning_rate=1e-9)
    assert history["stopped_early"] == 6 and len(history["loss"]) == 6 and history["best_step"] == 2
