"""The zoo-card pipeline end to end on a tiny card: train, score, encode, record, bundle, load by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emzoo.benchmark.data import demo_dataset_path
from emzoo.hub import compact, manifest
from emzoo.zoo import cards, train
from emzoo.zoo.cards import SplitSpec, ZooCard


@pytest.fixture()
def tiny_card(monkeypatch):
    card = ZooCard(
        name="unet2d_fb.tiny_sample",
        dataset="cardiac_mito_sample",
        train=SplitSpec("train", z=(0, 4)),
        test=SplitSpec("test", z=(0, 2)),
        finetune={"recipe": "emnet", "patch_size": 64, "batch_size": 2, "steps": 4, "seed": 0,
                  "build_kwargs": {"widths": (4, 8, 16, 32, 64)}, "mixed_precision": False},
        tta=("flips",),
        storage="int8",
        floor={"f1": 0.0},
        reference={"source": "none"},
        license="MIT",
    )
    monkeypatch.setitem(cards.CARDS, card.name, card)
    return card


def test_train_zoo_tiny_card(tiny_card, tmp_path, monkeypatch):
    out = tmp_path / "run"
    report = train.train_zoo(tiny_card.name, demo_dataset_path(), out, progress=False)
    scores = report["scores"]
    assert set(scores) == {"float32/none", "float32/flips", "int8/none", "int8/flips"}
    for values in scores.values():
        assert 0.0 <= values["f1"] <= 1.0 and np.isfinite(values["vrand"])
    # learning curve at 1/4, 1/2 and all of the steps
    assert sorted(int(s) for s in report["learning_curve"]) == [1, 2, 4]
    preset = out / "preset"
    names = sorted(p.name for p in preset.iterdir())
    assert names == ["README.md", "config.json", "cover.png", "emzoo.json", "model.weights.compact.h5"]
    meta = json.loads((preset / "emzoo.json").read_text())
    assert meta["weights_encoding"]["name"] == "int8"
    assert meta["zoo_card"]["name"] == tiny_card.name
    assert meta["metrics"]["values"]["f1"] == scores["int8/none"]["f1"]
    assert max(report["encoding_delta"].values()) <= train.TOLERANCE
    record = json.loads((out / "manifest" / "unet2d_fb.json").read_text())
    rec = record["tags"]["tiny_sample"]
    assert rec["revision"] is None and rec["bundled"] == "unet2d_fb/tiny_sample"
    manifest.validate_manifest(record)
    # Rerunning resumes: nothing is retrained and the scores are read back.
    again = train.train_zoo(tiny_card.name, demo_dataset_path(), out, progress=False)
    assert again["scores"] == scores

    # Bundled: emzoo.load("entry.tag") finds it in the package folder with no network and no mirror.
    monkeypatch.setattr(compact, "bundled_dir", lambda: tmp_path / "pkg_weights")
    mdir = tmp_path / "manifest"
    mdir.mkdir()
    (mdir / "schema.json").write_text((manifest._PACKAGED_DIR / "schema.json").read_text())
    monkeypatch.setenv("EMZOO_MANIFEST_DIR", str(mdir))
    monkeypatch.setenv("EMZOO_OFFLINE", "1")
    train._bundle(preset, tiny_card, rec)
    import emzoo

    model = emzoo.load("unet2d_fb.tiny_sample")
    assert model.emzoo_metadata["name"] == tiny_card.name
    # a flipped byte in the bundled weights is refused, naming the file
    weights = tmp_path / "pkg_weights" / "unet2d_fb" / "tiny_sample" / compact.COMPACT_FILE
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        emzoo.load("unet2d_fb.tiny_sample")


def test_unknown_card_suggests():
    with pytest.raises(KeyError, match="emnet_v2_4x.cardiac_mito"):
        cards.get_card("emnet_v2_4x.cardiac")


def test_card_on_wrong_dataset_refused(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "isbi2012"}))
    with pytest.raises(ValueError, match="cardiac_mito"):
        train.train_zoo("emnet_v1_bn.cardiac_mito", tmp_path, tmp_path / "out", progress=False)
