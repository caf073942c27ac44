"""``altus data serve``: a local S3 server (SeaweedFS) for development and tests.

A few lines over ``altus.storage.server``, imported inside the command so that
loading the ``data`` group stays cheap; that group adds it with
``data.add_command(serve)``. When starting, the ``export`` lines are the only thing
on stdout, so ``eval "$(altus data serve)"`` sets up a shell; the secret key is
printed there on purpose, and never by ``--status``. Errors are not handled here:
they reach ``altus.cli.main``, which prints one line.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from altus.cli.output import print_fields, print_json

if TYPE_CHECKING:
    from altus.storage.server import ServerInfo

__all__ = ["serve"]

EXIT_NOT_RUNNING = 3  # as `systemctl status` and LSB init scripts say "not running"


@click.command()
@click.option(
    "--status",
    "show_status",
    is_flag=True,
    help="Show the running server (never its secret key); exit status 3 if none runs.",
)
@click.option("--stop", is_flag=True, help="Stop the running server; its data stays.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="S3 port on 127.0.0.1 (default: a free one, new at each start).",
)
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder that holds the buckets (default: $XDG_DATA_HOME/altus/s3-server-data, "
    "i.e. ~/.local/share/altus/s3-server-data).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def serve(
    show_status: bool, stop: bool, port: int | None, data_dir: Path | None, as_json: bool
) -> None:
    """Start a local S3 server, or find the running one, and print how to use it.

    The server is SeaweedFS, listening on 127.0.0.1 only, with a generated
    access key and secret key that it enforces; other users of the machine reach
    nothing else of it (its internal ports want a certificate only you can
    read). It runs in the background until
    `altus data serve --stop`, and keeps its buckets across restarts. Its keys,
    record and log live in $XDG_STATE_HOME/altus/s3-server (mode 0700).

    \b
    eval "$(altus data serve)"     start it and point this shell's AWS tools at it
    altus data serve --json        the same as JSON, with the environment to set
    altus data serve --status      is one running, where, since when
    altus data serve --stop        stop it
    """
    if show_status and stop:
        raise click.UsageError("--status and --stop cannot be used together")
    if (show_status or stop) and (port is not None or data_dir is not None):
        raise click.UsageError("--port and --dir only apply when starting the server")
    if stop:
        _stop(as_json)
    elif show_status:
        _status(as_json)
    else:
        _start(port, data_dir, as_json)


def _start(port: int | None, data_dir: Path | None, as_json: bool) -> None:
    from altus.storage import server

    asked = time.time()
    info = server.start(data_dir=data_dir, port=port)
    started_now = info.started >= asked
    if as_json:
        environment = info.environment()
        print_json({**_public(info), "started_now": started_now, "environment": environment})
        return
    verb = "started" if started_now else "already running"
    click.echo(f"S3 server {verb} at {info.endpoint} (pid {info.pid})", err=True)
    click.echo(f"data in {info.data_dir}; stop it with `altus data serve --stop`", err=True)
    for name, value in info.environment().items():
        click.echo(f"export {name}={shlex.quote(value)}")


def _status(as_json: bool) -> None:
    from altus.storage import server

    info = server.status()
    if as_json:
        print_json({"running": False} if info is None else _public(info))
    elif info is None:
        click.echo("no S3 server is running")
    else:
        print_fields(_status_fields(info))
    if info is None:
        click.get_current_context().exit(EXIT_NOT_RUNNING)


def _stop(as_json: bool) -> None:
    from altus.storage import server

    stopped = server.stop()
    if as_json:
        print_json({"stopped": stopped})
    else:
        click.echo("stopped the S3 server" if stopped else "no S3 server was running")


def _public(info: ServerInfo) -> dict[str, object]:
    return {"running": True, **info.to_public_dict()}


def _status_fields(info: ServerInfo) -> list[tuple[str, str]]:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.started))
    return [
        ("endpoint", info.endpoint),
        ("access key", info.access_key),
        ("region", info.region),
        ("pid", str(info.pid)),
        ("data", info.data_dir),
        ("started", started),
    ]
