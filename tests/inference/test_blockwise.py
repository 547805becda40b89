"""Blockwise prediction: equals in-memory prediction on the threaded and distributed schedulers, resumes after an
interruption with identical bytes, and refuses to mix runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emzoo.inference import Ensemble, blockwise, foreground, predict, predict_blockwise
from emzoo.io import write
from tests.inference import toys

RNG = np.random.default_rng(0)
VOLUME = (RNG.random((4, 70, 60)) * 255).astype(np.uint8)
NORM = {"method": "minmax", "min": 0, "max": 255}
BLOCK = (2, 32, 32)


@pytest.fixture(scope="module")
def unet():
    return toys.tiny_unet()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "vol.zarr"
    write(path, VOLUME, chunks=(1, 32, 32))
    return str(path)


@pytest.fixture(scope="module")
def in_memory(unet):
    return predict(unet, VOLUME, blend="none", normalization=NORM, progress=False)


def _store_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and blockwise.PROGRESS_DIR not in p.parts}


def test_threaded_equals_in_memory(unet, source, in_memory, tmp_path):
    out = predict_blockwise(unet, source, tmp_path / "out.zarr", block=BLOCK, normalization=NORM, progress=False)
    assert out.shape == (4, 70, 60, 1) and out.chunks == (2, 32, 32, 1)
    assert np.abs(out[:] - in_memory).max() <= 1e-5
    done = sorted(p.name for p in (tmp_path / "out.zarr" / blockwise.PROGRESS_DIR).glob("*.done"))
    assert len(done) == 2 * 3 * 2 and done[0] == "0_0_0.done"


def test_distributed_equals_threaded(unet, source, tmp_path):
    from distributed import Client, LocalCluster

    threaded = predict_blockwise(unet, source, tmp_path / "t.zarr", block=BLOCK, normalization=NORM, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dist = predict_blockwise(unet, source, tmp_path / "d.zarr", block=BLOCK, normalization=NORM, client=client,
                                 progress=False)
    np.testing.assert_array_equal(dist[:], threaded[:])


def test_hdf5_source_ensemble_and_outputs(unet, tmp_path, in_memory):
    write(tmp_path / "vol.h5:/raw", VOLUME, chunks=(1, 35, 30))
    other = toys.tiny_unet(7)
    ens = Ensemble([unet, other])
    expected = predict(ens, VOLUME, blend="none", normalization=NORM, progress=False)
    out = predict_blockwise(ens, f"{tmp_path}/vol.h5:/raw", tmp_path / "e.zarr", block=BLOCK,
                            normalization=NORM, output="foreground", progress=False)
    assert out.shape == VOLUME.shape and out.dtype == np.float32
    assert np.abs(out[:] - foreground(expected)).max() <= 1e-5
    mask = predict_blockwise(unet, VOLUME, tmp_path / "m.zarr", block=BLOCK, normalization=NORM, output="mask",
                             threshold=0.5, progress=False)
    assert mask.dtype == np.uint8
    # Compare away from 0.5, where float rounding could flip a voxel.
    sure = np.abs(foreground(in_memory) - 0.5) > 1e-4
    np.testing.assert_array_equal(mask[:][sure], (foreground(in_memory) >= 0.5)[sure])


def test_2d_image_blockwise(unet, tmp_path):
    image = VOLUME[0]
    out = predict_blockwise(unet, image, tmp_path / "i.zarr", block=32, normalization=NORM, progress=False)
    assert out.shape == (70, 60, 1) and out.chunks == (32, 32, 1)
    np.testing.assert_allclose(out[:], predict(unet, image, blend="none", normalization=NORM, progress=False),
                               atol=1e-5)


def test_interrupted_run_resumes_to_identical_bytes(unet, source, tmp_path, monkeypatch):
    reference = tmp_path / "ref.zarr"
    predict_blockwise(unet, source, reference, block=BLOCK, normalization=NORM, progress=False)
    original = blockwise._run_block
    calls = []

    def dies_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")  # like Ctrl-C mid-run
        calls.append(args[5])
        return original(*args, **kwargs)

    target = tmp_path / "resumed.zarr"
    monkeypatch.setattr(blockwise, "_run_block", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, num_workers=1, progress=False)
    monkeypatch.setattr(blockwise, "_run_block", original)
    markers = list((target / blockwise.PROGRESS_DIR).glob("*.done"))
    assert len(markers) == 3

    redone = []
    monkeypatch.setattr(blockwise, "_run_block", lambda *a, **k: redone.append(a[5]) or original(*a, **k))
    predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, progress=False)
    assert len(redone) == 12 - 3 and not set(redone) & set(calls)  # finished blocks are skipped
    assert _store_bytes(target) == _store_bytes(reference)


def test_existing_output_from_another_run(unet, source, tmp_path):
    target = tmp_path / "o.zarr"
    predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, progress=False)
    with pytest.raises(FileExistsError, match="different arguments; pass overwrite=True"):
        predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, tta="flips", progress=False)
    out = predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, tta="flips", overwrite=True,
                            progress=False)
    assert out.shape == (4, 70, 60, 1)
    write(tmp_path / "foreign.zarr", VOLUME)
    with pytest.raises(FileExistsError, match="not written by predict_blockwise"):
        predict_blockwise(unet, source, tmp_path / "foreign.zarr", block=BLOCK, progress=False)


def test_bad_arguments(unet, source, tmp_path):
    with pytest.raises(ValueError, match=r"must be a multiple of chunks \(2, 20, 20\)"):
        predict_blockwise(unet, source, tmp_path / "x.zarr", block=BLOCK, chunks=(2, 20, 20), progress=False)
    with pytest.raises(ValueError, match="output must be one of"):
        predict_blockwise(unet, source, tmp_path / "y.zarr", block=BLOCK, output="labels", progress=False)
    bad = VOLUME.astype(np.float32)
    bad[3, 60, 50] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf value\(s\) \(first nan at index \(3, 60, 50"):
        predict_blockwise(unet, bad, tmp_path / "z.zarr", block=BLOCK, progress=False)


_KILL_SCRIPT = """
import sys, numpy as np
from tests.inference import toys
from emzoo.inference import blockwise, predict_blockwise
original = blockwise._run_block
def slow(*args, **kwargs):
    result = original(*args, **kwargs)
    print("block", flush=True)
    import time; time.sleep(0.3)
    return result
