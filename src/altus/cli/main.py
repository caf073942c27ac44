"""The ``altus`` entry point: the top-level group and the one place errors are reported.

Command groups (and ``demo``, a single command) are listed in ``COMMAND_GROUPS``
and imported only when one is run, so ``altus --help`` and ``altus --version`` stay fast and never load the
batch core. Every error a command raises ends up in ``AltusGroup.invoke``,
which prints one line (``altus: error: ...``) and exits 1; ``--debug`` or
``ALTUS_DEBUG=1`` adds the traceback. Warnings print one line too
(``altus: warning: ...``). Every line passes through ``redact`` on its way out,
a last guard that no URL's ``user:password@`` reaches the terminal or a log.
"""

from __future__ import annotations

import importlib
import os
import traceback
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import click

from altus.errors import AltusError

__all__ = ["COMMAND_GROUPS", "AltusGroup", "cli", "main"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
_TRUTHY = frozenset({"1", "true", "yes", "on"})


class LazyGroup(NamedTuple):
    """A command group named by where it lives, so it is imported only when run."""

    target: str  # "package.module:attribute"
    short_help: str


COMMAND_GROUPS: Mapping[str, LazyGroup] = {
    "data": LazyGroup("altus.cli.data:data", "Copy, sync, list and serve data in S3, fast."),
    "demo": LazyGroup(
        "altus.cli.demo:demo", "Diffusion MRI at scale, end to end: the main job in one command."
    ),
    "env": LazyGroup(
        "altus.cli.env:env", "Build, list and remove cached environments (Binder-style files, uv)."
    ),
    "jobs": LazyGroup("altus.cli.jobs:jobs", "List, inspect, cancel, retry and remove batch jobs."),
    "notebook": LazyGroup(
        "altus.cli.notebook:notebook", "Secure JupyterLab servers that stop when idle."
    ),
}


class AltusGroup(click.Group):
    """The top-level group: finds command groups lazily and reports every error once."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMAND_GROUPS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMAND_GROUPS:
            return _import_command(COMMAND_GROUPS[cmd_name].target)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """An unknown command is a usage error that names the closest one (``job`` → ``jobs``)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            import difflib

            known = self.list_commands(ctx)
            close = difflib.get_close_matches(args[0], known, n=1) if args else []
            if not close or args[0] in known:
                raise
            raise click.UsageError(
                f"No such command {args[0]!r}. Did you mean {close[0]!r}?", ctx
            ) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the registry, without importing any of them."""
        rows = [(name, self._short_help(ctx, name)) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or _env_flag("ALTUS_DEBUG")
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # click reports these itself
        except KeyboardInterrupt as exc:
            _report(exc, "altus: interrupted", debug)
            ctx.exit(EXIT_INTERRUPTED)
        except (AltusError, FileNotFoundError, PermissionError) as exc:
            _report(exc, f"altus: error: {_describe(exc)}", debug)
            ctx.exit(EXIT_ERROR)
        except Exception as exc:  # the one place that turns any failure into a line
            line = f"altus: internal error: {type(exc).__name__}: {_describe(exc)}"
            _report(exc, line if debug else f"{line} (run with --debug for the traceback)", debug)
            ctx.exit(EXIT_ERROR)

    def _short_help(self, ctx: click.Context, name: str) -> str:
        if name in COMMAND_GROUPS:
            return COMMAND_GROUPS[name].short_help
        command = super().get_command(ctx, name)
        return command.get_short_help_str() if command is not None else ""


def _import_command(target: str) -> click.Command:
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def _describe(exc: BaseException) -> str:
    """The first line of an error's message; OS errors as ``path: reason``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _report(exc: BaseException, line: str, debug: bool) -> None:
    if debug:
        click.echo(_redact("".join(traceback.format_exception(exc)).rstrip()), err=True)
    click.echo(_redact(line), err=True)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A warning as one line on stderr, like an error, not Python's two-line form."""
    text = str(message).strip().splitlines()
    click.echo(_redact(f"altus: warning: {text[0] if text else category.__name__}"), err=True)


def _redact(text: str) -> str:
    from altus.storage.store import redact  # only on the way out: --help stays light

    return redact(text)


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from altus import __version__

    click.echo(f"altus {__version__}")
    ctx.exit()


@click.group(cls=AltusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Print the altus version and exit.",
)
@click.option(
    "--debug",
    is_flag=True,
    help="On an error, print the full traceback as well (same as ALTUS_DEBUG=1).",
)
def cli(debug: bool) -> None:
    """altus: research computing without the operations work.

    Run an existing Python function over many inputs on this machine or a
    cluster, with every result, error and log kept in a durable job record;
    then list, inspect, retry and clean up those jobs from here.

    \b
    Settings, strongest first:
      ALTUS_<SECTION>__<KEY> environment variables (e.g. ALTUS_BATCH__STORE),
      ./altus.toml (or the nearest parent folder's),
      ~/.config/altus/config.toml.

    Errors print one line; add --debug (or set ALTUS_DEBUG=1) to see the
    traceback. Run `altus COMMAND --help` for the details of a command.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """The ``altus`` script; exits with the command's status."""
    cli.main(args=None if argv is None else list(argv), prog_name="altus")


if __name__ == "__main__":
    main()
