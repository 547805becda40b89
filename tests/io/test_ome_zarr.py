"""Issue 12, OME-Zarr: what emzoo writes is read by ome-zarr's own reader and validated by ome-zarr-models, in
NGFF 0.4 (Zarr v2) and 0.5 (Zarr v3): a >= 3-level pyramid (box means for images, nearest for labels), the voxel
size as each level's scale in nanometres, labels under ``labels/`` with image-label metadata; a blockwise
``*.ome.zarr`` prediction gets the same; a full disk while creating its store leaves nothing behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from emzoo.io import read, write
from emzoo.io.ome import halving_plan, write_labels, write_ome_image

ome_reader = pytest.importorskip("ome_zarr.reader")
ome_io = pytest.importorskip("ome_zarr.io")

RNG = np.random.default_rng(0)
PROB = RNG.random((3, 20, 24, 2)).astype(np.float32)  # Z, Y, X, C
LABELS = RNG.integers(0, 9, (3, 20, 24)).astype(np.int64)
VOXEL = (30.0, 4.0, 4.5)


def _nodes(path: Path) -> list:
    return list(ome_reader.Reader(ome_io.parse_url(str(path)))())


def _scales(node) -> list[list[float]]:
    return [next(t["scale"] for t in ts if t["type"] == "scale") for ts in node.metadata["coordinateTransformations"]]


def _ome_attrs(path: Path) -> dict:
    if (path / "zarr.json").is_file():
        return json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    return json.loads((path / ".zattrs").read_text())


@pytest.mark.parametrize("zarr_format, version", [(2, "0.4"), (3, "0.5")])
def test_image_and_labels_read_by_ome_zarr(tmp_path, zarr_format, version):
    path = tmp_path / "p.ome.zarr"
    write_ome_image(path, PROB, voxel_size=VOXEL, zarr_format=zarr_format, chunks=(2, 8, 8, 2))
    write_labels(path, LABELS)
    assert ome_io.parse_url(str(path)).version == version
    attrs = _ome_attrs(path)
    assert attrs.get("version", attrs["multiscales"][0].get("version")) == version
    image, labels_group, label = _nodes(path)
    assert [type(s).__name__ for s in image.specs] == ["Multiscales"]
    assert len(image.data) >= 3 and image.data[0].shape == (2, 3, 20, 24)
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "z", "y", "x"]
    assert [a.get("unit") for a in image.metadata["axes"]] == [None, "nanometer", "nanometer", "nanometer"]
    assert _scales(image)[:3] == [[1.0, 30.0, 4.0, 4.5], [1.0, 30.0, 8.0, 9.0], [1.0, 30.0, 16.0, 18.0]]
    np.testing.assert_array_equal(image.data[0].compute(), np.moveaxis(PROB, -1, 0))
    assert [type(s).__name__ for s in labels_group.specs] == ["Labels"]
    assert {type(s).__name__ for s in label.specs} == {"Label", "Multiscales"}
    assert label.metadata["name"] == "instances" and len(label.data) == len(image.data)
    assert label.data[0].dtype == np.uint32 and label.data[0].shape == (3, 20, 24)
    assert _scales(label) == [s[1:] for s in _scales(image)]
    assert _ome_attrs(path / "labels" / "instances")["image-label"]["source"] == {"image": "../../"}
    assert not [p for p in tmp_path.rglob(".*") if p.name != ".zattrs" and p.name != ".zgroup"
                and p.name != ".zarray"]  # no temporary folder left


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_validated_by_ome_zarr_models(tmp_path, zarr_format):
    models = pytest.importorskip("ome_zarr_models")
    path = tmp_path / "p.ome.zarr"
    write_ome_image(path, PROB[..., 0], voxel_size=VOXEL, zarr_format=zarr_format)
    write_labels(path, LABELS, name="cells")
    image = models.open_ome_zarr(zarr.open_group(str(path), mode="r"))
    assert type(image).__module__ == f"ome_zarr_models.v0{2 + zarr_format}.image"
    attrs = image.attributes if zarr_format == 2 else image.attributes.ome
    assert [d.path for d in attrs.multiscales[0].datasets] == ["s0", "s1", "s2"]
    label = models.open_ome_zarr(zarr.open_group(str(path / "labels" / "cells"), mode="r"))
    assert type(label).__name__ == "ImageLabel"
    labels = models.open_ome_zarr(zarr.open_group(str(path / "labels"), mode="r"))
    assert type(labels).__name__ == "Labels"
    assert (labels.attributes if zarr_format == 2 else labels.attributes.ome).labels == ["cells"]


def test_write_and_read_round_trip_voxel_size(tmp_path):
    write(tmp_path / "v.ome.zarr", PROB, voxel_size=VOXEL)
    volume = read(tmp_path / "v.ome.zarr")
    assert volume.axes == "ZYXC" and volume.voxel_size == VOXEL
    np.testing.assert_array_equal(np.asarray(volume), PROB)
    write_labels(tmp_path / "v.ome.zarr", LABELS)
    labels = read(tmp_path / "v.ome.zarr/labels/instances")
    assert labels.axes == "ZYX" and labels.voxel_size == VOXEL and labels.dtype == np.uint32
    np.testing.assert_array_equal(np.asarray(labels), LABELS)
    write(tmp_path / "u.ome.zarr", PROB[0, ..., 0])  # no voxel size: scale 1, no unit, read back as unknown
    assert read(tmp_path / "u.ome.zarr").voxel_size is None


def test_pyramid_means_and_nearest_on_a_tiny_array(tmp_path):
    image = np.arange(4 * 6, dtype=np.float32).reshape(4, 6) ** 1.5
    write_ome_image(tmp_path / "m.ome.zarr", image, voxel_size=(4.0, 4.0), levels=3)
    group = zarr.open_group(str(tmp_path / "m.ome.zarr"), mode="r")
    level1 = image.reshape(2, 2, 3, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(group["s1"][:], level1, rtol=1e-6)
    # 2 x 3 -> 1 x 2: the odd side's last box repeats its last column
    padded = np.concatenate([level1, level1[:, -1:]], axis=1)
    np.testing.assert_allclose(group["s2"][:], padded.reshape(1, 2, 2, 2).mean(axis=(1, 3)), rtol=1e-6)
    datasets = _ome_attrs(tmp_path / "m.ome.zarr")["multiscales"][0]["datasets"]
    assert datasets[1]["coordinateTransformations"][1] == {"type": "translation", "translation": [2.0, 2.0]}
    labels = (np.arange(4 * 6).reshape(4, 6) % 5).astype(np.uint16)
    write_labels(tmp_path / "m.ome.zarr", labels)
    label_group = zarr.open_group(str(tmp_path / "m.ome.zarr/labels/instances"), mode="r")
    np.testing.assert_array_equal(label_group["s1"][:], labels[::2, ::2])
    np.testing.assert_array_equal(label_group["s2"][:], labels[::4, ::4])


def test_anisotropic_plan_halves_z_only_once_xy_reach_it():
    assert halving_plan((3, 64, 64), (30.0, 4.0, 4.0), levels=5) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4), (2, 8, 8), (4, 16, 16)]
    assert halving_plan((8, 8, 8), None, levels=3) == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    assert len(halving_plan((1, 10, 12), (30.0, 4.0, 4.0))) == 3  # at least 3 levels by default
    assert halving_plan((1, 2048, 2048), (30.0, 4.0, 4.0))[-1] == (1, 8, 8)  # until y/x <= 256
    assert halving_plan((1, 2, 1), None, levels=5) == [(1, 1, 1), (1, 2, 1)]  # nothing left to halve


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="zarr_format must be 2 .* or 3"):
        write_ome_image(tmp_path / "a.ome.zarr", PROB, zarr_format=4)
    with pytest.raises(ValueError, match="method must be one of"):
        write_ome_image(tmp_path / "a.ome.zarr", PROB, method="max")
    with pytest.raises(ValueError, match="voxel_size .* one value per spatial axis"):
        write_ome_image(tmp_path / "a.ome.zarr", PROB, voxel_size=(4.0, 4.0))
    write_ome_image(tmp_path / "a.ome.zarr", PROB)
    with pytest.raises(ValueError, match=r"labels have shape \(3, 20\) .* spatial shape \(3, 20, 24\)"):
        write_labels(tmp_path / "a.ome.zarr", LABELS[:, :, 0])
    with pytest.raises(TypeError, match="labels must be integers"):
        write_labels(tmp_path / "a.ome.zarr", LABELS.astype(np.float32))
    with pytest.raises(ValueError, match="uint32"):
        write_labels(tmp_path / "a.ome.zarr", LABELS - 1)
    with pytest.raises(ValueError, match="plain folder name"):
        write_labels(tmp_path / "a.ome.zarr", LABELS, name="../x")
    assert not (tmp_path / "a.ome.zarr" / "labels" / "instances").exists()


# ------------------------------------------------------------------------------------------- blockwise output

VOLUME = (RNG.random((4, 70, 60)) * 255).astype(np.uint8)
NORM = {"method": "minmax", "min": 0, "max": 255}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "vol.zarr"
    write(path, VOLUME, chunks=(1, 32, 32), voxel_size=VOXEL)
    return str(path)


@pytest.fixture(scope="module")
def unet():
    from tests.inference import toys

    return toys.tiny_unet()


def test_blockwise_ome_output_has_metadata_and_pyramid(unet, source, tmp_path):
    from emzoo.inference import predict_blockwise

    plain = predict_blockwise(unet, source, tmp_path / "out.zarr", block=(2, 32, 32), normalization=NORM,
                              progress=False)
    out = predict_blockwise(unet, source, tmp_path / "out.ome.zarr", block=(2, 32, 32), normalization=NORM,
                            progress=False)
    assert out.shape == (1, 4, 70, 60)
    np.testing.assert_array_equal(out[:], np.moveaxis(plain[:], -1, 0))
    image = _nodes(tmp_path / "out.ome.zarr")[0]
    assert len(image.data) >= 3 and [a["name"] for a in image.metadata["axes"]] == ["c", "z", "y", "x"]
    assert _scales(image)[:2] == [[1.0, *VOXEL], [1.0, 30.0, 8.0, 9.0]]
    assert _ome_attrs(tmp_path / "out.ome.zarr")["version"] == "0.5"
    level1 = np.asarray(image.data[1])
    expected = np.moveaxis(plain[:], -1, 0).reshape(1, 4, 35, 2, 30, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(level1, expected, rtol=1e-6)
    volume = read(tmp_path / "out.ome.zarr")
    assert volume.voxel_size == VOXEL and volume.shape == (4, 70, 60)
    models = pytest.importorskip("ome_zarr_models")
    assert type(models.open_ome_zarr(zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r"))).__name__ == "Image"
    # the same arguments again: a finished run, nothing recomputed, same bytes
    before = {p: p.read_bytes() for p in (tmp_path / "out.ome.zarr").rglob("*") if p.is_file()}
    predict_blockwise(unet, source, tmp_path / "out.ome.zarr", block=(2, 32, 32), normalization=NORM, progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "out.ome.zarr").rglob("*") if p.is_file()} == before


def test_blockwise_ome_interrupted_run_resumes(unet, source, tmp_path, monkeypatch):
    from emzoo.inference import blockwise, predict_blockwise

    original = blockwise._run_block
    calls = []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise RuntimeError("killed")
        calls.append(args[5])
        return original(*args, **kwargs)

    monkeypatch.setattr(blockwise, "_run_block", dies_after_two)
    kwargs = dict(block=(2, 32, 32), normalization=NORM, progress=False, num_workers=1, output="mask")
    with pytest.raises(RuntimeError, match="killed"):
        predict_blockwise(unet, source, tmp_path / "m.ome.zarr", **kwargs)
    with pytest.raises(ValueError, match="unfinished blockwise prediction: 10 of 12 blocks are missing"):
        read(tmp_path / "m.ome.zarr")
    monkeypatch.setattr(blockwise, "_run_block", original)
    out = predict_blockwise(unet, source, tmp_path / "m.ome.zarr", **kwargs)
    group = zarr.open_group(str(tmp_path / "m.ome.zarr"), mode="r")
    assert out.shape == (4, 70, 60) and len(_ome_attrs(tmp_path / "m.ome.zarr")["multiscales"][0]["datasets"]) >= 3
    np.testing.assert_array_equal(group["s1"][:], out[:][:, ::2, ::2])  # a mask is downsampled nearest


@pytest.mark.parametrize("name, existing", [("out.ome.zarr", False), ("out.ome.zarr", True), ("out.zarr", False)])
def test_blockwise_full_disk_while_creating_the_store(unet, source, tmp_path, monkeypatch, name, existing):
    from emzoo.inference import blockwise, predict_blockwise

    dst = tmp_path / name
    if existing:
        write(dst, VOLUME)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    source_before = {p: p.read_bytes() for p in Path(source).rglob("*") if p.is_file()}

    def full(path, **kwargs):
        (path / "zarr.json").write_text("{")  # a partly written store
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blockwise, "_create_store", full)
    kept = "the previous store was put back intact" if existing else "nothing was left there"
    with pytest.raises(OSError, match=rf"no space left on the device while writing .*{name}; {kept} and the "
                                      "input is intact; free space") as caught:
        predict_blockwise(unet, source, dst, block=(2, 32, 32), normalization=NORM, progress=False,
                          overwrite=existing)
    assert caught.value.errno == errno.ENOSPC and "\n" not in str(caught.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(tmp_path.iterdir()) == ([dst] if existing else [])
    assert {p: p.read_bytes() for p in Path(source).rglob("*") if p.is_file()} == source_before
