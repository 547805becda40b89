"""emzoo.io.dataset: the one rule for which files of a dataset folder are a split's raw, labels and weights."""

from __future__ import annotations

import json

from emzoo.io.dataset import dataset_metadata, find_file, split_files


def test_split_files_follow_the_stems_and_suffixes_in_order(tmp_path):
    train = tmp_path / "train"
    (train / "images").mkdir(parents=True)  # a folder of slices
    for name in ("image.npy", "gt.h5", "labels.tif", "weights.npy"):
        (train / name).touch()
    files = split_files(tmp_path, "train")
    assert (files.raw.name, files.labels.name, files.weights.name) == ("image.npy", "labels.tif", "weights.npy")
    (train / "image.npy").unlink()
    assert split_files(tmp_path, "train").raw == train / "images"
    assert split_files(tmp_path, "test") == split_files(tmp_path / "test")
    assert split_files(tmp_path, "test").raw is None
    assert find_file(train, ("raw",)) is None


def test_dataset_metadata_names_the_dataset(tmp_path):
    assert dataset_metadata(tmp_path) == (tmp_path.name, {})
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "cardiac", "labels": {"1": "mito"}}))
    assert dataset_metadata(tmp_path) == ("cardiac", {"name": "cardiac", "labels": {"1": "mito"}})
