"""``emzoo list`` and ``emzoo info``."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

import emzoo
from emzoo.cli.main import app

runner = CliRunner()


def test_list_shows_every_entry_with_params_and_gflops():
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == set(emzoo.list_models())
    assert rows["emnet_v2_4x"]["params"] == 33_831_053
    assert rows["unet"]["gflops"] == 436.85
    table = runner.invoke(app, ["list"]).output
    assert "emnet_v2_4x" in table and "33,831,053" in table and "372.12" in table


def test_info_lists_all_facts():
    result = runner.invoke(app, ["info", "emnet_v2_4x"])
    assert result.exit_code == 0, result.output
    for text in ("33,831,053", "372.12 GFLOPs", "1x512x512x1", "doi:", "weights"):
        assert text in result.output


def test_unknown_entry_is_one_line_with_suggestion():
    proc = subprocess.run([sys.executable, "-m", "emzoo.cli.main", "info", "emnet_v2_4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("emzoo: error: unknown emzoo entry 'emnet_v2_4'") and "emnet_v2_4x" in last


def test_info_prints_bracketed_text_verbatim():
    """rich reads "[lowercase ...]" as markup and drops it: the ISBI card's reference note must be printed."""
    from typer.testing import CliRunner

    from emzoo.cli.main import app

    result = CliRunner().invoke(app, ["info", "emnet_v1_bn"])
    assert result.exit_code == 0
    assert "[no paper row on these slices" in result.output
