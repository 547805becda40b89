"""finetune: reproducible (same seed, same weights), resumable bit for bit, writes a loadable preset."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest

import emzoo
from emzoo.training import finetune
from emzoo.training.config import TrainConfig

TINY = {"widths": (4, 8, 16)}
MODULE = sys.modules["emzoo.training.finetune"]


def _blobs(n=4, size=48, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        for _ in range(6):
            cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 7)
            labels[z][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(1, classes)
    raw = (80 + 100 * (labels > 0) + rng.normal(0, 20, labels.shape)).clip(0, 255).astype(np.uint8)
    return raw, labels


def _run(data, **kw):
    kw.setdefault("steps", 4)
    kw.setdefault("patch_size", 32)
    return finetune("unet", data, batch_size=2, build_kwargs=TINY, progress=False, workers=1, **kw)


@pytest.fixture(scope="module")
def data():
    return _blobs()


@pytest.fixture(scope="module")
def reference(data):
    return _run(data, seed=0)


def _same(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


def test_same_seed_gives_the_same_weights(data, reference):
    model, history = _run(data, seed=0)
    ref_model, ref_history = reference
    assert history["initial_weights_sha256"] == ref_history["initial_weights_sha256"]
    assert history["loss"] == ref_history["loss"]
    assert _same(model, ref_model)
    assert history["final_weights_sha256"] != history["initial_weights_sha256"]  # it did train
    assert len(history["loss"]) == 4 and history["samples_per_s"] > 0
    assert history["recipe"]["name"] == "emzoo" and history["recipe"]["optimizer"] == "RAdam"


def test_interrupted_run_resumes_from_its_checkpoint_and_ends_identical(data, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = MODULE.prefetch

    def interrupted(dataset, start, stop, **kw):
        for i, batch in enumerate(real(dataset, start, stop, **kw)):
            if start + i == 3:
                raise KeyboardInterrupt  # killed while step 4 of 4 runs; the checkpoint of step 2 survives
            yield batch

    monkeypatch.setattr(MODULE, "prefetch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(data, seed=0, out_dir=out, checkpoint_every=2)
    monkeypatch.setattr(MODULE, "prefetch", real)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000000002"]
    # the checkpoint stores the run's resolved config, from which its fingerprint follows
    state = json.loads((out / "checkpoints" / "step_000000002" / "state.json").read_text())
    config = TrainConfig.from_dict(state["config"])
    assert config.fingerprint() == state["fingerprint"] and (config.steps, config.checkpoint_every) == (4, 2)
    with pytest.raises(ValueError, match="another configuration.*seed"):
        _run(data, seed=1, out_dir=out, checkpoint_every=2)

    model, history = _run(data, seed=0, out_dir=out, checkpoint_every=2)
    assert history["start_step"] == 2
    assert _same(model, reference[0])
    assert history["loss"] == reference[1]["loss"]

    # the preset: loadable, inference weights only, metadata recorded, checkpoints gone
    assert not (out / "checkpoints").exists()
    loaded = emzoo.load(out)
    assert _same(loaded, model)
    with h5py.File(out / "model.weights.h5") as f:
        names = []
        f.visit(names.append)
    assert not any("optimizer" in n for n in names)
    meta = json.loads((out / "emzoo.json").read_text())
    assert meta["normalization"]["method"] == "zscore" and meta["seed"] == 0
    assert meta["training_data"]["sha256"] == history["training_data"]["sha256"]
    assert meta["recipe"]["name"] == "emzoo" and meta["recipe"]["steps"] == 4
    with pytest.raises(FileExistsError, match="finished preset"):
        _run(data, seed=0, out_dir=out)


def test_new_class_count_frozen_encoder_and_held_out_slab(tmp_path):
    raw, labels = _blobs(n=6, classes=3)
    base = emzoo.build("unet", input_shape=(32, 32, 1), **TINY)
    encoder_before = base.get_layer("enc1_conv1").get_weights()[0].copy()
    model, history = finetune(base, (raw, labels), steps=3, batch_size=2, patch_size=32, num_classes=3,
                              freeze_encoder=True, val_fraction=0.34, loss="dice", progress=False, workers=1)
    assert model.output_shape[-1] == 3
    np.testing.assert_array_equal(model.get_layer("enc1_conv1").get_weights()[0], encoder_before)
    assert "enc1_conv1" in history["frozen_layers"] and "head_out" not in history["frozen_layers"]
    assert history["split"] == {"unit": "slice", "train": [0, 1, 2], "val": [4, 5], "gap": 1}
    assert {"f1", "mean_f1", "f1_class1", "f1_class2"} <= set(history["val_metrics"])
    assert len(history["val"]) >= 1
    probs = emzoo.predict(model, raw[:1], progress=False)  # normalises with the training spec it carries
    assert probs.shape == (1, 48, 48, 3)


def test_epochs_and_argument_errors(data):
    with pytest.raises(ValueError, match="multiple of"):
        _run(data, steps=1, patch_size=30)
    model, history = finetune("unet", data, epochs=0.5, batch_size=2, patch_size=32, build_kwargs=TINY,
                              progress=False, augment=False, workers=1)
    # 4 slices of 48² = 9,216 px; 2 windows of 32² per step -> 4.5 steps per epoch
    assert history["steps"] == 2


@pytest.mark.slow
@pytest.mark.data
def test_emnet_learns_cardiac_mitochondria_in_150_steps(shared_data):
    """The acceptance recipe, shortened (benchmarks/acceptance_emnet.py runs 800 steps): ~2.5 min on 2 cores."""
    data = shared_data / "cardiac_mito"
    _, history = finetune("emnet_v1_bn", data, test=data, steps=150, batch_size=4, patch_size=128, progress=False)
    assert history["test_metrics"]["f1"] >= 0.85  # 0.894 measured (seed 0); 0.90 needs the full run


def test_3d_and_two_output_models_train():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(8, 24, 24)).astype("float32")
    labels = np.digitize(raw, [0.0, 0.8]).astype(np.uint8)
    weights = rng.random(raw.shape).astype("float32")
    model, history = finetune("net2d3d", (raw, labels, weights), (raw[:5], labels[:5]), steps=1, batch_size=1,
                              patch_size=(5, 16, 16), progress=False, workers=1)
    assert history["recipe"]["name"] == "net2d3d" and history["recipe"]["loss"] == "weighted_ce"
    assert {"pred3d_loss", "pred2d_loss"} <= set(history)
    # total = pred3d + 0.33 x pred2d (Guay's multi-loss)
    assert history["loss"][0] == pytest.approx(history["pred3d_loss"][0] + 0.33 * history["pred2d_loss"][0], rel=1e-4)
    assert len(model.outputs) == 2 and "f1_class2" in history["val_metrics"]
    model, history = finetune("unet3d_fb", (raw, labels > 0), steps=1, batch_size=1, patch_size=16, progress=False,
                              workers=1)
    assert history["mode"] == "3d" and history["recipe"]["patch_size"] == [16, 16, 16]
    assert model.input_shape == (None, None, None, None, 1)


@pytest.mark.filterwarnings("ignore:.*collapsed")  # 2 steps of a tiny net: the picture is what is tested
def test_preset_with_test_data_shows_its_test_picture(data, tmp_path):
    """The model card's picture is the test data's middle slice with the prediction (issue 12: the same image as the
    bioimage.io cover)."""
    test = _blobs(n=3, seed=7)
    _run(data, seed=0, steps=2, out_dir=tmp_path / "p", test=[test])
    meta = json.loads((tmp_path / "p" / "emzoo.json").read_text())
    assert meta["cover"]["file"] == "cover.png"
    from PIL import Image

    with Image.open(tmp_path / "p" / "cover.png") as img:
        assert img.size[1] >= 48 and img.size[0] >= 2 * 48 * 0.9  # raw beside the overlay
    assert "cover.png" in (tmp_path / "p" / "README.md").read_text()
    emzoo.load(str(tmp_path / "p"))  # the extra file does not upset loading
