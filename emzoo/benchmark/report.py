"""Leaderboard outputs: CSV, JSON, Markdown, the EM-stellar-style heatmap and the cost/score ball chart."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emzoo.benchmark.instance_scores import INSTANCE_COLUMNS
from emzoo.io.atomic import atomic_file

__all__ = ["METRIC_COLUMNS", "write_outputs", "to_markdown", "plot_heatmap", "plot_ballchart"]

# Leaderboard columns, in the order of the EM-stellar table. Defined here, beside their titles, so the harness
# (which fills them) imports the report and not the other way round.
METRIC_COLUMNS = ("vrand", "vinfo", "f1", "jaccard", "accuracy", "sensitivity", "specificity", "ppv", "npv")

_TITLES = {"vrand": "VRand", "vinfo": "VInfo", "f1": "F1", "jaccard": "Jaccard", "accuracy": "Accuracy",
           "sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV",
           "inst_f1": "F1@0.5 (obj)", "inst_iou": "mIoU (obj)", "are": "ARE", "vi_split": "VI split",
           "vi_merge": "VI merge"}


def _atomic(path: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp)`` and rename ``tmp`` to ``path`` (:func:`emzoo.io.atomic.atomic_file`): no half-written
    file is ever visible."""
    with atomic_file(path) as tmp:
        write(str(tmp))


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def to_markdown(board: pd.DataFrame, *, sort: str = "vrand") -> str:
    """The leaderboard as a Markdown table (metrics to 4 decimals, best first)."""
    # instance columns (emzoo.benchmark.instance_scores) when the board has them: object F1 / IoU, ARE, VI
    shown = [*METRIC_COLUMNS, *[c for c in INSTANCE_COLUMNS if c in board.columns]]
    cols = ["model", *shown, "gflops", "params", "status"]
    head = ["#", "model", *[_TITLES[c] for c in shown], "GFLOPs", "params", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] + ["---"] + ["---:"] * (len(head) - 3) + ["---"]) + "|"]
    for rank, (_, row) in enumerate(board[cols].iterrows(), start=1):
        cells = [str(rank), row["model"]]
        cells += [_fmt(row[c]) for c in shown]
        cells += [_fmt(row["gflops"], 2), f"{int(row['params']):,}" if row["params"] else "-"]
        cells.append(row["status"])
        lines.append("| " + " | ".join(cells) + " |")
    failed = board[board["status"] != "ok"]
    for _, row in failed.iterrows():
        lines.append(f"\n- **{row['model']}** failed: {row['error']}")
    lines.append(f"\nSorted by {_TITLES.get(sort, sort)} (descending).")
    return "\n".join(lines) + "\n"


def plot_heatmap(board: pd.DataFrame, path: Path) -> None:
    """EM-stellar-style heatmap: rows are models, columns metrics, colours min-max normalised per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = board[board["status"] == "ok"]
    values = ok[list(METRIC_COLUMNS)].to_numpy(dtype=float)
    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    normed = np.where(hi > lo, (values - lo) / span, 1.0)
    fig, ax = plt.subplots(figsize=(1.1 * len(METRIC_COLUMNS) + 3, 0.45 * len(ok) + 1.6))
    image = ax.imshow(normed, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(METRIC_COLUMNS)), [_TITLES[c] for c in METRIC_COLUMNS], rotation=30, ha="right")
    ax.set_yticks(range(len(ok)), list(ok["model"]))
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=7,
                    color="black" if normed[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="min-max normalised per metric")
    ax.set_title("Leaderboard (raw values shown; colour normalised per column)")
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def plot_ballchart(board: pd.DataFrame, path: Path, *, sort: str = "vrand") -> None:
    """Cost vs score: x = GFLOPs at the reference input, y = the sort metric, ball area proportional to params."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = board[(board["status"] == "ok") & board["gflops"].notna()]
    fig, ax = plt.subplots(figsize=(7, 5))
    if len(ok):
        params = ok["params"].to_numpy(dtype=float)
        sizes = 2000 * params / max(params.max(), 1.0) + 30
        ax.scatter(ok["gflops"], ok[sort], s=sizes, alpha=0.5, edgecolors="k")
        for _, row in ok.iterrows():
            ax.annotate(row["model"], (row["gflops"], row[sort]), fontsize=8, ha="center", va="bottom",
                        xytext=(0, 6), textcoords="offset points")
        ax.margins(0.2)
    inputs = sorted({str(v) for v in ok.get("flops_input", []) if v})
    ax.set_xlabel(f"GFLOPs (2 x MACs) at input {', '.join(inputs) or 'n/a'}")
    ax.set_ylabel(_TITLES.get(sort, sort))
    ax.set_title("Score vs cost (ball area = parameters)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_outputs(board: pd.DataFrame, out: Path, *, sort: str = "vrand") -> list[Path]:
    """Write ``leaderboard.csv/.json/.md``, ``provenance.json``, ``heatmap.png`` and ``ballchart.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = board.drop(columns=["provenance"])
    records = [_jsonable(r) for r in board.to_dict(orient="records")]
    paths = {
        "csv": out / "leaderboard.csv",
        "json": out / "leaderboard.json",
        "md": out / "leaderboard.md",
        "provenance": out / "provenance.json",
        "heatmap": out / "heatmap.png",
        "ballchart": out / "ballchart.png",
    }
    _atomic(paths["csv"], lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    _atomic(paths["json"], lambda tmp: Path(tmp).write_text(
        json.dumps([{k: v for k, v in r.items() if k != "provenance"} for r in records], indent=1) + "\n"))
    _atomic(paths["md"], lambda tmp: Path(tmp).write_text(to_markdown(board, sort=sort)))
    _atomic(paths["provenance"], lambda tmp: Path(tmp).write_text(
        json.dumps({r["model"]: r["provenance"] for r in records}, indent=1) + "\n"))
    if (board["status"] == "ok").any():
        plot_heatmap(board, paths["heatmap"])
        plot_ballchart(board, paths["ballchart"], sort=sort)
    else:
        paths.pop("heatmap")
        paths.pop("ballchart")
    return list(paths.values())