blockwise._run_block = slow
predict_blockwise(toys.tiny_unet(), sys.argv[1], sys.argv[2], block=(2, 32, 32), num_workers=1, progress=False,
                  normalization={"method": "minmax", "min": 0, "max": 255})
"""


@pytest.mark.slow
def test_killed_process_resumes_to_identical_bytes(unet, source, tmp_path):
    reference = tmp_path / "ref.zarr"
    predict_blockwise(unet, source, reference, block=BLOCK, normalization=NORM, progress=False)
    target = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, source, str(target)], stdout=subprocess.PIPE,
                            env=env, text=True)
    seen = 0
    while seen < 4:
        line = proc.stdout.readline()
        assert line, "the child process ended before it could be killed"
        seen += line.startswith("block")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((target / blockwise.PROGRESS_DIR).glob("*.done")))
    assert 4 <= done < 12
    time.sleep(0.1)
    predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, progress=False)
    assert _store_bytes(target) == _store_bytes(reference)


def _dies_after(n, calls):
    """A ``_run_block`` that records each block's index and raises KeyboardInterrupt before the ``n+1``-th block."""
    original = blockwise._run_block

    def run(*args, **kwargs):
        if len(calls) == n:
            raise KeyboardInterrupt("killed")
        calls.append(args[5])
        return original(*args, **kwargs)

    return run


def test_resume_recomputes_blocks_whose_input_changed(unet, tmp_path, monkeypatch):
    src = tmp_path / "src.zarr"
    write(src, VOLUME, chunks=(1, 32, 32))
    target = tmp_path / "out.zarr"
    original = blockwise._run_block
    calls = []
    monkeypatch.setattr(blockwise, "_run_block", _dies_after(6, calls))
    with pytest.raises(KeyboardInterrupt):
        predict_blockwise(unet, str(src), target, block=BLOCK, normalization=NORM, num_workers=1, progress=False)
    iz, iy, ix = calls[0]  # a finished block whose input now changes (same path, shape and dtype)
    box = (slice(2 * iz, 2 * iz + 2), slice(32 * iy, 32 * iy + 32), slice(32 * ix, 32 * ix + 32))
    changed = VOLUME.copy()
    changed[box] = 255 - changed[box]
    import zarr

    zarr.open_array(str(src), mode="r+")[...] = changed
    redone = []
    monkeypatch.setattr(blockwise, "_run_block", lambda *a, **k: redone.append(a[5]) or original(*a, **k))
    with pytest.warns(UserWarning, match=r"the input of \d of the 6 finished block\(s\) changed") as caught:
        out = predict_blockwise(unet, str(src), target, block=BLOCK, normalization=NORM, progress=False)
    stale = int(str(caught[0].message).split("the input of ")[1].split()[0])
    assert calls[0] in redone and len(redone) == 6 + stale
    # A 2D net reads no other slice: finished blocks of the other slab of z keep their result.
    assert not {c for c in calls if c[0] != iz} & set(redone)
    fresh = predict(unet, changed, blend="none", normalization=NORM, progress=False)
    np.testing.assert_allclose(out[...], fresh, atol=1e-5)
    redone.clear()
    predict_blockwise(unet, str(src), target, block=BLOCK, normalization=NORM, progress=False)
    assert redone == []  # an unchanged input is trusted: nothing recomputed


def test_reading_an_unfinished_output_names_the_missing_blocks(unet, source, tmp_path, monkeypatch):
    from emzoo.io import read

    original = blockwise._run_block
    calls = []
    target = tmp_path / "cut.zarr"
    monkeypatch.setattr(blockwise, "_run_block", _dies_after(10, calls))
    with pytest.raises(KeyboardInterrupt):
        predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, num_workers=1, progress=False)
    monkeypatch.setattr(blockwise, "_run_block", original)
    missing = sorted(set(np.ndindex(2, 3, 2)) - set(calls))
    shown = ", ".join(map(str, missing))
    with pytest.raises(ValueError, match=rf"unfinished blockwise prediction: 2 of 12 blocks are missing "
                                         rf"\({shown.replace('(', '[(]').replace(')', '[)]')}; .*run the same "
                                         r"predict_blockwise call .* again to finish it, or pass allow_incomplete"):
        read(target)
    assert read(target, allow_incomplete=True).shape == (4, 70, 60)  # one class: the channel axis dropped
    predict_blockwise(unet, source, target, block=BLOCK, normalization=NORM, progress=False)
    assert read(target).shape == (4, 70, 60)


def test_rgb_like_array_needs_axes(unet, tmp_path):
    rgb = (RNG.random((40, 36, 3)) * 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"ambiguous input of shape \(40, 36, 3\)"):
        predict_blockwise(unet, rgb, tmp_path / "a.zarr", normalization=NORM, progress=False)
    out = predict_blockwise(unet, rgb, tmp_path / "b.zarr", axes="ZYX", block=(40, 36, 3), normalization=NORM,
                            progress=False)
    assert out.shape == (40, 36, 3, 1)
