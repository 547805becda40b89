"""Entry point of the ``emzoo`` console script."""

from __future__ import annotations

import sys

import typer

from emzoo.cli import benchmark as benchmark_cmd
from emzoo.cli import export as export_cmd
from emzoo.cli import finetune as finetune_cmd
from emzoo.cli import hub as hub_cmd
from emzoo.cli import models as models_cmd
from emzoo.cli import predict as predict_cmd
from emzoo.cli import zoo as zoo_cmd
from emzoo.cli.config import use_config

app = typer.Typer(
    name="emzoo",
    help="A Keras 3 model zoo for segmenting electron-microscopy images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("list")(models_cmd.list_command)
app.command("info")(models_cmd.info_command)
app.command("predict")(use_config(predict_cmd.predict_command, beside="output"))
app.command("download")(hub_cmd.download_command)
app.command("publish")(hub_cmd.publish_command)
app.command("benchmark")(use_config(benchmark_cmd.benchmark_command, folder="out"))
app.command("demo")(benchmark_cmd.demo_command)
app.command("finetune")(use_config(finetune_cmd.finetune_command, folder="out"))
app.command("train-zoo")(zoo_cmd.train_zoo_command)
app.command("export")(export_cmd.export_command)


def main() -> None:
    """Run the CLI; every error is one line on stderr: exit code 2 for usage errors, 1 for the rest."""
    from typer.exceptions import TyperException

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        print("emzoo: aborted", file=sys.stderr)
        sys.exit(130)
    except TyperException as exc:  # typer's own click: usage errors (exit 2) and other CLI errors
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        print(f"emzoo: error: {message}{where}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except (ValueError, KeyError, FileNotFoundError, TypeError, RuntimeError, OSError, ArithmeticError,
            MemoryError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        if isinstance(exc, MemoryError):
            message = f"out of memory ({message or 'the input is too large to hold in RAM'}); use a smaller --tile"
        print(f"emzoo: error: {' '.join(str(message).split())}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
