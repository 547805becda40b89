"""A benchmark where nothing could be scored exits non-zero and names only the files it wrote."""

from __future__ import annotations

from typer.testing import CliRunner

from emzoo.cli.main import app


def test_benchmark_all_rows_failed_exits_1(tmp_path):
    out = tmp_path / "board"
    result = CliRunner().invoke(app, ["benchmark", "-m", str(tmp_path / "missing_preset"), "--out", str(out)])
    assert result.exit_code == 1
    assert "no model could be scored" in result.output
    assert not (out / "heatmap.png").exists() and not (out / "ballchart.png").exists()
    wrote = [line for line in result.output.splitlines() if line.startswith("wrote")]
    assert wrote and "heatmap.png" not in wrote[0] and "leaderboard.csv" in wrote[0]
