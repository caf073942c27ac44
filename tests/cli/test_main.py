"""The ``altus`` entry point: version, help, lazy groups and the one-line error rule."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import altus
from altus.cli.main import COMMAND_GROUPS, cli

RunAltus = Callable[..., subprocess.CompletedProcess[str]]

FAILING_COMMAND = '''
"""``altus boom KIND``: the real entry point with one extra command that raises."""
import sys

import click

from altus.cli.main import cli, main
from altus.errors import StoreError

ERRORS = {
    "altus": lambda: StoreError("store 'x://' is broken\\nsecond line"),
    "missing": lambda: FileNotFoundError(2, "No such file or directory", "/no/such/file"),
    "denied": lambda: PermissionError(13, "Permission denied", "/root/secret"),
    "bug": lambda: KeyError("oops"),
    "interrupt": lambda: KeyboardInterrupt(),
}


@click.command()
@click.argument("kind")
def boom(kind):
    raise ERRORS[kind]()


if __name__ == "__main__":
    cli.add_command(boom)
    main(sys.argv[1:])
'''

IMPORTS_DURING_HELP = """
import json, sys
import altus
before = set(sys.modules)
from altus.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.fixture
def failing_script(tmp_path: Path) -> Path:
    path = tmp_path / "failing_altus.py"
    path.write_text(FAILING_COMMAND)
    return path


@pytest.fixture
def run_failing(failing_script: Path) -> RunAltus:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(failing_script), *args],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture
def cli_with_boom(failing_script: Path) -> Iterator[click.Group]:
    """The real group with ``boom`` added, for in-process runs with CliRunner."""
    cli.add_command(runpy.run_path(str(failing_script))["boom"])
    yield cli
    del cli.commands["boom"]


def test_version_prints_the_package_version(run_altus: RunAltus) -> None:
    done = run_altus("--version")
    assert done.returncode == 0
    assert done.stdout == f"altus {altus.__version__}\n"
    assert done.stderr == ""


def test_help_explains_commands_settings_and_debug(run_altus: RunAltus) -> None:
    done = run_altus("--help")
    assert done.returncode == 0
    for expected in ("Usage: altus", "--version", "--debug", "ALTUS_DEBUG", "altus.toml", "jobs"):
        assert expected in done.stdout
    assert COMMAND_GROUPS["jobs"].short_help in done.stdout


def test_help_imports_no_command_group() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_DURING_HELP],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported = json.loads(done.stdout.splitlines()[-1])
    assert not [name for name in imported if name.startswith(("altus.cli.jobs", "altus.batch"))]


def test_registered_commands_resolve_to_click_commands() -> None:
    context = click.Context(cli)
    for name in COMMAND_GROUPS:
        command = cli.get_command(context, name)
        assert isinstance(command, click.Group if name != "demo" else click.Command)


def test_jobs_help_lists_its_commands() -> None:
    result = CliRunner().invoke(cli, ["jobs", "--help"])
    assert result.exit_code == 0
    for command in ("list", "show", "logs", "cancel", "retry", "rm"):
        assert f"  {command} " in result.output


def test_unknown_command_is_a_usage_error(run_altus: RunAltus) -> None:
    done = run_altus("frobnicate")
    assert done.returncode == 2
    assert "No such command 'frobnicate'" in done.stderr


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("altus", "altus: error: store 'x://' is broken"),
        ("missing", "altus: error: /no/such/file: No such file or directory"),
        ("denied", "altus: error: /root/secret: Permission denied"),
        ("bug", "altus: internal error: KeyError: 'oops' (run with --debug for the traceback)"),
    ],
)
def test_an_error_is_one_line_and_exit_1(run_failing: RunAltus, kind: str, line: str) -> None:
    done = run_failing("boom", kind)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [line]
    assert done.stdout == ""


def test_interrupt_exits_130(run_failing: RunAltus) -> None:
    done = run_failing("boom", "interrupt")
    assert done.returncode == 130
    assert done.stderr.splitlines() == ["altus: interrupted"]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--debug", "boom", "altus"], {}),
        (["boom", "altus"], {"ALTUS_DEBUG": "1"}),
    ],
)
def test_debug_adds_the_traceback(
    run_failing: RunAltus, args: list[str], env: dict[str, str]
) -> None:
    done = run_failing(*args, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):")
    assert "altus.errors.StoreError: store 'x://' is broken\nsecond line" in done.stderr
    assert done.stderr.splitlines()[-1] == "altus: error: store 'x://' is broken"


def test_debug_internal_error_names_it_without_the_hint(run_failing: RunAltus) -> None:
    done = run_failing("--debug", "boom", "bug")
    assert done.returncode == 1
    assert "Traceback (most recent call last):" in done.stderr
    assert done.stderr.splitlines()[-1] == "altus: internal error: KeyError: 'oops'"


def test_errors_are_reported_in_process_too(cli_with_boom: click.Group) -> None:
    result = CliRunner().invoke(cli_with_boom, ["boom", "altus"])
    assert result.exit_code == 1
    assert result.stderr == "altus: error: store 'x://' is broken\n"


def test_unknown_job_id_is_one_line(run_altus: RunAltus, tmp_path: Path) -> None:
    done = run_altus("jobs", "show", "no-such-job", "--store", str(tmp_path / "store"))
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("altus: error: ")
    assert "no-such-job" in line


def test_bad_setting_is_one_line_naming_the_variable(run_altus: RunAltus) -> None:
    done = run_altus("jobs", "list", env={"ALTUS_BATCH__RETRIES": "many"})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "altus: error: ALTUS_BATCH__RETRIES: expected int, got str 'many'"
    ]
