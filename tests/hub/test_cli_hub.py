"""``emzoo download`` fills a mirror that loads offline; ``emzoo publish`` writes the manifest record (and pushes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
from typer.testing import CliRunner

from emzoo.cli.main import app
from emzoo.hub.manifest import file_record, resolve_weights
from tests.hub.conftest import REPO_ID


def _emzoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emzoo.cli.main", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


def test_download_into_a_mirror_then_load_offline(hub, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    run = _emzoo("download", "unet.tiny", "--to", str(mirror))
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("copied") == 4 and f"EMZOO_WEIGHTS_DIR={mirror}" in run.stdout
    assert sorted(p.name for p in (mirror / REPO_ID).iterdir()) == sorted(resolve_weights("unet", "tiny").files)
    rerun = _emzoo("download", "unet", "--to", str(mirror))  # bare entry = default tag; all verified and kept
    assert rerun.returncode == 0 and rerun.stdout.count("kept") == 4
    hub.server.stop()
    requests = hub.server.count()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "other_hf_home"))
    monkeypatch.setenv("EMZOO_WEIGHTS_DIR", str(mirror))
    import emzoo

    model = emzoo.load("unet.tiny")
    np.testing.assert_array_equal(model.predict(hub.preset.x, verbose=0), hub.preset.y)
    assert hub.server.count() == requests


def test_download_errors_are_one_line(hub, tmp_path):
    run = _emzoo("download", "unet.tinny", "--to", str(tmp_path / "m"))
    assert run.returncode == 1
    assert run.stderr.strip() == ("emzoo: error: no weights tag 'tinny' for 'unet'. Did you mean: tiny? "
                                  "Published tags: tiny (see `emzoo info unet`).")


def test_publish_prints_and_updates_the_manifest(hub_env, tiny_preset):
    runner = CliRunner()
    result = runner.invoke(app, ["publish", str(tiny_preset.path), "--repo-id", "emzoo/unet-lucchi"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["entry"] == "unet" and printed["tags"]["lucchi"]["revision"] is None
    assert printed["tags"]["lucchi"]["files"] == file_record(tiny_preset.path)
    assert printed["tags"]["lucchi"]["metrics"]["values"] == {"foreground_f1": 0.5}
    assert not (hub_env / "manifest" / "unet.json").exists()

    result = runner.invoke(app, ["publish", str(tiny_preset.path), "--repo-id", "emzoo/unet-lucchi", "--update"])
    assert result.exit_code == 1 and "not a 40-hex commit" in str(result.exception)
    result = runner.invoke(app, ["publish", str(tiny_preset.path), "--repo-id", "emzoo/unet-lucchi",
                                 "--revision", "c" * 40, "--update"])
    assert result.exit_code == 0, result.output
    spec = resolve_weights("unet")
    assert (spec.tag, spec.repo_id, spec.revision) == ("lucchi", "emzoo/unet-lucchi", "c" * 40)


def test_publish_push_pins_the_pushed_commit(hub_env, tiny_preset, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(repo_id))

    def upload_folder(self, *, folder_path, repo_id, **kw):
        calls.append((folder_path, repo_id, kw["ignore_patterns"]))
        return SimpleNamespace(oid="d" * 40)

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    result = CliRunner().invoke(app, ["publish", str(tiny_preset.path), "--repo-id", "org/whatever", "--tag",
                                      "synthetic", "--push", "--default", "--update"])
    assert result.exit_code == 0, result.output
    assert calls == ["org/whatever", (str(tiny_preset.path), "org/whatever", [".*", "config.yaml*", "checkpoints*"])]
    spec = resolve_weights("unet", "default")
    assert (spec.tag, spec.revision) == ("synthetic", "d" * 40)


def test_info_shows_each_tag_with_its_pinned_repo(hub):
    result = CliRunner().invoke(app, ["info", "unet"])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output
    assert f"{REPO_ID}@{hub.commit[:12]}" in result.output
