"""Blockwise instance labels (``instances_blockwise``): same partition as in memory on 2x2x2 blocks, bounded reads,
ids consistent across blocks, atomic output and the ``emzoo predict ... out.zarr --instances`` command."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage
from typer.testing import CliRunner

from emzoo.inference.instances import instances
from emzoo.inference.instances_blockwise import UnsplitObjectsWarning, instances_blockwise

SHAPE = (32, 48, 48)
BLOCK = (16, 24, 24)  # 2 x 2 x 2 = 8 blocks


def _touching_pairs(seed: int) -> np.ndarray:
    """Pairs of overlapping balls (a neck between them), some crossing block faces: distance_ws splits them."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(np.float32)
    prob = np.zeros(SHAPE, np.float32)
    for _ in range(7):
        centre, radius = rng.uniform(5, np.array(SHAPE) - 5), rng.uniform(3.0, 4.5)
        step = rng.normal(size=3)
        step *= 1.5 * radius / np.linalg.norm(step)
        for c in (centre, centre + step):
            d = np.sqrt(((grid - c[:, None, None, None]) ** 2).sum(0))
            prob = np.maximum(prob, np.clip(1.0 - 0.5 * d / radius, 0, 1))
    return prob


def _membranes(seed: int) -> np.ndarray:
    """A boundary map of touching Voronoi cells (membranes ~3 voxels wide, a little noise)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, (30, 3)) * SHAPE
    cells = cKDTree(points).query(np.indices(SHAPE).reshape(3, -1).T)[1].reshape(SHAPE)
    edge = np.zeros(SHAPE, bool)
    for axis in range(3):
        cut = [slice(None)] * 3
        cut[axis] = slice(1, None)
        edge[tuple(cut)] |= np.diff(cells, axis=axis) != 0
    dist = ndimage.distance_transform_edt(~edge)
    return np.clip(1 - dist / 3 + rng.normal(0, 0.05, SHAPE), 0, 1).astype(np.float32)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the label ids of ``a`` and ``b`` correspond one to one (same objects, any numbering)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    zero_ok = np.array_equal(a == 0, b == 0)
    return zero_ok and len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize(("method", "seed"), [("cc", 2), ("distance_ws", 2), ("distance_ws", 5),
                                              ("boundary_ws", 0)])
def test_eight_blocks_give_the_in_memory_partition(tmp_path, method, seed):
    prob = _membranes(seed) if method == "boundary_ws" else _touching_pairs(seed)
    expected = instances(prob, method, min_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no object left whole: the halo covers them all
        labels = instances_blockwise(da.from_array(prob, chunks=BLOCK), tmp_path / "labels.zarr", method,
                                     min_size=4, halo=16)
    got = labels[:]
    assert got.dtype == np.uint32 and labels.chunks == BLOCK
    assert _same_partition(expected, got)
    assert np.array_equal(np.unique(got[got > 0]), np.arange(1, expected.max() + 1))  # 1..N, no gaps
    if method == "distance_ws":
        assert got.max() > instances(prob, "cc", min_size=4).max()  # touching objects were split
    if method != "boundary_ws":
        # at least one object crosses a block face, and it keeps one id on both sides
        crossing = np.intersect1d(got[15][got[15] > 0], got[16][got[16] > 0])
        assert crossing.size > 0


def test_objects_longer_than_the_halo_are_left_whole_with_a_warning(tmp_path):
    prob = _touching_pairs(2)
    with pytest.warns(UserWarning, match=r"left whole \(not split\); pass halo >= ") as record:
        labels = instances_blockwise(prob, tmp_path / "l.zarr", "distance_ws", block=BLOCK, halo=2)
    unsplit = [w.message for w in record if isinstance(w.message, UnsplitObjectsWarning)]
    assert len(unsplit) == 1 and unsplit[0].count >= 1 and unsplit[0].needed_halo > 2  # what the CLI phrases
    # still a valid, consistent labelling: each left-whole object is one connected component
    got = labels[:]
    assert _same_partition(instances(prob, "cc"), got) or got.max() >= instances(prob, "cc").max()


def test_reads_are_bounded_by_the_window(tmp_path):
    prob = _touching_pairs(5)

    class Recorder:
        """An array that records the size of every read (the full volume is never read at once)."""

        def __init__(self, data):
            self.data, self.shape, self.dtype, self.ndim, self.largest = data, data.shape, data.dtype, data.ndim, 0

        def __getitem__(self, key):
            part = self.data[key]
            self.largest = max(self.largest, part.size)
            return part

    source = Recorder(prob)
    for method in ("cc", "distance_ws", "boundary_ws"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "distance_ws: ", UserWarning)  # objects longer than this small halo
            instances_blockwise(da.from_array(source, chunks=BLOCK), tmp_path / f"{method}.zarr", method, halo=8)
    assert 0 < source.largest <= np.prod([b + 2 * 8 for b in BLOCK]) < prob.size


def test_ids_unique_across_blocks(tmp_path):
    prob = np.zeros((4, 16, 16), np.float32)
    prob[:, 2:6, 2:6] = 0.9  # inside block (0, 0, 0)
    prob[:, 10:14, 10:14] = 0.9  # inside block (0, 1, 1)
    prob[:, 7:11, 0] = 0.9  # crosses the y face (and the z face)
    labels = instances_blockwise(prob, tmp_path / "l.zarr", block=(2, 8, 8))[:]
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    assert len({int(labels[0, 3, 3]), int(labels[0, 12, 12]), int(labels[0, 7, 0])}) == 3
    assert labels[0, 7, 0] == labels[3, 10, 0]


def test_output_rules(tmp_path):
    prob = _touching_pairs(2)
    source = tmp_path / "prob.zarr"
    zarr.create_array(str(source), shape=SHAPE, chunks=BLOCK, dtype="float32")[:] = prob
    with pytest.raises(ValueError, match="is the input"):
        instances_blockwise(str(source), source)
    out = tmp_path / "labels.zarr"
    instances_blockwise(str(source), out)
    with pytest.raises(FileExistsError, match="overwrite"):
        instances_blockwise(str(source), out)
    instances_blockwise(str(source), out, "distance_ws", overwrite=True, halo=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr", "prob.zarr"]  # no temporary left
    with pytest.raises(ValueError, match="method must be one of"):
        instances_blockwise(str(source), tmp_path / "x.zarr", "watershed")
    bad = prob.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        instances_blockwise(bad, tmp_path / "nan.zarr", block=BLOCK)
    assert not (tmp_path / "nan.zarr").exists()


@pytest.mark.slow
def test_cli_zarr_instances_end_to_end(tmp_path):
    from emzoo.cli.main import app
    from emzoo.inference import foreground, predict
    from emzoo.io import write
    from tests.inference import toys

    toys.tiny_unet().save(tmp_path / "tiny.keras")
    volume = (np.random.default_rng(0).random((4, 40, 36)) * 255).astype(np.uint8)
    write(tmp_path / "in.tif", volume)
    args = ["predict", str(tmp_path / "tiny.keras"), str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"),
            "--instances", "cc", "--threshold", "0.45", "--block", "2,20,20", "--halo", "exact", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    labels = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert labels.dtype == np.uint32 and labels.shape == (4, 40, 36)
    prob = foreground(predict(toys.tiny_unet(), volume, halo="exact", progress=False))
    assert _same_partition(instances(prob, "cc", threshold=0.45), labels[:])
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output


@pytest.mark.slow
def test_cli_ome_zarr_output_gets_ngff_labels(tmp_path):
    from emzoo.cli.main import app
    from emzoo.io import write
    from tests.inference import toys

    toys.tiny_unet().save(tmp_path / "tiny.keras")
    volume = (np.random.default_rng(1).random((4, 40, 36)) * 255).astype(np.uint8)
    write(tmp_path / "in.tif", volume, voxel_size=(30.0, 5.0, 5.0))
    out = tmp_path / "out.ome.zarr"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "tiny.keras"), str(tmp_path / "in.tif"), str(out),
                                      "--instances", "cc", "--threshold", "0.45", "--no-progress"])
    assert result.exit_code == 0, result.output
    image = zarr.open_group(str(out), mode="r")
    labels = zarr.open_group(str(out / "labels" / "instances"), mode="r")
    assert "instances" in dict(zarr.open_group(str(out / "labels"), mode="r").attrs)["ome"]["labels"]
    assert labels["s0"].dtype == np.uint32 and labels["s0"].shape == image["s0"].shape == (4, 40, 36)
    assert _same_partition(instances(image["s0"][:], "cc", threshold=0.45), labels["s0"][:])
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
