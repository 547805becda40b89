"""``emzoo download`` and ``emzoo publish``: fill a mirror folder for air-gapped machines; publish a preset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def download_command(
    names: list[str] = typer.Argument(..., help="Weights to fetch: entry (its default tag) or entry.tag."),
    to: Path = typer.Option(..., "--to", help="Mirror folder to fill (<DIR>/<repo_id>/<file>)."),
) -> None:
    """Fetch weights (sha256-checked) into a mirror folder; point EMZOO_WEIGHTS_DIR at it where there is no internet."""
    from emzoo.hub.download import download_to_mirror

    rows = download_to_mirror(list(names), to)
    for release, path, status in rows:
        typer.echo(f"{status:>6}  {release:<24} {path}  ({_size(path.stat().st_size)}, sha256 ok)")
    typer.echo(f"mirror ready: {len(rows)} files; on the offline machine: export EMZOO_WEIGHTS_DIR={to.resolve()}")


def publish_command(
    directory: Path = typer.Argument(..., help="Preset folder written by emzoo.save_preset()."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub repo, e.g. emzoo/emnet_v2_4x-cardiac_mito."),
    tag: str = typer.Option(None, "--tag", help="Weights tag; default: the part after '<entry>-' in the repo name."),
    revision: str = typer.Option(None, "--revision", help="40-hex commit of the pushed repo (not needed with --push)."),
    push: bool = typer.Option(False, "--push", help="Upload the folder with HfApi.upload_folder and pin its commit."),
    default: bool = typer.Option(False, "--default", help="Mark this tag as the entry's default weights."),
    update: bool = typer.Option(False, "--update", help="Write the record into the manifest (needs a revision)."),
    manifest_dir: Path = typer.Option(None, "--manifest-dir", help="Manifest folder (default: EMZOO_MANIFEST_DIR "
                                                                   "or weights_manifest/)."),
) -> None:
    """Print the manifest record of a preset (sha256 and size of every file); push it and update the manifest."""
    from emzoo.hub.manifest import RUN_FILES, tag_record, update_manifest

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json; it is not an emzoo preset (write one with "
                                "emzoo.save_preset()).")
    entry = json.loads(config_path.read_text())["entry"]
    if tag is None:
        match = re.fullmatch(rf"[^/]+/{re.escape(entry)}-([a-z0-9][a-z0-9_]*)", repo_id)
        if not match:
            raise ValueError(f"cannot read a tag from repo id {repo_id!r} (expected <org>/{entry}-<tag>); pass --tag.")
        tag = match.group(1)
    record = tag_record(directory, repo_id=repo_id, revision=revision, default=default)
    if push:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="model",
                                   commit_message=f"emzoo preset {entry}.{tag}",
                                   ignore_patterns=[".*", *(f"{n}*" for n in RUN_FILES)])
        if revision and revision != commit.oid:
            raise ValueError(f"--revision {revision} differs from the pushed commit {commit.oid}; drop --revision.")
        record["revision"] = commit.oid
        typer.echo(f"pushed {directory} to https://huggingface.co/{repo_id} at commit {commit.oid}", err=True)
    typer.echo(json.dumps({"entry": entry, "tags": {tag: record}}, indent=2))
    if update:
        path = update_manifest(entry, tag, record, folder=manifest_dir)
        typer.echo(f"updated {path} (tag {tag!r})", err=True)
    elif record["revision"] is None:
        typer.echo("revision unknown: push with --push, or pass --revision <commit>, then --update the manifest.",
                   err=True)
