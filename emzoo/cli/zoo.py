"""``emzoo train-zoo``: make one published preset from its zoo card (train, score, encode, record)."""

from __future__ import annotations

from pathlib import Path

import typer


def train_zoo_command(
    card: str = typer.Argument(None, help="Zoo card, entry.tag (e.g. emnet_v2_4x.cardiac_mito); --list shows them."),
    data: Path = typer.Option(None, "--data", "-d", help="The dataset folder the card names (shared/data/<name>)."),
    out: Path = typer.Option(None, "--out", "-o", help="Work folder: run/, snapshots/, preset/, manifest/, "
                                                      "report.json. Rerun the same command to resume."),
    bundle: bool = typer.Option(False, "--bundle", help="Copy the preset into the package and update the "
                                                        "packaged manifest."),
    train_only: bool = typer.Option(False, "--train-only", help="Stop after training (rerun to score)."),
    list_cards: bool = typer.Option(False, "--list", help="List the zoo cards and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train a zoo preset reproducibly from its declarative card, score it on its held-out test split with and
    without TTA, store it compactly and write its model card and manifest record."""
    from emzoo.zoo import get_card, train_zoo
    from emzoo.zoo import list_cards as names

    if list_cards:
        for name in names():
            c = get_card(name)
            typer.echo(f"{name:34s} {c.train.describe(c.dataset)} -> {c.test.describe(c.dataset)}, "
                       f"{c.finetune.get('steps')} steps, {c.storage}")
        return
    if card is None or data is None or out is None:
        raise typer.BadParameter("give CARD --data DIR --out DIR (or --list)", param_hint="CARD")
    report = train_zoo(card, data, out, bundle=bundle, train_only=train_only, progress=not quiet)
    if train_only:
        typer.echo(f"trained {report['train']['steps']} steps; rerun without --train-only to score and encode.")
        return
    for key, values in report["scores"].items():
        typer.echo(f"{key:16s} " + "  ".join(f"{k} {values[k]:.4f}" for k in ("f1", "jaccard", "vrand", "vinfo")))
    typer.echo(f"preset: {Path(out) / 'preset'}")
