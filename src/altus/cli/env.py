"""``altus env``: build, list, show and remove cached environments; render a Dockerfile.

Each command is a few lines over ``altus.envs``, imported inside the commands
so that loading this group stays cheap. Errors are not handled here: they
reach ``altus.cli.main``, which prints one line and exits 1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from altus.cli.options import Duration, json_option
from altus.cli.output import format_size, format_time, print_fields, print_json, print_table

if TYPE_CHECKING:
    from altus.envs import Environment

__all__ = ["env"]

F = TypeVar("F", bound=Callable[..., Any])


def _path_argument(command: F) -> F:
    return click.argument("path", default=".", type=click.Path(path_type=Path))(command)


def _with_option(command: F) -> F:
    return click.option(
        "--with",
        "packages",
        multiple=True,
        metavar="PKG",
        help="Also install this pip requirement (repeatable), e.g. --with jupyterlab.",
    )(command)


@click.group()
def env() -> None:
    """Build, list and remove cached environments made from Binder-style files.

    An environment is read from binder/, else .binder/, else the folder itself:
    requirements.txt, environment.yml (its pip: part), pyproject.toml,
    runtime.txt (python-3.X), apt.txt and postBuild. It is built with uv and
    cached by a hash of that spec, so the same spec is reused at once.

    \b
    altus env build .                   # or a requirements file, pyproject.toml
    altus env build . --with jupyterlab
    altus env list
    altus env rm --unused-for 30d
    altus env dockerfile . > Dockerfile
    """


@env.command("build")
@_path_argument
@_with_option
@click.option(
    "--allow-apt",
    is_flag=True,
    help="Install apt.txt packages with apt-get (as root, or with sudo); else they are listed.",
)
@click.option("--no-post-build", is_flag=True, help="Do not run postBuild.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show uv's output while building.")
@json_option
def build_env(
    path: Path,
    packages: tuple[str, ...],
    allow_apt: bool,
    no_post_build: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Build the environment of PATH, or reuse it if built before.

    PATH is a project folder (default: this one) or one file: a requirements
    file, pyproject.toml or environment.yml. Prints the environment's name and
    Python, and what was not handled (conda-only and apt packages).
    """
    from altus.envs import build, read_spec

    spec = read_spec(path).with_packages(*packages)
    started = time.time()
    built = build(spec, allow_apt=allow_apt, post_build=not no_post_build, quiet=quiet)
    reused = built.created < started
    if as_json:
        print_json({**built.to_dict(), "reused": reused, "seconds": time.time() - started})
        return
    state = "reused" if reused else f"built in {time.time() - started:.1f}s"
    fields = [
        ("environment", f"{built.name} ({state})"),
        ("python", f"{built.python} ({built.python_version})"),
        ("source", str(built.source)),
        *_not_handled(built),
    ]
    print_fields(fields)


@env.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List the cached environments, most recently used first."""
    from altus.envs import list_envs

    envs = list_envs()
    if as_json:
        print_json([item.to_dict() for item in envs])
    elif not envs:
        click.echo("no environments built yet (altus env build PATH builds one)", err=True)
    else:
        headers = ("NAME", "SOURCE", "PYTHON", "SIZE", "CREATED", "LAST USED")
        print_table(headers, [_list_row(item) for item in envs])


@env.command()
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Show one environment, with its packages.

    NAME may be the start of a name if only one environment has it.
    """
    from altus.envs import find_env

    found = find_env(name)
    packages = found.packages()
    if as_json:
        listed = [{"name": key, "version": value} for key, value in packages.items()]
        print_json({**found.to_dict(), "packages": listed})
        return
    print_fields(_show_fields(found))
    click.echo(f"\npackages ({len(packages)})")
    print_table(("PACKAGE", "VERSION"), list(packages.items()))


@env.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option(
    "--unused-for",
    type=Duration(),
    metavar="DURATION",
    help="Instead of NAMEs: every environment not used for this long (30d, 12h, 2w).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
def rm(names: tuple[str, ...], unused_for: timedelta | None, dry_run: bool, as_json: bool) -> None:
    """Remove environments by name, or those unused for a while.

    NAME may be the start of a name if only one environment has it.
    Environments are caches: the next build of the same spec makes them again.
    """
    from altus.envs import find_env, prune, remove

    if bool(names) == (unused_for is not None):
        raise click.UsageError("give NAMEs or --unused-for DURATION (one of the two)")
    if unused_for is not None:
        chosen = prune(unused_for, dry_run=dry_run)
    else:
        targets = [find_env(name) for name in names]  # all found before any is removed
        chosen = targets if dry_run else [remove(item.name) for item in targets]
    _report_removed(chosen, dry_run=dry_run, as_json=as_json)


@env.command()
@_path_argument
@_with_option
def dockerfile(path: Path, packages: tuple[str, ...]) -> None:
    """Print a Dockerfile for the environment of PATH.

    Build it with PATH as the context: altus env dockerfile . > Dockerfile;
    docker build .
    """
    from altus.envs import read_spec, render_dockerfile

    click.echo(render_dockerfile(read_spec(path).with_packages(*packages)), nl=False)


def _report_removed(chosen: Sequence[Environment], *, dry_run: bool, as_json: bool) -> None:
    sizes = {item.name: item.size_bytes for item in chosen} if dry_run else {}
    if as_json:
        rows = [{**_summary(item), "size_bytes": sizes.get(item.name)} for item in chosen]
        print_json({"dry_run": dry_run, "removed": rows})
        return
    verb = "would remove" if dry_run else "removed"
    for item in chosen:
        size = f", {format_size(sizes[item.name])}" if dry_run else ""
        last_used = format_time(item.last_used)
        click.echo(f"{verb} {item.name} ({item.source}, last used {last_used}{size})")
    if not chosen:
        click.echo("no environment to remove", err=True)


def _not_handled(found: Environment) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    if found.conda_only:
        listed = ", ".join(found.conda_only)
        fields.append(("not handled", f"conda-only packages (not installed): {listed}"))
    if found.apt_not_installed:
        listed = ", ".join(found.apt_not_installed)
        hint = "--allow-apt installs them, as root or with sudo"
        fields.append(("not installed (apt)", f"{listed} ({hint})"))
    fields += [("ignored", note) for note in found.ignored]
    return fields


def _show_fields(found: Environment) -> list[tuple[str, str]]:
    apt_installed = [name for name in found.apt_packages if name not in found.apt_not_installed]
    return [
        ("name", found.name),
        ("path", str(found.path)),
        ("python", f"{found.python} ({found.python_version})"),
        ("source", str(found.source)),
        ("files", ", ".join(found.files) or "-"),
        ("requirements", ", ".join(found.requirements) or "-"),
        ("apt installed", ", ".join(apt_installed) or "-"),
        ("digest", found.digest),
        ("size", format_size(found.size_bytes)),
        ("created", format_time(found.created)),
        ("last used", format_time(found.last_used)),
        *_not_handled(found),
    ]


def _list_row(item: Environment) -> tuple[object, ...]:
    return (
        item.name,
        item.source,
        item.python_version,
        format_size(item.size_bytes),
        format_time(item.created),
        format_time(item.last_used),
    )


def _summary(item: Environment) -> dict[str, Any]:
    keys = ("name", "path", "source", "python_version", "created", "last_used")
    data = dataclasses.asdict(item)
    return {key: str(data[key]) if isinstance(data[key], Path) else data[key] for key in keys}
