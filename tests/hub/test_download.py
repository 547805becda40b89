"""Loading by name through the local Hub: round trip, offline cache, mirrors, sha256 checks, concurrent fetches."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emzoo.hub.download import download_to_mirror, fetch_release, hf_cache_dir, offline
from emzoo.hub.manifest import resolve_weights
from tests.hub.conftest import REPO_ID, preset_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]


def _blobs(cache: Path) -> list[Path]:
    return sorted((cache / f"models--{REPO_ID.replace('/', '--')}" / "blobs").glob("*"))


def test_load_by_name_predicts_like_the_trained_model(hub):
    import emzoo

    model = emzoo.load("unet.tiny")
    np.testing.assert_array_equal(model.predict(hub.preset.x, verbose=0), hub.preset.y)
    # config.json, model.weights.h5, emzoo.json: one HEAD and one GET each; README.md is not fetched to load.
    assert hub.server.count("HEAD") == 3 and hub.server.count("GET") == 3
    assert model.emzoo_metadata["metrics"]["test_split"] == "synthetic, 4 tiles"
    assert model.emzoo_metadata == json.loads((hub.preset.path / "emzoo.json").read_text())
    # The bare entry means its default tag, and weights="tiny" is the same release.
    for name, weights in (("unet", "default"), ("unet", "tiny")):
        again = emzoo.load(name, weights=weights)
        np.testing.assert_array_equal(again.predict(hub.preset.x, verbose=0), hub.preset.y)


def test_warm_cache_makes_no_request_online_or_offline(hub, monkeypatch):
    release = resolve_weights("unet", "tiny")
    fetch_release(release)
    first = hub.server.count()
    assert first == 2 * len(release.files)
    fetch_release(release)  # pinned to a commit and cached: answered from disk
    assert hub.server.count() == first
    # Also in a fresh process with huggingface_hub's telemetry and agent detection left on (they may call the Hub
    # while building request headers) and only EMZOO_OFFLINE set: still not one request.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE")}
    code = "from emzoo.hub.download import fetch_release as f; from emzoo.hub.manifest import resolve_weights as r; "
    for extra in ({}, {"EMZOO_OFFLINE": "1"}):
        run = subprocess.run([sys.executable, "-c", code + "f(r('unet', 'tiny'))"], env={**env, **extra},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
    assert hub.server.count() == first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline() == "HF_HUB_OFFLINE=1"
    import emzoo

    model = emzoo.load("unet.tiny")
    np.testing.assert_array_equal(model.predict(hub.preset.x, verbose=0), hub.preset.y)
    assert hub.server.count() == first


def test_offline_and_not_cached_says_how_to_get_it(hub, monkeypatch):
    monkeypatch.setenv("EMZOO_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        fetch_release(resolve_weights("unet", "tiny"))
    message = str(err.value)
    assert "\n" not in message
    for part in ("EMZOO_OFFLINE=1", "emzoo download unet.tiny --to DIR", "EMZOO_WEIGHTS_DIR=DIR",
                 f"https://huggingface.co/{REPO_ID}", hub.commit, str(hf_cache_dir())):
        assert part in message
    assert hub.server.count() == 0


def test_mirror_folder_works_with_the_endpoint_down(hub, monkeypatch, tmp_path):
    rows = download_to_mirror(["unet.tiny"], tmp_path / "mirror")
    assert {p.name for _, p, status in rows if status == "copied"} == set(preset_bytes(hub.preset.path))
    assert download_to_mirror(["unet"], tmp_path / "mirror")[0][2] == "kept"  # already there and verified
    hub.server.stop()
    seen = hub.server.count()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))  # nothing cached
    monkeypatch.setenv("EMZOO_WEIGHTS_DIR", str(tmp_path / "mirror"))
    import emzoo

    model = emzoo.load("unet.tiny")
    np.testing.assert_array_equal(model.predict(hub.preset.x, verbose=0), hub.preset.y)
    assert hub.server.count() == seen
    assert not (tmp_path / "empty_hf_home").exists()


def test_tampered_download_is_refused_and_nothing_deleted(hub):
    files = preset_bytes(hub.preset.path)
    weights = bytearray(files["model.weights.h5"])
    weights[len(weights) // 2] ^= 0x01  # one flipped bit, same size
    hub.server.add_repo(REPO_ID, {**files, "model.weights.h5": bytes(weights)}, commit=hub.commit)
    with pytest.raises(ValueError) as err:
        fetch_release(resolve_weights("unet", "tiny"))
    message = str(err.value)
    good, bad = hashlib.sha256(files["model.weights.h5"]).hexdigest(), hashlib.sha256(weights).hexdigest()
    assert "model.weights.h5" in message and good in message and bad in message and "sha256" in message
    assert any(b.read_bytes() == bytes(weights) for b in _blobs(hub.cache_dir))  # the evidence is kept


def test_tampered_cache_blob_is_caught(hub):
    release = resolve_weights("unet", "tiny")
    fetch_release(release)
    blob = next(b for b in _blobs(hub.cache_dir) if b.name == release.files["config.json"].sha256)
    blob.write_bytes(blob.read_bytes().replace(b'"widths"', b'"widthz"'))
    with pytest.raises(ValueError, match=r"config\.json from the Hugging Face cache .* fails the sha256 check"):
        fetch_release(release)
    assert blob.exists()


def test_tampered_and_truncated_mirror_files_are_refused(hub, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    download_to_mirror(["unet.tiny"], mirror)
    monkeypatch.setenv("EMZOO_WEIGHTS_DIR", str(mirror))
    weights = mirror / REPO_ID / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100])
    release = resolve_weights("unet", "tiny")
    with pytest.raises(ValueError, match=r"model\.weights\.h5 from the mirror .* is truncated .* "
                                         rf"{len(data) - 100} bytes .* expects {len(data)} bytes"):
        fetch_release(release)
    weights.write_bytes(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
    with pytest.raises(ValueError, match="fails the sha256 check"):
        fetch_release(release)
    assert weights.exists()  # the user's mirror file is left as it is
    # `emzoo download` into the same mirror replaces the broken copy.
    monkeypatch.delenv("EMZOO_WEIGHTS_DIR")
    statuses = {p.name: status for _, p, status in download_to_mirror(["unet.tiny"], mirror)}
    assert statuses["model.weights.h5"] == "copied" and statuses["config.json"] == "kept"
    assert weights.read_bytes() == data


def test_truncated_download_is_refused(hub):
    files = preset_bytes(hub.preset.path)
    hub.server.add_repo(REPO_ID, {**files, "model.weights.h5": files["model.weights.h5"][:-1]}, commit=hub.commit)
    with pytest.raises(ValueError, match=r"model\.weights\.h5 .* is truncated"):
        fetch_release(resolve_weights("unet", "tiny"))


_FETCH = """
import json, pathlib, sys, time
from emzoo.hub.download import fetch_release
from emzoo.hub.manifest import resolve_weights
release = resolve_weights("unet", "tiny")
go = pathlib.Path(sys.argv[1])
pathlib.Path(sys.argv[2]).touch()
while not go.exists():  # start together: both processes are warm when the test says go
    time.sleep(0.01)
paths = fetch_release(release)
print(json.dumps({k: str(v) for k, v in paths.items()}))
assert "keras" not in sys.modules  # fetching stays light: no Keras/TensorFlow import
"""


def test_concurrent_fetches_in_two_processes_do_not_corrupt_the_cache(hub, tmp_path):
    hub.server.delay = 0.4  # each GET takes ~0.4 s, so the two processes download at the same time
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    go, ready = tmp_path / "go", [tmp_path / f"ready{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _FETCH, str(go), str(r)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, errs) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, errs
    # Both processes asked for the first file while it was still downloading: the fetches really overlapped.
    first = next(iter(resolve_weights("unet", "tiny").files))
    assert sum(1 for m, p in hub.server.requests if m == "HEAD" and p.endswith("/" + first)) == 2
    paths = [json.loads(out) for out, _ in outs]
    assert paths[0] == paths[1]
    release = resolve_weights("unet", "tiny")
    for name, path in paths[0].items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == release.files[name].sha256
    assert not list(hub.cache_dir.rglob("*.incomplete"))
    import emzoo

    model = emzoo.load("unet.tiny")
    np.testing.assert_array_equal(model.predict(hub.preset.x, verbose=0), hub.preset.y)
