"""The presets shipped inside the package: load offline by name, meet their quality floor on their held-out test
split, stay within 0.003 of the float32 weights after decoding, keep their layer layout, fit the size budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import emzoo
from emzoo.hub import compact
from emzoo.hub.manifest import available_tags, resolve_weights
from emzoo.inference import foreground
from emzoo.zoo import CARDS, get_card
from emzoo.zoo.train import TOLERANCE, _eval_options, card_metrics, emzoo_build_from, load_card_split

BUNDLED = sorted(name for name in CARDS
                 if (compact.bundled_dir() / get_card(name).entry / get_card(name).tag / "emzoo.json").is_file())
SIZE_BUDGET = 52 * 2**20


def test_core_set_is_bundled():
    assert BUNDLED, "no bundled presets found under emzoo/weights"
    for name in BUNDLED:
        card = get_card(name)
        assert card.tag in available_tags(card.entry)
        release = resolve_weights(card.entry, card.tag)
        assert release.bundled == f"{card.entry}/{card.tag}"
        assert release.revision is None  # not pushed to the Hub yet, and the manifest says so


def test_bundled_size_budget():
    total = sum(p.stat().st_size for p in compact.bundled_dir().rglob("*") if p.is_file())
    assert total <= SIZE_BUDGET, f"bundled presets take {total / 2**20:.1f} MiB > 52 MiB"


@pytest.mark.parametrize("name", BUNDLED)
def test_layer_layout_unchanged(name):
    """Published weights are keyed by layer class and order: the builder must still produce the same layout."""
    folder = compact.bundled_dir() / get_card(name).entry / get_card(name).tag
    meta = json.loads((folder / "emzoo.json").read_text())
    assert compact.layer_signature(emzoo_build_from(folder)) == meta["layer_signature"]


def test_default_name_loads_offline(monkeypatch):
    monkeypatch.setenv("EMZOO_OFFLINE", "1")
    monkeypatch.delenv("EMZOO_WEIGHTS_DIR", raising=False)
    default = [n for n in BUNDLED if get_card(n).default]
    assert default
    model = emzoo.load(get_card(default[0]).entry)
    assert model.emzoo_metadata["name"] == default[0]


@pytest.mark.data
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_preset_meets_floor(name, shared_data, monkeypatch):
    monkeypatch.setenv("EMZOO_OFFLINE", "1")
    card = get_card(name)
    model = emzoo.load(name)
    raw, labels = load_card_split(shared_data / card.dataset, card.test)
    prob = emzoo.predict(model, raw, progress=False, **_eval_options(card, raw))
    metrics = card_metrics(card, labels, np.asarray(foreground(prob), np.float32))
    for key, floor in card.floor.items():
        assert metrics[key] >= floor, f"{name}: {key} {metrics[key]:.4f} < floor {floor}"
    meta = model.emzoo_metadata
    # decoded weights within 0.003 of the float32 weights (F1 and VRand), as measured at training time
    float32 = meta["metrics_float32"]["none"]
    for key in ("f1", "vrand"):
        assert abs(metrics[key] - float32[key]) <= TOLERANCE, (key, metrics[key], float32[key])
    # and the card's numbers are what this machine reproduces
    for key in ("f1", "jaccard"):
        assert metrics[key] == pytest.approx(meta["metrics"]["values"][key], abs=2e-3)


@pytest.mark.skipif(os.environ.get("EMZOO_ZOO_ROOT") is None, reason="needs float32 runs (EMZOO_ZOO_ROOT)")
@pytest.mark.parametrize("name", BUNDLED)
def test_decoded_weights_close_to_float32(name):
    """Weight-level check when the float32 run folder is at hand (``EMZOO_ZOO_ROOT/<card>/run``)."""
    card = get_card(name)
    run = os.path.join(os.environ["EMZOO_ZOO_ROOT"], name, "run")
    ref = emzoo.load(run)
    got = emzoo.load(name)
    for a, b in zip(ref.get_weights(), got.get_weights(), strict=True):
        bound = np.abs(a).max() / 127 / 2 + 1e-6 if card.storage == "int8" else np.abs(a).max() * 1e-3 + 1e-6
        assert np.abs(a - b).max() <= bound


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_preset_shows_its_test_picture(name):
    """The card's picture is the bioimage.io cover's drawing of the preset's own test slice (issue 12)."""
    entry, tag = name.split(".")
    folder = Path(emzoo.__file__).parent / "weights" / entry / tag
    meta = json.loads((folder / "emzoo.json").read_text())
    assert (folder / meta["cover"]["file"]).is_file()
    assert f"]({meta['cover']['file']})" in (folder / "README.md").read_text()
