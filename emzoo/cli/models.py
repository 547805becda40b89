"""``emzoo list`` and ``emzoo info``: what the zoo holds."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _gflops_512(r) -> str:
    # Every 2D entry is fully convolutional, so MACs scale exactly with the pixel count.
    if r.dims != "2D":
        return "-"
    return f"{r.gflops_at((512, 512)):.2f}"


def list_command(
    pattern: str = typer.Argument(None, help="Shell-style filter, e.g. 'emnet*'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every entry: dims, params, GFLOPs (at the input shown), classes and paper."""
    from emzoo.registry import info, list_models

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
        table.add_row(r.name, r.dims, f"{r.params:,}", f"{r.gflops:.2f}", _shape(r.flops_input), _gflops_512(r),
                      str(r.num_classes), ", ".join(r.weights) or "-", r.paper)
    Console(width=160).print(table)


def info_command(
    name: str = typer.Argument(..., help="Entry name, e.g. emnet_v2_4x."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every fact of one entry: reference, input spec, params, FLOPs and the input they were counted at, weights."""
    from emzoo.hub.manifest import manifest_dir, resolve_weights
    from emzoo.registry import info

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
        ("classes", f"{r.num_classes} ({'sigmoid' if r.num_classes == 1 else 'softmax'})"),
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
        console.print(f"[bold]{key:>12}[/bold]  {value}")
    for tag in r.weights:
        spec = resolve_weights(r.name, tag)
        console.print(f"[bold]{r.name + '.' + tag:>12}[/bold]  {spec.repo_id}@{spec.revision[:12]}  "
                      f"trained on {json.dumps(spec.trained_on) if spec.trained_on else '?'}  "
                      f"metrics {json.dumps(spec.metrics) if spec.metrics else '-'}")
