"""Fixtures of the hub tests: a tiny trained U-Net saved as a preset, and a local Hub serving it by name.

Nothing touches the network: ``HF_ENDPOINT`` points at :class:`tests.hub.hf_endpoint.FakeHub` on 127.0.0.1,
``HF_HOME`` and the manifest folder live in ``tmp_path``, and the environment is restored after each test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.hub.hf_endpoint import FakeHub

REPO_ID = "emzoo-test/unet-tiny"
TINY = {"input_shape": (32, 32, 1), "widths": (4, 8, 16)}


@dataclass
class TinyPreset:
    path: Path
    x: np.ndarray
    y: np.ndarray  # predictions of the trained model on x


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory) -> TinyPreset:
    """A 7,469-parameter U-Net trained 2 steps on synthetic data, saved with save_preset."""
    import keras

    import emzoo
    from emzoo.hub.presets import save_preset

    keras.utils.set_random_seed(0)
    model = emzoo.build("unet", **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype("float32")
    before = model.predict(x, verbose=0)
    model.fit(x, (x > 0.5).astype("float32"), epochs=1, batch_size=2, verbose=0)
    y = model.predict(x, verbose=0)
    assert not np.allclose(before, y), "training did not change the weights; the round-trip test would prove nothing"
    path = save_preset(
        model, tmp_path_factory.mktemp("presets") / "unet-tiny", build_kwargs={"widths": TINY["widths"]},
        normalization={"method": "minmax", "min": 0, "max": 255}, training_data={"name": "synthetic-noise",
                                                                                 "sha256": "0" * 64},
        metrics={"foreground_f1": 0.5}, test_split="synthetic, 4 tiles", license="mit", seed=0,
        recipe={"optimizer": "adam", "lr": 1e-2, "steps": 2}, tta=["flip_x", "flip_y"], halo=(8, 8),
    )
    return TinyPreset(path, x, y)


@dataclass
class Hub:
    server: FakeHub
    repo_id: str
    commit: str
    manifest_dir: Path
    cache_dir: Path
    preset: TinyPreset


def preset_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """A clean hub environment: HF_HOME and the manifest folder in tmp_path, no mirror, online."""
    for var in ("EMZOO_WEIGHTS_DIR", "HF_HUB_OFFLINE", "EMZOO_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("EMZOO_MANIFEST_DIR", str(tmp_path / "manifest"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    (tmp_path / "manifest").mkdir()
    return tmp_path


@pytest.fixture
def hub(hub_env, monkeypatch, tiny_preset) -> Hub:
    """FakeHub serving the tiny preset as ``emzoo-test/unet-tiny``, listed in a temporary manifest as ``unet.tiny``."""
    from emzoo.hub.manifest import tag_record, update_manifest

    server = FakeHub().start()
    commit = server.add_repo(REPO_ID, preset_bytes(tiny_preset.path))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    record = tag_record(tiny_preset.path, repo_id=REPO_ID, revision=commit, default=True)
    update_manifest("unet", "tiny", record)
    yield Hub(server, REPO_ID, commit, hub_env / "manifest", hub_env / "hf_home" / "hub", tiny_preset)
    server.stop()
