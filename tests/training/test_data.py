"""Reading training data and the seeded patch loader: shapes per model kind, labels, determinism, weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from emzoo.training.augment import Augment
from emzoo.training.data import PatchDataset, TrainingVolume, load_pairs, prefetch, prepare_labels
from emzoo.training.sampling import UniformSampler


@pytest.fixture
def dataset_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "tiny"
    for split, n in (("train", 4), ("test", 2)):
        (root / split).mkdir(parents=True)
        raw = rng.integers(0, 255, (n, 32, 32), dtype=np.uint8)
        tifffile.imwrite(root / split / "raw.tif", raw, photometric="minisblack")
        tifffile.imwrite(root / split / "labels.tif", np.where(raw > 128, 255, 0).astype(np.uint8),
                         photometric="minisblack")
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "labels": {"0": "background", "1": "thing"}}))
    return root


def test_dataset_folder_and_arrays(dataset_folder):
    vols, src = load_pairs(dataset_folder)
    assert len(vols) == 1 and vols[0].raw.shape == (4, 32, 32)
    assert src.name == "tiny" and src.class_names == ("background", "thing") and len(src.sha256) == 64
    test, _ = load_pairs(dataset_folder, split=("val", "test"))
    assert test[0].raw.shape == (2, 32, 32)
    again, src2 = load_pairs((vols[0].raw, vols[0].labels))
    assert src2.sha256 == src.sha256 and src2.name == "arrays"  # the hash depends on the voxels only
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pairs(dataset_folder / "train" / "missing")
    (dataset_folder / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="raw.tif"):
        load_pairs(dataset_folder / "empty")
    with pytest.raises(ValueError, match="differ in shape"):
        load_pairs((np.zeros((4, 4)), np.zeros((4, 5))))


def test_labels_are_binarised_or_checked():
    np.testing.assert_array_equal(prepare_labels(np.array([0, 1, 255]), 1), [0, 1, 1])
    np.testing.assert_array_equal(prepare_labels(np.array([0, 2, 1]), 3), [0, 2, 1])
    with pytest.raises(ValueError, match="num_classes=4"):
        prepare_labels(np.array([0, 3]), 3)


def _dataset(vol, window, label_window, **kw):
    sampler = UniformSampler().prepare([vol.labels], label_window)
    kw.setdefault("augment", Augment())
    return PatchDataset([vol], input_window=window, label_window=label_window, sampler=sampler, batch_size=3,
                        steps=5, seed=1, **kw)


def _volume(z=6):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(z, 24, 24)).astype("float32")
    return TrainingVolume(raw, (raw > 0).astype(np.uint8))


def test_2d_batches_and_determinism():
    ds = _dataset(_volume(), (1, 16, 16), (1, 16, 16))
    x, y = ds[2]
    assert x.shape == (3, 16, 16, 1) and y.shape == (3, 16, 16, 1)
    np.testing.assert_array_equal((x > 0).astype("float32"), y)  # labels follow raw through the flips
    x2, y2 = _dataset(_volume(), (1, 16, 16), (1, 16, 16))[2]
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(x, ds[3][0])


def test_multiframe_batches_label_the_centre_slice():
    vol = _volume()
    vol.raw = np.broadcast_to(np.arange(6, dtype="float32")[:, None, None], (6, 24, 24)).copy()
    vol.labels = np.broadcast_to(np.arange(6, dtype=np.uint8)[:, None, None], (6, 24, 24)).copy()
    ds = _dataset(vol, (5, 16, 16), (1, 16, 16), mode="multiframe", augment=Augment.none())
    x, y = ds[0]
    assert x.shape == (3, 5, 16, 16, 1) and y.shape == (3, 16, 16, 1)
    for xi, yi in zip(x, y, strict=True):
        assert xi[2, 0, 0, 0] == yi[0, 0, 0]  # centre frame = the labelled slice
        assert (np.diff(xi[:, 0, 0, 0]) != 0).any() or xi[2, 0, 0, 0] in (0.0, 5.0)


def test_3d_batches_with_a_smaller_centred_output_and_weights():
    vol = _volume(z=8)
    vol.weights = np.random.default_rng(2).random(vol.raw.shape).astype("float32")
    ds = _dataset(vol, (4, 16, 16), (4, 8, 8), mode="3d", weighted=True, num_outputs=2,
                  augment=Augment(flip_z=True))
    x, (y1, y2) = ds[0]
    assert x.shape == (3, 4, 16, 16, 1) and y1.shape == (3, 4, 8, 8, 2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal((x[:, :, 4:12, 4:12, 0] > 0), y1[..., 0] > 0)  # centred crop
    assert set(np.unique(y1[..., 1])) <= set(np.unique(vol.weights))


def test_prefetch_order_does_not_depend_on_workers():
    ds = _dataset(_volume(), (1, 16, 16), (1, 16, 16), augment=Augment(rotation=45, elastic=2.0))
    one = [b[0] for b in prefetch(ds, 1, 5, workers=1)]
    three = [b[0] for b in prefetch(ds, 1, 5, workers=3)]
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one[0], ds[1][0])


@pytest.mark.data
def test_a_stack_stored_as_samples_of_one_page_is_read_as_slices(shared_data):
    vols, src = load_pairs(shared_data / "cardiac_mito", split=("test",))  # planar samples: emzoo.io reads slices
    assert vols[0].raw.shape == (4, 512, 512) and vols[0].labels.shape == (4, 512, 512)
    assert src.name == "cardiac_mito"
