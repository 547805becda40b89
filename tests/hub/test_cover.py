"""``save_preset(cover=...)``: the model card shows cover.png, the same picture as the bioimage.io cover."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.image import imread

import emzoo
from emzoo.hub.compact import write_compact_preset
from emzoo.hub.presets import load, save_preset
from emzoo.viz import cover_image
from tests.hub.conftest import TINY


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = emzoo.build("unet", **TINY)
    rng = np.random.default_rng(0)
    raw = rng.random((3, 32, 32)).astype(np.float32)
    labels = (raw > 0.6).astype(np.uint8)
    prob = np.asarray(model(raw[..., None], training=False))[..., 0]
    path = save_preset(model, tmp_path_factory.mktemp("cover") / "p", build_kwargs={"widths": TINY["widths"]},
                       metrics={"f1": 0.5}, test_split="synthetic test stack", cover=(raw, prob, labels))
    return path, raw, prob, labels


def test_cover_file_card_and_record(saved):
    path, raw, prob, labels = saved
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "cover.png", "emzoo.json",
                                                      "model.weights.h5"]
    picture = (imread(path / "cover.png")[..., :3] * 255).round().astype(np.uint8)
    assert np.array_equal(picture, cover_image(raw[1], prob[1], labels[1]))  # the middle slice
    meta = json.loads((path / "emzoo.json").read_text())
    assert meta["cover"]["file"] == "cover.png" and "synthetic test stack, slice 1" in meta["cover"]["caption"]
    card = (path / "README.md").read_text()
    assert "](cover.png)" in card and "- `cover.png`:" in card
    assert load(path).count_params() == 7469  # loading does not need the picture


def test_compact_copy_keeps_the_picture(saved, tmp_path):
    path = saved[0]
    compact = write_compact_preset(path, tmp_path / "c", encoding="float16")
    assert (compact / "cover.png").read_bytes() == (path / "cover.png").read_bytes()


def test_no_cover_no_picture_and_bad_cover(tmp_path):
    model = emzoo.build("unet", **TINY)
    path = save_preset(model, tmp_path / "plain", build_kwargs={"widths": TINY["widths"]})
    assert not (path / "cover.png").exists() and "cover.png" not in (path / "README.md").read_text()
    with pytest.raises(ValueError, match="cover arrays must share one"):
        save_preset(model, tmp_path / "bad", build_kwargs={"widths": TINY["widths"]},
                    cover=(np.zeros((8, 8)), np.zeros((8, 9))))
    with pytest.raises(TypeError, match="cover must be"):
        save_preset(model, tmp_path / "bad", build_kwargs={"widths": TINY["widths"]}, cover=np.zeros((8, 8)))
    assert not (tmp_path / "bad").exists()
