"""``emzoo finetune``: train an entry on a dataset folder and write a preset folder (or K fold presets)."""

from __future__ import annotations

from pathlib import Path

import typer


def _patch(value: str | None) -> int | tuple[int, ...] | None:
    if value is None:
        return None
    parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"expected '256', '256,256' or '64,128,128', got {value!r}",
                                 param_hint="--patch-size") from None
    return sizes[0] if len(sizes) == 1 else sizes


def _fmt(metrics: dict[str, float] | None, key: str = "f1") -> str:
    return "-" if not metrics or key not in metrics else f"{metrics[key]:.4f}"


def finetune_command(
    name: str = typer.Argument(..., help="Entry (random weights), or entry.tag / preset folder to start from."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder: train/raw.* + train/labels.*; val/ "
                                                       "(optional) picks the best checkpoint; test/ is scored."),
    out: Path = typer.Option(..., "--out", "-o", help="Preset folder to write (checkpoints in OUT/checkpoints)."),
    steps: int = typer.Option(None, "--steps", "-n", help="Training steps (default: the recipe's)."),
    val_fraction: float = typer.Option(None, "--val-fraction", help="Hold out this fraction of train/ (last slab, "
                                                                  "1-slice gap) for validation. Default without "
                                                                  "val/: 0.1 for 2D entries; 0: no validation."),
    kfold: int = typer.Option(None, "--kfold", help="K-fold cross-validation on train/: OUT/fold0..fold{K-1}."),
    recipe: str = typer.Option(None, "--recipe", help="emzoo, emnet, cdeep3m, highres3d, net2d3d or "
                                                      "franco_barranco (default: emzoo for 2D entries, the "
                                                      "family's paper recipe for 3D ones)."),
    sampler: str = typer.Option(None, "--sampler", help="auto, uniform, foreground, cdeep3m or class_balanced "
                                                        "(default: the recipe's)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Patches per step."),
    patch_size: str = typer.Option(None, "--patch-size", "-p", help="'256' (2D), '64,128,128' (3D)."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, batches and augmentation."),
    lr: float = typer.Option(None, "--lr", help="Base learning rate (default: the recipe's)."),
    num_classes: int = typer.Option(None, "--num-classes", help="Output classes (a new head if they differ)."),
    freeze_encoder: bool = typer.Option(False, "--freeze-encoder", help="Train the decoder only."),
    loss: str = typer.Option(None, "--loss", help="bce, bce_dice, balanced_ce, jaccard, focal, dice, masked_dice, "
                                                  "weighted_ce."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Switch augmentation off."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over instead of resuming OUT/checkpoints."),
    workers: int = typer.Option(2, "--workers", help="Data-loader threads."),
    no_object_filter: bool = typer.Option(False, "--no-object-filter", help="Learn no object-length prior (by "
                                                                            "default predicted objects over 1.5 x "
                                                                            "the longest labelled one are removed)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fine-tune (or train from scratch) on a dataset folder; writes a preset `emzoo load`/`benchmark` accept."""
    if val_fraction is not None and kfold is not None:
        raise typer.BadParameter("--val-fraction and --kfold exclude each other", param_hint="--kfold")
    from emzoo.training import finetune
    from emzoo.training import kfold as run_kfold

    test = data if _labelled(data / "test") else None
    if (data / "test").is_dir() and test is None:
        typer.echo(f"{data / 'test'} has no labels: it is not scored.", err=True)
    val = data if _labelled(data / "val") and val_fraction is None else None
    common = dict(steps=steps, recipe=recipe, batch_size=batch_size, patch_size=_patch(patch_size),
                  learning_rate=lr, num_classes=num_classes, freeze_encoder=freeze_encoder, loss=loss,
                  augment=False if no_augment else None, sampler=sampler, resume=not no_resume, workers=workers,
                  progress=not quiet, object_filter=not no_object_filter)
    if kfold is not None:
        result = run_kfold(name, data, k=kfold, test=test, seed=seed, out_dir=out, **common)
        for i, metrics in enumerate(result.metrics):
            typer.echo(f"fold {i}: val F1 {_fmt(metrics)}  -> {out / f'fold{i}'}")
        typer.echo(f"mean val F1 {_fmt(result.mean_metrics)} over {kfold} folds, each of "
                   f"{result.folds[0]['fold_score_of']}; summary {out / 'kfold.json'}")
        if result.test_metrics:
            typer.echo(f"test F1 of the fold-mean ensemble: {_fmt(result.test_metrics['ensemble'])}")
        return
    _model, history = finetune(name, data, val, test=test, val_fraction=val_fraction, seed=seed, out_dir=out,
                               **common)
    rate = history["samples_per_s"]
    ran = history["steps"] - history["start_step"]
    resumed = f" (resumed at step {history['start_step']} of {history['steps']})" if history["start_step"] else ""
    typer.echo(f"trained {ran} steps{resumed} in {history['elapsed_s']:.0f} s"
               + (f" ({rate:.2f} samples/s)" if rate else ""))
    split = history.get("split") or {}
    if history["val_metrics"]:
        where = (f"the last {len(split['val'])} slice(s)/volume(s) of train/" if split.get("val") else "val/")
        typer.echo(f"validation F1 {_fmt(history['val_metrics'])} on {where} (best at step {history['best_step']})")
    elif split.get("reason"):
        typer.echo(f"no validation: {split['reason']}")
    prior = history.get("postprocess")
    if prior:
        typer.echo(f"object-length prior: predicted objects longer than {prior['remove_longer_than']:.0f} px are "
                   f"removed ({prior['margin']:g} x the longest of {prior['objects']} labelled objects, "
                   f"{prior['longest_training_object']:.0f} px); the scores below include it")
    fg = history.get("foreground") or {}
    if fg.get("label_fraction") is not None:
        typer.echo(f"foreground on {fg['on']}: predicted {100 * fg['predicted_fraction']:.2f} % of the pixels, "
                   f"labelled {100 * fg['label_fraction']:.2f} %")
    if history.get("test_metrics"):
        typer.echo(f"test F1 {_fmt(history['test_metrics'])}")
    if history.get("collapse"):
        typer.echo(f"error: {history['collapse']}", err=True)
        typer.echo(f"the preset in {history['out_dir']} is kept for inspection only (marked in its emzoo.json).",
                   err=True)
        raise typer.Exit(1)
    typer.echo(f"preset written to {history['out_dir']} (emzoo.load({str(out)!r}))")


def _labelled(split: Path) -> bool:
    """A split folder holding labels (``labels.*``): a test/ without them cannot be scored."""
    return split.is_dir() and any(split.glob("labels.*"))
