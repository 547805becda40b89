"""``emzoo list`` and ``emzoo info``: what the zoo holds."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _gflops_512(r) -> str:
    # Every 2D entry is fully convolutional, so MACs scale exactly with the pixel count.
    if r.dims != "2D":
        return "-"
    return f"{r.gflops_at((512, 512)):.2f}"


def _headline(metrics: dict) -> str:
    values = (metrics or {}).get("values", {})
    for key, label in (("f1", "F1"), ("vrand", "VRand")):
        if key in values:
            return f"{label} {values[key]:.3f}"
    return ""


def _weights_cell(entry: str, tags: tuple[str, ...]) -> str:
    """``tag (F1 0.951)`` per published tag: its test score as recorded in the manifest."""
    from emzoo.hub.manifest import resolve_weights

    cells = []
    for tag in tags:
        score = _headline(resolve_weights(entry, tag).metrics)
        cells.append(f"{tag} ({score})" if score else tag)
    return ", ".join(cells) or "-"


def list_command(
    pattern: str = typer.Argument(None, help="Shell-style filter, e.g. 'emnet*'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every entry: dims, params, GFLOPs (at the input shown), classes and paper."""
    from emzoo.catalog import info
    from emzoo.registry import list_models

    rows = [info(name) for name in list_models(pattern)]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=1))
        return
    table = Table(title=f"emzoo: {len(rows)} entries", show_lines=False)
    for col, justify in [("entry", "left"), ("dims", "left"), ("params", "right"), ("GFLOPs", "right"),
                         ("at input", "left"), ("GFLOPs @512²", "right"), ("classes", "right"),
                         ("weights", "left"), ("paper", "left")]:
        table.add_column(col, justify=justify)
    for r in rows:
        cells = (r.name, r.dims, f"{r.params:,}", f"{r.gflops:.2f}", _shape(r.flops_input), _gflops_512(r),
                 str(r.num_classes), _weights_cell(r.name, r.weights), r.paper)
        table.add_row(*(escape(c) for c in cells))  # rich would read "[...]" in a cell as markup and drop it
    Console(width=160).print(table)


def info_command(
    name: str = typer.Argument(..., help="Entry name, e.g. emnet_v2_4x."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every fact of one entry: reference, input spec, params, FLOPs and the input they were counted at, weights."""
    from emzoo.blocks import output_activation
    from emzoo.catalog import info
    from emzoo.hub.manifest import manifest_dir, resolve_weights

    r = info(name)
    if as_json:
        typer.echo(json.dumps(r.to_dict(), indent=1))
        return
    lines = [
        ("entry", r.name),
        ("family", r.family),
        ("dims", r.dims),
        ("input shape", f"{_shape(r.input_shape)}  (channels last{', z first' if r.dims != '2D' else ''}; "
                        f"spatial sides divisible by {_shape(r.divisor) if r.divisor else 1})"),
        ("classes", f"{r.num_classes} ({output_activation(r.num_classes)})"),
        ("outputs", ", ".join(r.output_names) or "1"),
        ("params", f"{r.params:,}" + (f" ({r.trainable_params:,} trainable)" if r.trainable_params else "")),
        ("FLOPs", f"{r.gflops:.2f} GFLOPs (2 x MACs of conv/deconv/dense) at input {_shape(r.flops_input)}"),
        ("paper", r.paper),
        ("reference", r.reference),
        ("notes", r.notes or "-"),
        ("weights", ", ".join(r.weights) if r.weights else f"none published (see {manifest_dir()})"),
    ]
    console = Console(width=160)
    for key, value in lines:
        console.print(f"[bold]{key:>12}[/bold]  {escape(str(value))}")
    for tag in r.weights:
        spec = resolve_weights(r.name, tag)
        where = f"{spec.repo_id}@{spec.revision[:12]}" if spec.revision else f"{spec.repo_id} (not on the Hub yet)"
        if spec.bundled:
            where += f"; bundled with emzoo (emzoo/weights/{spec.bundled})"
        console.print(f"\n[bold]{r.name}.{tag}[/bold]  {escape(str(where))}")
        for key, value in _tag_card(r.name, tag, spec):
            console.print(f"[bold]{key:>16}[/bold]  {escape(str(value))}")


def _fmt_metrics(values: dict) -> str:
    keys = [k for k in ("f1", "jaccard", "vrand", "vinfo") if k in values]
    return ", ".join(f"{k} {values[k]:.4f}" for k in keys)


def _tag_card(entry: str, tag: str, spec) -> list[tuple[str, str]]:
    """The lines of one tag's card: data, split, metrics vs the paper, training time and command, licence."""
    from emzoo.hub.presets import read_preset_metadata

    try:
        meta = read_preset_metadata(f"{entry}.{tag}")
    except (FileNotFoundError, OSError, ValueError) as exc:  # not fetched yet: say what the manifest knows
        return [("trained on", json.dumps(spec.trained_on) or "?"), ("metrics", json.dumps(spec.metrics) or "-"),
                ("card", f"not available offline ({str(exc).splitlines()[0]})")]
    card = meta.get("zoo_card") or {}
    metrics = meta.get("metrics") or {}
    lines = [("description", meta.get("description") or "-")]
    if metrics:
        lines.append(("test split", metrics.get("test_split", "-")))
        lines.append(("metrics", _fmt_metrics(metrics.get("values", {})) + " (no TTA)"))
    for name, values in (meta.get("metrics_tta") or {}).items():
        lines.append((f"with TTA {name}", _fmt_metrics(values)))
    ref = meta.get("reference") or {}
    if ref:
        lines.append(("paper", (_fmt_metrics(ref) + "  " if _fmt_metrics(ref) else "") + f"[{ref.get('source', '')}]"))
    curve = meta.get("learning_curve") or {}
    if curve:
        lines.append(("learning curve", ", ".join(f"step {s}: F1 {p['f1']:.4f}" for s, p in
                                                  sorted(curve.items(), key=lambda kv: int(kv[0])))))
    training = meta.get("training") or {}
    if training:
        lines.append(("training", f"{training.get('steps')} steps, {training.get('train_s', 0) / 60:.1f} min on "
                                  f"{training.get('machine', '?')}, {training.get('policy')}"))
        lines.append(("reproduce", training.get("command", "-")))
    if card.get("finetune"):
        lines.append(("recipe", json.dumps(card["finetune"])))
    enc = meta.get("weights_encoding") or {}
    if enc:
        lines.append(("stored as", f"{enc.get('name')}: {enc.get('format')}"))
    lines.append(("licence", meta.get("license") or "-"))
    return lines
