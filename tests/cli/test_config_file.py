"""``--config FILE`` on finetune, benchmark and predict, and the resolved configuration a successful run writes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from emzoo.cli import main as cli_main
from emzoo.cli.config import load_config, resolved_config, written_config_path
from emzoo.cli.main import app
from emzoo.io import read, write
from tests.cli.test_finetune_command import _folder
from tests.inference import toys


def _command(name):
    return typer.main.get_command(app).commands[name]


def _resolve(name, args):
    """The command's parameters after defaults, --config file and flags are merged (nothing is run)."""
    command = _command(name)
    return command.make_context(name, list(args)).params


def _dump(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def _main(monkeypatch, capsys, args):
    """Run the ``emzoo`` console script in-process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["emzoo", *args])
    with pytest.raises(SystemExit) as stop:
        cli_main.main()
    return stop.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    toys.tiny_unet().save(root / "tiny.keras")
    write(root / "in.tif", (np.random.default_rng(0).random((2, 40, 36)) * 255).astype(np.uint8))
    return root


def test_file_values_are_used_and_flags_override(tmp_path):
    run = _dump(tmp_path / "run.yaml", {"name": "unet2d_fb", "data": "d", "out": "o", "steps": 5, "batch-size": 2,
                                        "freeze_encoder": True, "no-augment": True})
    params = _resolve("finetune", ["--config", str(run), "--steps", "7", "--no-resume"])
    assert params["name"] == "unet2d_fb" and str(params["data"]) == "d" and str(params["out"]) == "o"
    assert params["steps"] == 7 and params["batch_size"] == 2  # the flag wins, the file beats the default
    assert params["freeze_encoder"] and params["no_augment"] and params["no_resume"]
    assert params["seed"] == 0 and params["lr"] is None  # untouched defaults
    # a second flag for a positional argument is not needed: the file fills it, a given one wins
    assert _resolve("finetune", ["other", "--config", str(run)])["name"] == "other"


def test_predict_and_benchmark_keys(tmp_path):
    run = _dump(tmp_path / "p.yaml", {"model": "m.keras", "input": "in.tif", "output": "o.tif",
                                      "tile": [16, 64, 64], "foreground": True, "progress": False})
    params = _resolve("predict", ["--config", str(run)])
    assert params["tile"] == "16,64,64" and params["foreground_only"] is True and params["progress"] is False
    bench = _dump(tmp_path / "b.json", {"model": ["a", "b"], "ensemble": "avg:a+b", "threshold": 0.3})
    params = _resolve("benchmark", ["--config", str(bench)])
    assert list(params["model"]) == ["a", "b"] and list(params["ensemble"]) == ["avg:a+b"]
    assert params["threshold"] == 0.3
    assert list(_resolve("benchmark", ["--config", str(bench), "-m", "c"])["model"]) == ["c"]


@pytest.mark.parametrize("text, expected", [
    ("steps: 3\nbogus: 1\n", "unknown key 'bogus' in "),
    ("steps: [\n", "is not valid YAML: expected the node content"),
    ("- steps\n", "must hold 'key: value' lines (a mapping), got a list"),
    ("steps: 3\nbatch-size: 2\nbatch_size: 4\n", "sets 'batch_size' a second time"),
])
def test_bad_config_files_are_one_line_usage_errors(tmp_path, monkeypatch, capsys, text, expected):
    (tmp_path / "run.yaml").write_text(text)
    code, err = _main(monkeypatch, capsys, ["finetune", "--config", str(tmp_path / "run.yaml")])
    assert code == 2 and err.count("\n") == 1 and expected in err
    if "bogus" in expected:
        assert "valid keys: batch_size, data, freeze_encoder," in err


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    code, err = _main(monkeypatch, capsys, ["predict", "--config", str(tmp_path / "nope.yaml")])
    assert code == 2 and err.count("\n") == 1 and "cannot read" in err and "nope.yaml" in err


def test_load_config_accepts_long_option_names_and_python_names(tmp_path):
    run = _dump(tmp_path / "r.yaml", {"val-fraction": 0.2, "lr": 0.01, "num_classes": 3})
    assert load_config(run, _command("finetune")) == {"val_fraction": 0.2, "lr": 0.01, "num_classes": 3}
    assert load_config(_dump(tmp_path / "e.yaml", None), _command("finetune")) == {}


def test_where_the_configuration_goes():
    assert written_config_path({"out": "runs/a"}, folder="out").as_posix() == "runs/a/config.yaml"
    assert written_config_path({"output": "p/mask.tif"}, beside="output").as_posix() == "p/mask.tif.config.yaml"
    assert written_config_path({"output": "o.zarr"}, beside="output").as_posix() == "o.zarr.config.yaml"
    assert written_config_path({"output": "o.h5:/a/b"}, beside="output").as_posix() == "o.h5.a.b.config.yaml"


def test_predict_writes_a_config_that_replays(files, tmp_path, monkeypatch):
    monkeypatch.chdir(files)  # relative paths in the file, made absolute in the written one
    out = tmp_path / "mask.tif"
    run = _dump(tmp_path / "run.yaml", {"model": "tiny.keras", "input": "in.tif", "output": str(out),
                                        "threshold": 0.5, "progress": False})
    result = CliRunner().invoke(app, ["predict", "--config", str(run), "--tile", "64"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "mask.tif.config.yaml"
    config = yaml.safe_load(written.read_text())
    assert config["model"] == str(files / "tiny.keras") and config["input"] == str(files / "in.tif")
    assert config["output"] == str(out) and config["tile"] == "64" and config["threshold"] == "0.5"
    assert config["overwrite"] is False and "config" not in config
    # re-resolving the written file gives the same configuration
    assert resolved_config(_command("predict").make_context("predict", ["--config", str(written)])) == config
    first = read(out).data
    out.unlink()
    monkeypatch.chdir(tmp_path)  # the replay does not depend on the folder it runs in
    again = CliRunner().invoke(app, ["predict", "--config", str(written)])
    assert again.exit_code == 0, again.output
    assert yaml.safe_load(written.read_text()) == config
    np.testing.assert_array_equal(read(out).data, first)


def test_benchmark_writes_every_option_and_replays(files, tmp_path):
    write(files / "labels.tif", (np.arange(2 * 40 * 36).reshape(2, 40, 36) % 7 == 0).astype(np.uint8))
    run = _dump(tmp_path / "run.yaml", {"model": [str(files / "tiny.keras")], "test-raw": str(files / "in.tif"),
                                        "test-labels": str(files / "labels.tif"), "tile": 32})
    out = tmp_path / "board"
    failed = CliRunner().invoke(app, ["benchmark", "--config", str(run), "--out", str(out)])  # tile < the halo
    assert failed.exit_code == 1 and "no model could be scored" in failed.output
    assert (out / "leaderboard.csv").is_file() and not (out / "config.yaml").exists()
    result = CliRunner().invoke(app, ["benchmark", "--config", str(run), "--out", str(out), "--tile", "64"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    command = _command("benchmark")
    # every option of the command, including ones added later, is written: the keys come from click's parameters
    assert list(config) == [p.opts[0].lstrip("-").replace("-", "_") if p.param_type_name == "option" else p.name
                            for p in command.params if p.name != "config"]
    assert config["out"] == str(out) and config["tile"] == 64 and config["data"] is None
    assert resolved_config(command.make_context("benchmark", ["--config", str(out / "config.yaml")])) == config


def test_no_config_when_the_run_fails(files, tmp_path):
    bad = CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(files / "missing.tif"),
                                   str(tmp_path / "x.tif"), "--no-progress"])
    assert bad.exit_code == 1 and not (tmp_path / "x.tif.config.yaml").exists()
    (tmp_path / "y.tif").write_bytes(b"")  # an existing output without --overwrite
    bad = CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(files / "in.tif"),
                                   str(tmp_path / "y.tif"), "--no-progress"])
    assert bad.exit_code == 1 and "already exists" in bad.output and not (tmp_path / "y.tif.config.yaml").exists()
    bad = CliRunner().invoke(app, ["finetune", "unet2d_fb", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                   "--kfold", "3", "--val-fraction", "0.2"])
    assert bad.exit_code == 2 and not (tmp_path / "o").exists()


def test_config_never_replaces_an_input(files, tmp_path):
    victim = tmp_path / "z.tif.config.yaml"
    victim.write_text("precious")
    result = CliRunner().invoke(app, ["predict", str(files / "tiny.keras"), str(victim), str(tmp_path / "z.tif")])
    assert result.exit_code == 2 and "destroy the input" in result.output
    assert victim.read_text() == "precious" and not (tmp_path / "z.tif").exists()


@pytest.mark.slow
def test_finetune_writes_a_config_that_replays(tmp_path):
    data = _folder(tmp_path / "data")
    out = tmp_path / "preset"
    run = _dump(tmp_path / "run.yaml", {"name": "unet2d_fb", "data": str(data), "out": str(out), "steps": 2,
                                        "batch-size": 2, "patch-size": 32, "val-fraction": 0.25, "quiet": True,
                                        "workers": 1})
    result = CliRunner().invoke(app, ["finetune", "--config", str(run), "--seed", "3"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["name"] == "unet2d_fb" and config["data"] == str(data) and config["out"] == str(out)
    assert config["steps"] == 2 and config["seed"] == 3 and config["patch_size"] == "32"
    assert config["lr"] is None and config["no_resume"] is False
    command = _command("finetune")
    assert resolved_config(command.make_context("finetune", ["--config", str(out / "config.yaml")])) == config
    before = (out / "config.yaml").read_text()
    refused = CliRunner().invoke(app, ["finetune", "--config", str(out / "config.yaml")])  # a finished preset
    assert refused.exit_code == 1 and (out / "config.yaml").read_text() == before
    again = CliRunner().invoke(app, ["finetune", "--config", str(out / "config.yaml"), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text()) == {**config, "out": str(tmp_path / "b")}
