"""``emzoo benchmark`` and ``emzoo demo``: leaderboards on the user's data or on the packaged sample."""

from __future__ import annotations

from pathlib import Path

import typer


def _print_board(board, out: Path | None, sort: str, *, overlays: bool = False) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    from emzoo.benchmark import to_markdown

    Console(width=180).print(Markdown(to_markdown(board, sort=sort)))
    if out is not None:
        names = ("leaderboard.csv", "leaderboard.json", "leaderboard.md", "provenance.json", "heatmap.png",
                 "ballchart.png", "overlay.png")
        written = [n for n in names if (out / n).is_file()]  # never report a file that was not written
        typer.echo(f"wrote {', '.join(f'{out}/{n}' for n in written)}" if written else f"wrote nothing to {out}")
        if overlays:
            _print_overlays(out / "overlays")


def _print_overlays(folder: Path) -> None:
    """Say which overlay files this run wrote (the folder is replaced as a whole by each run that draws them)."""
    per_model = {d.name: len(list(d.glob("*.png"))) for d in sorted(folder.iterdir()) if d.is_dir()} \
        if folder.is_dir() else {}
    pictures = sum(per_model.values())
    if not pictures:
        typer.echo("wrote no overlays (no model was scored)")
        return
    counts = sorted(set(per_model.values()))
    each = f"{counts[0]} per model" if len(counts) == 1 else "per model: " + ", ".join(
        f"{k} {v}" for k, v in per_model.items())
    sheet = folder / "contact_sheet.png"
    typer.echo(f"wrote {pictures} overlays ({each}) in {folder}/<model>/<item>.png"
               + (f" and {sheet}" if sheet.is_file() else ""))


def _nothing_scored(board) -> bool:
    """True when no model row (reference predictions aside) was scored."""
    models = board[[p.get("weights") != "given prediction" for p in board["provenance"]]]
    return len(models) == 0 or bool((models["status"] != "ok").all())


def benchmark_command(
    data: Path = typer.Argument(None, help="Dataset folder with train/ and test/ (raw + labels); default: demo sample."),
    model: list[str] = typer.Option([], "--model", "-m", help="Entry, entry.tag or preset folder (repeatable)."),
    ensemble: list[str] = typer.Option([], "--ensemble", "-e", help="'avg:a+b', 'majority:a+b+c' or 'top3'."),
    finetune: int = typer.Option(None, "--finetune", help="Fine-tune each model this many steps on train/."),
    kfold: int = typer.Option(None, "--kfold", help="With --finetune: K-fold on train/, score the fold-mean."),
    out: Path = typer.Option(Path("benchmark_out"), "--out", "-o", help="Output folder."),
    sort: str = typer.Option("vrand", "--sort", help="Metric to sort by (and to rank top-k by)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Threshold of the confusion-matrix metrics."),
    tile: int = typer.Option(None, "--tile", help="Tile side for inference."),
    halo: int = typer.Option(None, "--halo", help="Halo for inference (default: the model's receptive margin)."),
    tta: str = typer.Option(None, "--tta", help="Test-time augmentation: flips, d4 or d4+z."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fine-tuning runs."),
    test_raw: Path = typer.Option(None, "--test-raw", help="Explicit test image (with --test-labels)."),
    test_labels: Path = typer.Option(None, "--test-labels", help="Explicit test labels."),
    train_raw: Path = typer.Option(None, "--train-raw", help="Explicit train image (with --train-labels)."),
    train_labels: Path = typer.Option(None, "--train-labels", help="Explicit train labels."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write overlays/<model>/<item>.png (raw, "
                                  "ground-truth outline, errors, scores) and overlays/contact_sheet.png."),
    instances: str = typer.Option("cc", "--instances", help="How objects are decoded for the instance columns "
                                  "(inst_f1 at IoU 0.5, inst_iou, are, vi_split/vi_merge): cc, distance_ws, "
                                  "boundary_ws, or none."),
    min_size: int = typer.Option(0, "--min-size", help="Drop predicted objects of fewer pixels before the instance "
                                 "columns are scored (a fixed choice; never tune it on the test data)."),
) -> None:
    """Score models and ensembles on a dataset; print the leaderboard and write tables and plots to --out."""
    from emzoo.benchmark import benchmark, load_dataset

    if not model and not ensemble:
        raise typer.BadParameter("give at least one --model or --ensemble", param_hint="--model")
    pairs = {}
    for split, raw, labels in (("test", test_raw, test_labels), ("train", train_raw, train_labels)):
        if (raw is None) != (labels is None):
            raise typer.BadParameter(f"--{split}-raw and --{split}-labels go together")
        if raw is not None:
            pairs[split] = (raw, labels)
    dataset = load_dataset(data, **pairs) if (data is not None or pairs) else load_dataset(None)
    board = benchmark(model, dataset, ensembles=ensemble, finetune=finetune, kfold=kfold, threshold=threshold,
                      tile=tile, halo=halo, tta=tta, sort=sort, seed=seed, out=out, overlays=overlays,
                      instances=None if instances.lower() == "none" else instances, instance_min_size=min_size)
    _print_board(board, out, sort, overlays=overlays)
    if _nothing_scored(board):
        typer.echo("emzoo: error: no model could be scored (see the errors above)", err=True)
        raise typer.Exit(1)


def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder."),
    steps: int = typer.Option(None, "--steps", help="Fine-tuning steps when no pretrained weights exist."),
) -> None:
    """Benchmark the zoo on the packaged cardiac-mitochondria sample (fine-tunes briefly if no weights exist)."""
    from emzoo.benchmark.demo import DEFAULT_STEPS, run_demo

    board = run_demo(out, steps=steps or DEFAULT_STEPS)
    _print_board(board, out, "vrand", overlays=True)
    if _nothing_scored(board):
        typer.echo("emzoo: error: no model could be scored (see the errors above)", err=True)
        raise typer.Exit(1)
