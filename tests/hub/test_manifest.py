"""The weights manifest: schema, file-name rules, default tags, suggestions, atomic updates."""

from __future__ import annotations

import copy
import json

import pytest

from emzoo.hub.manifest import (
    available_tags,
    check_filename,
    default_tag,
    file_record,
    find_release,
    load_manifest,
    manifest_dir,
    resolve_weights,
    update_manifest,
    validate_manifest,
)

SHA = "a" * 64
GOOD = {
    "entry": "unet",
    "tags": {
        "lucchi": {"repo_id": "emzoo/unet-lucchi", "revision": "1" * 40, "license": "mit",
                   "trained_on": {"name": "lucchi", "sha256": SHA},
                   "metrics": {"test_split": "lucchi test", "values": {"f1": 0.9}},
                   "files": {"config.json": {"sha256": SHA, "size": 10}, "model.weights.h5": {"sha256": SHA, "size": 5}}},
        "cardiac_mito": {"repo_id": "emzoo/unet-cardiac_mito", "revision": "2" * 40, "default": True,
                         "files": {"config.json": {"sha256": SHA, "size": 1},
                                   "model.weights.h5": {"sha256": SHA, "size": 2}}},
    },
}


def _write(folder, data, name="unet"):
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_packaged_schema_and_manifests_are_valid(monkeypatch):
    monkeypatch.delenv("EMZOO_MANIFEST_DIR", raising=False)
    folder = manifest_dir()
    assert (folder / "schema.json").is_file()
    for path in folder.glob("*.json"):
        if path.name != "schema.json":
            validate_manifest(json.loads(path.read_text()), source=str(path))
    validate_manifest(copy.deepcopy(GOOD))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["tags"]["lucchi"].update(revision="main"), r"revision: 'main' does not match"),
    (lambda d: d["tags"]["lucchi"].update(revision="1" * 39), r"revision: '1{39}' does not match"),
    (lambda d: d["tags"]["lucchi"]["files"].pop("model.weights.h5"), "no weights file"),
    (lambda d: d["tags"]["lucchi"].update(revision=None), "revision is null but the preset is not bundled"),
    (lambda d: d["tags"]["lucchi"].update(revision=None, bundled="../x"), "bundled: '../x' does not match"),
    (lambda d: d["tags"]["lucchi"]["files"]["config.json"].update(sha256="XYZ"), "sha256: 'XYZ' does not match"),
    (lambda d: d["tags"]["lucchi"]["files"]["config.json"].update(size=-1), "below the minimum"),
    (lambda d: d["tags"]["lucchi"].update(repo="x"), "unknown key 'repo'"),
    (lambda d: d["tags"].update(default=d["tags"].pop("lucchi")), "tag name 'default' is reserved"),
    (lambda d: d.update(tags={}), "at least 1 key"),
    (lambda d: d["tags"]["lucchi"]["metrics"].pop("test_split"), "missing required key 'test_split'"),
])
def test_schema_refuses_bad_manifests(mutate, message):
    data = copy.deepcopy(GOOD)
    mutate(data)
    with pytest.raises(ValueError, match=message):
        validate_manifest(data, source="unet.json")


@pytest.mark.parametrize(("name", "why"), [
    ("../evil.h5", "climbs out"), ("a/../../b", "climbs out"), ("/etc/passwd", "absolute"),
    ("C:/x.h5", "absolute"), ("sub\\model.weights.h5", "backslash"), ("", "empty"), ("a//b", "empty or '.'"),
])
def test_unsafe_file_names_are_refused(name, why):
    data = copy.deepcopy(GOOD)
    data["tags"]["lucchi"]["files"][name] = {"sha256": SHA, "size": 1}
    with pytest.raises(ValueError, match=f"file name .* is refused because .*{why}"):
        validate_manifest(data, source="unet.json")
    assert check_filename("weights/model.weights.h5") == "weights/model.weights.h5"


def test_default_tag_first_and_lookup(hub_env):
    folder = hub_env / "manifest"
    _write(folder, GOOD)
    assert default_tag("unet") == "cardiac_mito"
    assert available_tags("unet") == ["cardiac_mito", "lucchi"]
    assert resolve_weights("unet").tag == resolve_weights("unet", "default").tag == "cardiac_mito"
    spec = resolve_weights("unet", "lucchi")
    assert (spec.name, spec.revision, spec.files["config.json"].size) == ("unet.lucchi", "1" * 40, 10)
    assert spec.url == "https://huggingface.co/emzoo/unet-lucchi" and spec.license == "mit"
    assert find_release("emzoo/unet-cardiac_mito", "2" * 40).tag == "cardiac_mito"
    assert find_release("emzoo/unet-cardiac_mito", "3" * 40) is None
    unmarked = copy.deepcopy(GOOD)
    del unmarked["tags"]["cardiac_mito"]["default"]
    _write(folder, unmarked)
    assert default_tag("unet") == "lucchi"  # no tag marked: the first one
    assert available_tags("unet_bn") == []


def test_unknown_names_get_suggestions(hub_env):
    _write(hub_env / "manifest", GOOD)
    with pytest.raises(KeyError, match=r"no weights tag 'cardiac' for 'unet'\. Did you mean: cardiac_mito\?"):
        resolve_weights("unet", "cardiac")
    with pytest.raises(KeyError, match="unknown emzoo entry 'unet_nb'.*Did you mean: unet_bn"):
        resolve_weights("unet_nb")
    with pytest.raises(KeyError, match="'prelu_net' has no published weights"):
        resolve_weights("prelu_net")


def test_manifest_file_must_match_its_entry_and_parse(hub_env):
    _write(hub_env / "manifest", {**GOOD, "entry": "unet_bn"})
    with pytest.raises(ValueError, match="describes entry 'unet_bn', not 'unet'"):
        load_manifest("unet")
    (hub_env / "manifest" / "unet.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        available_tags("unet")


def test_update_manifest_is_validated_and_atomic(hub_env, tiny_preset):
    folder = hub_env / "manifest"
    record = {"repo_id": "emzoo/unet-x", "revision": None, "files": file_record(tiny_preset.path)}
    with pytest.raises(ValueError, match="not a 40-hex commit"):
        update_manifest("unet", "x", record)
    _write(folder, GOOD)
    update_manifest("unet", "x", {**record, "revision": "f" * 40, "default": True})
    data = json.loads((folder / "unet.json").read_text())
    assert list(data["tags"]) == ["lucchi", "cardiac_mito", "x"]
    assert [t for t, r in data["tags"].items() if r.get("default")] == ["x"]  # the old default was unmarked
    with pytest.raises(ValueError, match="climbs out"):
        update_manifest("unet", "y", {**record, "revision": "f" * 40, "files": {"../x": {"sha256": SHA, "size": 1}}})
    assert sorted(p.name for p in folder.iterdir()) == ["unet.json"]  # no temporary file left
    assert set(record["files"]) == {"README.md", "config.json", "emzoo.json", "model.weights.h5"}


def test_file_record_leaves_out_the_runs_own_files(tmp_path):
    """finetune's config.yaml (local absolute paths) and kept checkpoints/ are not part of the published preset."""
    (tmp_path / "emzoo.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("data: /home/me/private\n")
    (tmp_path / "checkpoints" / "step_1").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_1" / "variables.npz").write_bytes(b"x")
    (tmp_path / ".hidden").write_text("x")
    assert list(file_record(tmp_path)) == ["emzoo.json"]
