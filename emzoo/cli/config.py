"""``--config FILE`` for a command, and the resolved configuration every successful run writes beside its outputs.

A YAML (or JSON) file of ``key: value`` pairs fills click's ``default_map`` before the command line is read, so a
flag given on the command line always wins over the file, and the file over the command's defaults (the mechanism
of typer-config, whose callback is these few lines; emzoo adds what it lacks: unknown keys are refused, dashes are
accepted, and the resolved run is written back). Keys are the options' long names (``batch-size`` or
``batch_size``, ``foreground`` for ``--foreground``) and the positional arguments' names (``model``, ``input``).
The valid keys are read from the command's own click parameters, so an option added to a command is a valid key
without any change here.

After a successful run the command's resolved configuration (every option after defaults, file and flags; paths
absolute) is written atomically as YAML: ``OUT/config.yaml`` for a folder output, ``<output>.config.yaml`` beside a
file or store output. ``emzoo <command> --config that.yaml`` replays the run. Relative paths inside a hand-written
file are read from the current folder, as on the command line.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import typer

__all__ = ["use_config", "load_config", "resolved_config", "written_config_path", "CONFIG_NAME"]

#: Name of the resolved configuration inside a folder output (finetune's and benchmark's ``--out``).
CONFIG_NAME = "config.yaml"
_SUFFIX = ".config.yaml"


def _key(param: Any) -> str:
    """The key a parameter is written under: its first long option name (``batch_size``), else its name."""
    longs = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
    return (longs[0][2:] if longs and param.param_type_name == "option" else param.name).replace("-", "_")


def _params(command: Any) -> list[Any]:
    """The command's click parameters a configuration can set (``--config`` and ``--help`` aside)."""
    return [p for p in command.params if p.name not in ("config", "help") and getattr(p, "expose_value", True)]


def _aliases(command: Any) -> dict[str, Any]:
    """Every accepted key (underscored) -> its parameter: the written key, the Python name, each long option."""
    names: dict[str, Any] = {}
    for param in _params(command):
        longs = [o[2:] for o in param.opts if o.startswith("--")] if param.param_type_name == "option" else []
        for name in (_key(param), param.name, *longs):
            names.setdefault(name.replace("-", "_"), param)
    return names


def _as_default(param: Any, value: Any) -> Any:
    """A YAML value as click's ``default_map`` takes it for ``param``: a list for a repeatable option, and a list
    for a one-value option joined by commas (``tile: [16, 256, 256]`` means ``--tile 16,256,256``)."""
    if getattr(param, "multiple", False) or param.nargs != 1:
        return value if isinstance(value, list) else [value]
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


def load_config(path: str | os.PathLike[str], command: Any) -> dict[str, Any]:
    """Read a YAML/JSON configuration file into a ``default_map`` (parameter name -> value) for a click command.

    Parameters
    ----------
    path : path-like
        The file, as given to ``--config``.
    command : click.Command
        The command it configures; its parameters are the valid keys.

    Returns
    -------
    dict
        Parameter name -> value, for ``ctx.default_map``.

    Raises
    ------
    ValueError
        An unreadable file, invalid YAML, a top level that is not a mapping, an unknown key (the message lists
        the valid ones) or a key given twice (``batch-size`` and ``batch_size``).

    Examples
    --------
    >>> load_config("run.yaml", typer.main.get_command(app).commands["finetune"])  # doctest: +SKIP
    {'name': 'unet2d_fb', 'steps': 200}
    """
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}; give an existing YAML or JSON file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{path} is not valid YAML: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold 'key: value' lines (a mapping), got a {type(data).__name__}")
    aliases = _aliases(command)
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        param = aliases.get(str(key).replace("-", "_"))
        if param is None:
            valid = ", ".join(sorted(_key(p) for p in _params(command)))
            raise ValueError(f"unknown key {key!r} in {path}; valid keys: {valid}")
        if param.name in defaults:
            raise ValueError(f"key {key!r} in {path} sets {_key(param)!r} a second time; keep one of them")
        defaults[param.name] = _as_default(param, value)
    return defaults


def _config_callback(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Eager ``--config`` callback: the file's values become defaults, so the command line still wins."""
    if value is not None:
        try:
            values = load_config(value, ctx.command)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None
        ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def _existing_path(text: str) -> str | None:
    """``text`` made absolute when it names an existing file, folder or ``file.h5:/ds`` member's container, and is
    not a zoo entry name (an entry name wins over a same-named folder, as in :func:`emzoo.hub.load.resolve`)."""
    from emzoo.io.volume import split_uri
    from emzoo.registry import list_models, split_name_tag

    if not text or text.startswith("hf://") or split_name_tag(text)[0] in set(list_models()):
        return None
    file = split_uri(text)[0]
    if not os.path.exists(os.path.expanduser(file)):
        return None
    return os.path.abspath(os.path.expanduser(file)) + text[len(file):]


def _plain(value: Any) -> Any:
    """A parameter value as YAML writes it: paths absolute, tuples as lists, enums by value."""
    if isinstance(value, os.PathLike):
        return os.path.abspath(os.path.expanduser(os.fspath(value)))
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str):
        return _existing_path(value) or value
    return value


