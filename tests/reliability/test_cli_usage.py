"""Every CLI error is one line on stderr with a non-zero exit code, usage errors included."""

from __future__ import annotations

import sys

import pytest

from emzoo.cli.main import main


@pytest.mark.parametrize(("argv", "code", "text"), [
    (["list", "--bogus"], 2, "No such option: --bogus"),
    (["info"], 2, "Missing argument"),
    (["info", "nope"], 1, "unknown emzoo entry 'nope'"),
    (["train-zoo", "emnet_v2_4x.cardiac"], 2, "give CARD --data DIR --out DIR"),
    (["train-zoo", "emnet_v2_4x.nope", "--data", ".", "--out", "x"], 1, "no zoo card"),
    (["finetune", "unet2d_fb", "--data", "/nonexistent", "--out", "x", "--lr", "-1"], 1, "does not exist"),
])
def test_cli_errors_are_one_line(argv, code, text, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["emzoo", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("emzoo")]
    assert len(err) == 1 and err[0].startswith("emzoo: error:") and text in err[0], err
    assert "Traceback" not in capsys.readouterr().err
