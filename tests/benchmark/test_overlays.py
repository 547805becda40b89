"""The benchmark's overlays: one PNG per model and test item with that item's scores, plus the contact sheet."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from emzoo.benchmark.data import Split
from emzoo.benchmark.overlays import item_scores, overlay_items, write_overlays
from emzoo.cli.main import app
from emzoo.io import write
from emzoo.metrics import pixel_metrics
from tests.inference import toys


def _split(depth: int = 3, side: int = 24) -> Split:
    rng = np.random.default_rng(0)
    labels = np.zeros((depth, side, side), np.uint8)
    labels[:, 6:18, 6:18] = 1
    return Split(rng.random((depth, side, side)).astype(np.float32), labels, "raw", "labels")


def test_one_overlay_per_model_and_item_and_a_sheet(tmp_path):
    test = _split()
    probs = {"unet": test.labels * 0.9, "avg:unet+segnet": np.roll(test.labels, 3, axis=2) * 0.9}
    written = write_overlays(test, probs, tmp_path / "overlays")
    names = sorted(p.relative_to(tmp_path / "overlays").as_posix() for p in written)
    assert names == sorted([f"{m}/slice_{z}.png" for m in ("unet", "avg_unet_segnet") for z in range(3)]
                           + ["contact_sheet.png"])
    assert all(p.is_file() for p in written)
    assert imread(written[0]).shape[:2] == (24, 24)
    # A second run replaces the folder: a model no longer scored leaves no stale pictures behind.
    again = write_overlays(test, {"unet": probs["unet"]}, tmp_path / "overlays")
    assert sorted(p.name for p in (tmp_path / "overlays").rglob("*.png")) == sorted(p.name for p in again)
    assert not (tmp_path / "overlays" / "avg_unet_segnet").exists()


def test_item_scores_are_the_slice_scores():
    test = _split(depth=2)
    prob = np.roll(test.labels, 2, axis=1) * 0.7
    got = item_scores(test.labels[1], prob[1])
    want = pixel_metrics(test.labels[1], prob[1])
    assert got == {k: want[k] for k in ("f1", "jaccard", "ppv", "sensitivity")}
    background = item_scores(test.labels[1], prob[1], objects="background")
    assert background["f1"] == pixel_metrics(1 - test.labels[1], 1 - prob[1])["f1"] != got["f1"]


def test_deep_volumes_are_shown_by_evenly_spaced_slices():
    items = overlay_items((200, 8, 8), max_items=5)
    assert [z for _, z in items] == [0, 50, 100, 149, 199] and items[0][0] == "slice_000"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    toys.tiny_unet(0).save(root / "a.keras")
    toys.tiny_unet(1).save(root / "b.keras")
    split = _split(depth=2, side=32)
    write(root / "raw.tif", (split.raw * 255).astype(np.uint8))
    write(root / "labels.tif", split.labels)
    return root


def _bench(files, out, *extra, models=("a", "b")):
    args = ["benchmark", *(f for m in models for f in ("--model", str(files / f"{m}.keras"))), "--test-raw",
            str(files / "raw.tif"), "--test-labels", str(files / "labels.tif"), "--out", str(out), "--tile", "32", "--halo", "0",
            *extra]
    return CliRunner().invoke(app, args)


def test_benchmark_cli_writes_and_reports_the_overlays(files, tmp_path):
    result = _bench(files, tmp_path / "out", "--ensemble", f"avg:{files / 'a.keras'}+{files / 'b.keras'}")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "overlays"
    models = sorted(d.name for d in folder.iterdir() if d.is_dir())
    assert len(models) == 3  # two models and their average
    for model in models:
        assert sorted(p.name for p in (folder / model).iterdir()) == ["slice_0.png", "slice_1.png"]
    assert (folder / "contact_sheet.png").is_file()
    line = re.search(r"wrote (\d+) overlays \(2 per model\) in (\S+)/<model>/<item>.png and (\S+)", result.output)
    assert line, result.output
    assert int(line.group(1)) == 6 and line.group(3) == str(folder / "contact_sheet.png")


def test_no_overlays(files, tmp_path):
    result = _bench(files, tmp_path / "out", "--no-overlays", models=("a",))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "leaderboard.csv").is_file()
    assert not (tmp_path / "out" / "overlays").exists() and not re.search(r"wrote \d+ overlays", result.output)