def resolved_config(ctx: Any) -> dict[str, Any]:
    """The resolved configuration of a parsed command: key -> value for every parameter, in the command's order.

    Parameters
    ----------
    ctx : click.Context
        The command's context after parsing (``ctx.params`` holds defaults, file values and flags merged).

    Returns
    -------
    dict
        Written key (``batch_size``, ``model``) -> plain value (paths absolute), ready for ``yaml.safe_dump``.

    Examples
    --------
    >>> command = typer.main.get_command(app).commands["predict"]  # doctest: +SKIP
    >>> resolved_config(command.make_context("predict", ["--config", "run.yaml"]))["tile"]  # doctest: +SKIP
    '256'
    """
    return {_key(p): _plain(ctx.params.get(p.name)) for p in _params(ctx.command)}


def written_config_path(params: dict[str, Any], *, folder: str | None = None, beside: str | None = None) -> Path:
    """Where a run's resolved configuration goes: ``params[folder]/config.yaml`` or ``<params[beside]>.config.yaml``.

    A member of a file or store (``out.h5:/pred``, ``vol.zarr/pred``) gets its own file beside the container
    (``out.h5.pred.config.yaml``), never one inside the output.

    Examples
    --------
    >>> written_config_path({"out": "runs/a"}, folder="out").as_posix()
    'runs/a/config.yaml'
    >>> written_config_path({"output": "pred.h5:/fg"}, beside="output").as_posix()
    'pred.h5.fg.config.yaml'
    """
    from emzoo.io.volume import split_uri

    if folder is not None:
        return Path(os.fspath(params[folder])) / CONFIG_NAME
    file, key = split_uri(os.fspath(params[beside]))
    base = Path(file)
    name = base.name + (f".{key.strip('/').replace('/', '.')}" if key else "")
    return base.with_name(name + _SUFFIX)


def _check_target(ctx: Any, target: Path, anchor: str) -> None:
    """Refuse a configuration path that is one of the run's inputs (any other existing path parameter) or lies
    inside one. An input folder holding the output itself is the command's own business (it checks its output)."""
    from emzoo.io.guard import check_output, container

    home = container(os.fspath(ctx.params[anchor]))[0]
    inputs = []
    for param in _params(ctx.command):
        if param.name == anchor:
            continue
        values = ctx.params.get(param.name)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            text = _plain(value) if isinstance(value, (str, os.PathLike)) else None
            if not (isinstance(text, str) and os.path.isabs(text)):
                continue
            holder = container(text)[0]
            if home != holder and not home.startswith(holder.rstrip(os.sep) + os.sep):
                inputs.append(text)
    try:
        check_output(target, inputs=inputs, overwrite=True, what="the run's configuration file")
    except ValueError as exc:
        param = next(p for p in _params(ctx.command) if p.name == anchor)
        raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None


def _write(ctx: Any, target: Path) -> None:
    """Write the resolved configuration to ``target`` in one rename (see :func:`emzoo.io.atomic.atomic_file`)."""
    import yaml

    from emzoo.io.atomic import atomic_file

    header = (f"# emzoo {ctx.info_name}: the resolved configuration of a successful run.\n"
              f"# Replay it with: emzoo {ctx.info_name} --config {os.path.abspath(target)}\n")
    with atomic_file(target) as tmp:
        tmp.write_text(header + yaml.safe_dump(resolved_config(ctx), sort_keys=False), encoding="utf-8")


def use_config(command: Callable[..., Any], *, folder: str | None = None,
               beside: str | None = None) -> Callable[..., Any]:
    """Give a typer command a ``--config FILE`` option and write its resolved configuration after a successful run.

    Parameters
    ----------
    command : callable
        The typer command function (left unchanged: a wrapper is returned).
    folder, beside : str
        Exactly one: the parameter naming an output folder (the configuration goes inside it as ``config.yaml``)
        or an output file or store (it goes beside it as ``<output>.config.yaml``).

    Returns
    -------
    callable
        The wrapped command, to register with ``app.command(name)``.

    Examples
    --------
    >>> app.command("finetune")(use_config(finetune_command, folder="out"))  # doctest: +SKIP
    """
    if (folder is None) == (beside is None):
        raise TypeError("use_config takes exactly one of folder= or beside=")
    signature = inspect.signature(command, eval_str=True)
    anchor = folder or beside
    if "config" in signature.parameters or anchor not in signature.parameters:
        raise TypeError(f"{command.__name__} already has a 'config' parameter or no {anchor!r} parameter")
    extra = [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                          default=typer.Option(None, "--config", is_eager=True, callback=_config_callback,
                                               dir_okay=False, help="YAML/JSON file of option values (keys as the "
                                               "long options or argument names); flags given here win. Every "
                                               "successful run writes its resolved config.yaml, which replays it.")),
        inspect.Parameter("_config_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    ]

    @functools.wraps(command)
    def run(*args: Any, config: Path | None = None, _config_ctx: typer.Context, **kwargs: Any) -> Any:
        target = written_config_path(_config_ctx.params, folder=folder, beside=beside)
        _check_target(_config_ctx, target, anchor)
        try:
            result = command(*args, **kwargs)
        except typer.Exit as exc:  # an explicit exit 0 is a success too
            if exc.exit_code == 0:
                _write(_config_ctx, target)
            raise
        _write(_config_ctx, target)
        return result

    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    return run
