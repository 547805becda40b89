"""The harness end to end on a tiny synthetic dataset, ensemble math, and the leaderboard outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emzoo.benchmark import Dataset, Split, benchmark, parse_model_spec
from emzoo.benchmark.harness import _Runner

TINY = dict(input_shape=(None, None, 1), widths=(4, 8, 16))


def _blobs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    raw = rng.normal(100, 10, size=(n, size, size))
    labels = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        for _ in range(3):
            cy, cx, r = rng.integers(6, size - 6, 2).tolist() + [int(rng.integers(3, 6))]
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            labels[z][disk] = 1
    raw[labels > 0] -= 60  # mitochondria are dark
    return raw.astype(np.float32), labels


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    train = Split(*_blobs(4, 32, 1), "synthetic-train", "synthetic-train")
    val = Split(*_blobs(2, 32, 2), "synthetic-val", "synthetic-val")
    test = Split(*_blobs(2, 32, 3), "synthetic-test", "synthetic-test")
    return Dataset(name="synthetic", test=test, train=train, val=val)


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> list[str]:
    import keras

    import emzoo

    dirs = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = emzoo.build("unet", **TINY)
        folder = tmp_path_factory.mktemp(f"preset{seed}") / "tiny_unet"
        emzoo.save_preset(model, folder, entry="unet", build_kwargs=TINY,
                          normalization={"method": "zscore", "mean": 80.0, "std": 30.0})
        dirs.append(str(folder))
    return dirs


def test_parse_model_spec_errors():
    with pytest.raises(ValueError, match="unknown ensemble mode"):
        parse_model_spec("mean:a+b")
    with pytest.raises(ValueError, match="at least two"):
        parse_model_spec("avg:a")
    with pytest.raises(ValueError, match="k >= 2"):
        parse_model_spec("top1")


def test_combine_average_and_majority(dataset):
    runner = _Runner(dataset, dict(finetune=None, threshold=0.5, val_fraction=0.2), log=print)
    probs = {"a": np.array([0.9, 0.2, 0.6, 0.4]), "b": np.array([0.8, 0.7, 0.1, 0.4]),
             "c": np.array([0.1, 0.6, 0.7, 0.3])}
    np.testing.assert_allclose(runner.combine(["a", "b"], probs, "average"), [0.85, 0.45, 0.35, 0.4])
    # votes >= 0.5: a=[1,0,1,0], b=[1,1,0,0], c=[0,1,1,0] -> counts [2,2,2,0] of 3 -> majority [1,1,1,0]
    np.testing.assert_array_equal(runner.combine(["a", "b", "c"], probs, "majority"), [1, 1, 1, 0])
    # a tie (1 of 2) counts as foreground (TRAINING.md 1.4)
    np.testing.assert_array_equal(runner.combine(["a", "b"], probs, "majority"), [1, 1, 1, 0])


def test_harness_end_to_end(dataset, presets, tmp_path):
    from emzoo.hub.presets import load
    from emzoo.inference import foreground, predict
    from emzoo.metrics import all_metrics

    a, b = presets
    out = tmp_path / "board"
    board = benchmark([a, b, "no_such_entry_xyz"], dataset, ensembles=[f"avg:{a}+{b}", f"majority:{a}+{b}", "top2"],
                      out=out, progress=False)
    rows = board.set_index("model")
    assert rows.loc["no_such_entry_xyz", "status"] == "failed"
    assert "no_such_entry_xyz" in rows.loc["no_such_entry_xyz", "error"]
    for label in (a, b, f"avg:{a}+{b}", f"majority:{a}+{b}", "top2"):
        assert rows.loc[label, "status"] == "ok", rows.loc[label, "error"]

    # The leaderboard's numbers equal direct metric calls.
    probs = [np.asarray(foreground(predict(load(p), dataset.test.raw, progress=False))) for p in presets]
    direct = all_metrics(dataset.test.labels, probs[0], threshold=0.5)
    for key in ("f1", "jaccard", "vrand", "vinfo", "accuracy"):
        assert rows.loc[a, key] == pytest.approx(direct[key], abs=1e-9)
    averaged = all_metrics(dataset.test.labels, (probs[0] + probs[1]) / 2, threshold=0.5)
    assert rows.loc[f"avg:{a}+{b}", "f1"] == pytest.approx(averaged["f1"], abs=1e-9)
    # top2 of two models is their average
    assert rows.loc["top2", "f1"] == pytest.approx(averaged["f1"], abs=1e-9)

    # Sorted by VRand, failed rows last; every output written; provenance per row.
    ok = board[board["status"] == "ok"]["vrand"].to_numpy()
    assert (np.diff(ok) <= 0).all() and board.iloc[-1]["status"] == "failed"
    for name in ("leaderboard.csv", "leaderboard.json", "leaderboard.md", "provenance.json", "heatmap.png",
                 "ballchart.png"):
        assert (out / name).stat().st_size > 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance[a]["data_sha256"] == dataset.test.sha256
    assert len(provenance[a]["weights_sha256"]) == 64
    assert provenance[a]["backend"] and provenance[a]["device"] and provenance[a]["wall_s"] > 0
    assert provenance[a]["zero_division"] == "nan"
    assert provenance[f"avg:{a}+{b}"]["members"] == [a, b]


def test_unknown_sort_metric(dataset):
    with pytest.raises(ValueError, match="unknown sort metric"):
        benchmark(["unet"], dataset, sort="speed")


def test_harness_finetune_and_kfold_rows(dataset):
    """--finetune and --kfold rows: fine-tuned on train/, the k-fold row scores the fold-mean ensemble."""
    options = {"batch_size": 2, "patch_size": 32}
    board = benchmark(["unet2d_fb"], dataset, finetune=2, finetune_kwargs=options, progress=False)
    row = board.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["provenance"]["weights"] == "fine-tuned 2 steps"
    assert row["params"] == 1_940_817
    folds = benchmark(["unet2d_fb"], dataset, finetune=2, kfold=2, finetune_kwargs=options, progress=False)
    row = folds.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["provenance"]["weights"] == "fine-tuned 2 steps, 2-fold mean"
    assert row["params"] == 2 * 1_940_817  # two fold models, both counted


def test_given_predictions_are_reference_rows(dataset):
    labels = dataset.test.labels
    perfect = labels.astype(np.float32)
    board = benchmark([], dataset, predictions={"paper": (perfect, "published"), "blank": (0 * perfect, "zeros")},
                      progress=False)
    rows = board.set_index("model")
    assert rows.loc["paper", "f1"] == 1.0 and rows.loc["paper", "vrand"] == 1.0
    assert rows.loc["blank", "f1"] == 0.0
    assert rows.loc["paper", "provenance"]["weights"] == "given prediction"
    with pytest.raises(ValueError, match="shape"):
        benchmark([], dataset, predictions={"bad": (perfect[:1], "x")}, progress=False)


def test_objects_background_scores_the_complement(dataset):
    labels = dataset.test.labels
    prob = np.clip(labels + 0.6 * (np.arange(labels.size).reshape(labels.shape) % 7 == 0), 0, 1).astype(np.float32)
    fg = benchmark([], dataset, predictions={"p": (prob, "x")}, progress=False).iloc[0]
    bg = benchmark([], dataset, predictions={"p": (prob, "x")}, progress=False, objects="background").iloc[0]
    from emzoo.metrics import all_metrics

    expected = all_metrics(1 - labels, 1 - prob)
    assert bg["f1"] == pytest.approx(expected["f1"]) and bg["f1"] != pytest.approx(fg["f1"])
    with pytest.raises(ValueError, match="objects must be"):
        benchmark([], dataset, predictions={"p": (prob, "x")}, progress=False, objects="cells")


def test_demo_reference_rows_are_emstellar_crops():
    from emzoo.benchmark.data import demo_dataset_path, load_dataset
    from emzoo.benchmark.demo import emstellar_references

    refs = emstellar_references()
    assert len(refs) == 13 and "EM-stellar EM-net_V2_4x" in refs
    test = load_dataset(demo_dataset_path()).test
    for prob, source in refs.values():
        assert prob.shape == test.raw.shape and 0 <= prob.min() and prob.max() <= 1
        assert "sha256" in source
