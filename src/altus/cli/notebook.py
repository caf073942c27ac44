"""``altus notebook``: secure JupyterLab servers that survive the terminal and stop when idle.

A few lines per command over ``altus.notebook``, imported inside each command.
The token is never printed: ``open`` hands the browser a 0600 page that carries
it, and the token file's path is shown for the rare case of pasting it by hand.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import click

from altus.cli.options import Duration
from altus.cli.output import format_duration, print_json, print_table
from altus.errors import NotebookError

__all__ = ["notebook"]


@click.group()
def notebook() -> None:
    """Start, list and stop JupyterLab servers on this machine, secure by default.

    \b
    altus notebook start                 JupyterLab on ., loopback, token, stops after 60m idle
    altus notebook start data/ --env requirements.txt
    altus notebook start --public        every address, TLS, a password you type
    altus notebook list                  what runs: URL, kernels, idle time
    altus notebook open NAME             a browser, already logged in
    altus notebook stop NAME | --all     shut down, kernels included
    altus notebook tunnel HOST           the ssh -L command for a server on HOST
    """


@notebook.command()
@click.argument("path", default=".", type=click.Path(path_type=Path))
@click.option(
    "--env",
    "env",
    default=None,
    help="A requirements file, environment.yml, pyproject.toml or Binder folder for altus to "
    "build (jupyterlab added), or an existing virtual environment or python. "
    "Default: PATH's own Binder-style files, else the Python running altus.",
)
@click.option("--name", default=None, help="Name to refer to it by (default: PATH's folder name).")
@click.option(
    "--port",
    default=8888,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on; the next free one if it is taken.",
)
@click.option(
    "--idle-timeout",
    default="60m",
    show_default=True,
    type=Duration(),
    help="Cull kernels idle this long and stop the server once nothing ran or connected "
    "for as long (90s, 30m, 2h; 0 never).",
)
@click.option(
    "--public",
    is_flag=True,
    help="Listen on every address, with TLS and a password of 12+ characters, not a common "
    "one (asked for, or --password-stdin); failed logins are throttled per address.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--certfile", type=click.Path(path_type=Path), help="TLS certificate (PEM).")
@click.option("--keyfile", type=click.Path(path_type=Path), help="Its private key (PEM).")
@click.option("--json", "as_json", is_flag=True, help="Print the server's record as JSON.")
def start(
    path: Path,
    env: str | None,
    name: str | None,
    port: int,
    idle_timeout: timedelta,
    public: bool,
    password_stdin: bool,
    certfile: Path | None,
    keyfile: Path | None,
    as_json: bool,
) -> None:
    """Start JupyterLab on PATH in the background and print where it is.

    It binds 127.0.0.1 with a random 256-bit token unless --public, which binds
    every address and requires TLS (a self-signed certificate for this host
    unless --certfile/--keyfile) and a password, hashed with argon2: at least 12
    characters, not a common password, a run of keys or a repeat. Each failed
    login from an address waits longer (0.5 s, doubling to 8 s); 10 in 15 minutes
    lock that address out for 10 minutes. Secrets stay in 0600 files under
    $XDG_STATE_HOME/altus/notebooks (0700), never on a command line.
    The server outlives this terminal; `altus notebook stop` ends it.
    """
    from altus import notebook as notebooks

    seconds = idle_timeout.total_seconds()
    password = _password(public, password_stdin)
    started = notebooks.start(
        path,
        env=env,
        name=name,
        port=port,
        idle_timeout=seconds,
        public=public,
        password=password,
        certfile=certfile,
        keyfile=keyfile,
    )
    record = started.record
    for note in started.notes:
        click.echo(f"altus: {note}", err=True)
    if as_json:
        print_json(record.to_dict() | {"notes": started.notes})
        return
    idle = f"stops after {format_duration(seconds)} idle" if seconds else "no idle shutdown"
    click.echo(f"notebook server {record.name} is running at {record.url}")
    click.echo(f"  root {record.root}; environment {record.environment}; {idle}")
    login = "your password" if public else f"the token in {record.folder / 'token'}"
    click.echo(f"  log in with {login}, or run `altus notebook open {record.name}`")
    click.echo(f"  stop it with `altus notebook stop {record.name}`")


@notebook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_servers(as_json: bool) -> None:
    """Recorded servers: URL, root, environment, pid, uptime, kernels, idle time.

    Records of servers that died are removed; one that stopped itself for being
    idle is shown as such until `altus notebook stop NAME` clears it.
    """
    from altus import notebook as notebooks

    states = notebooks.servers()
    if as_json:
        print_json([state.to_dict() for state in states])
        return
    if not states:
        click.echo("no notebook servers")
        return
    headers = ("NAME", "STATE", "URL", "ROOT", "ENV", "PID", "UP", "KERNELS", "IDLE")
    rows = [
        (
            s.record.name,
            s.state,
            s.record.url,
            s.record.root,
            s.record.environment,
            s.record.pid if s.running else "-",
            format_duration(s.uptime),
            "-" if s.kernels is None else s.kernels,
            format_duration(s.idle_seconds),
        )
        for s in states
    ]
    print_table(headers, rows)


@notebook.command()
@click.argument("name", required=False)
@click.option("--all", "stop_every", is_flag=True, help="Stop every recorded server.")
def stop(name: str | None, stop_every: bool) -> None:
    """Shut a server down through its API (kernels first), then by signals if need be."""
    from altus import notebook as notebooks

    if stop_every == (name is not None):
        raise click.UsageError("give one NAME or --all")
    stopped = notebooks.stop_all() if stop_every else [notebooks.stop(str(name))]
    for record in stopped:
        click.echo(f"stopped notebook server {record.name}")
    if not stopped:
        click.echo("no notebook servers")


@notebook.command("open")
@click.argument("name")
@click.option("--print", "print_only", is_flag=True, help="Print the page's path; open nothing.")
def open_server(name: str, print_only: bool) -> None:
    """Open server NAME in a browser, logged in, without the token on any command line."""
    from altus import notebook as notebooks

    page = notebooks.open_page(name)
    if print_only:
        click.echo(page)
        return
    import webbrowser

    if not webbrowser.open(page.as_uri()):
        click.echo(f"no browser found here; open {page} in one", err=True)


@notebook.command()
@click.argument("name")
@click.option("-n", "--lines", default=40, show_default=True, help="How many last lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the server logs.")
def logs(name: str, lines: int, follow: bool) -> None:
    """Print the end of server NAME's log (JupyterLab's own output)."""
    from altus.notebook import records

    record = records.read_record(name)
    if record is None:
        raise NotebookError(f"no notebook server named {name}")
    with record.log.open(errors="replace") as stream:
        for line in stream.readlines()[-lines:]:
            click.echo(line, nl=False)
        while follow:
            line = stream.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.5)


@notebook.command()
@click.argument("host")
@click.option("--port", default=8888, show_default=True, help="The server's port on HOST.")
@click.option("--local-port", type=int, default=None, help="Port here (default: the same).")
@click.option("--run", is_flag=True, help="Run the tunnel now (until Ctrl-C).")
def tunnel(host: str, port: int, local_port: int | None, run: bool) -> None:
    """The `ssh -L` command that brings a server on HOST's loopback to this machine."""
    here = local_port or port
    command = ["ssh", "-N", "-L", f"{here}:127.0.0.1:{port}", host]
    click.echo(shlex.join(command))
    click.echo(f"then browse to http://127.0.0.1:{here}/lab", err=True)
    if run:
        try:
            code = subprocess.call(command)
        except FileNotFoundError:
            raise NotebookError("ssh is not installed on this machine") from None
        sys.exit(code)


def _password(public: bool, from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise NotebookError("--password-stdin read an empty password")
        return password
    if not public:
        return None
    if not sys.stdin.isatty():
        raise NotebookError(
            "--public needs a password: run it in a terminal or use --password-stdin"
        )
    return str(click.prompt("Password for the notebook server", hide_input=True,
                            confirmation_prompt=True))  # fmt: skip
