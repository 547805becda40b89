"""Entry point of the ``emzoo`` console script."""

from __future__ import annotations

import sys

import typer

from emzoo.cli import benchmark as benchmark_cmd
from emzoo.cli import finetune as finetune_cmd
from emzoo.cli import hub as hub_cmd
from emzoo.cli import models as models_cmd
from emzoo.cli import predict as predict_cmd
from emzoo.cli import zoo as zoo_cmd

app = typer.Typer(
    name="emzoo",
    help="A Keras 3 model zoo for segmenting electron-microscopy images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("list")(models_cmd.list_command)
app.command("info")(models_cmd.info_command)
app.command("predict")(predict_cmd.predict_command)
app.command("download")(hub_cmd.download_command)
app.command("publish")(hub_cmd.publish_command)
app.command("benchmark")(benchmark_cmd.benchmark_command)
app.command("demo")(benchmark_cmd.demo_command)
app.command("finetune")(finetune_cmd.finetune_command)
app.command("train-zoo")(zoo_cmd.train_zoo_command)


def main() -> None:
    """Run the CLI; library errors become one line on stderr and exit code 1 (2 for usage errors)."""
    try:
        app()
    except (ValueError, KeyError, FileNotFoundError, TypeError, RuntimeError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"emzoo: error: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
