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
    assert "Did you mean" not in done.stderr


def test_a_typo_in_a_command_names_the_closest_one(run_altus: RunAltus) -> None:
    done = run_altus("job", "list")
    assert done.returncode == 2
    assert "No such command 'job'. Did you mean 'jobs'?" in done.stderr


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


# -- bad values: one clear line each, and no secret in any output -------------------------------

SECRET = "s3cr3t-pa55"


def assert_one_error_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"altus: error: {expected}"]
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "1e30"])
def test_a_timeout_no_task_can_use_is_one_line(run_altus: RunAltus, value: str) -> None:
    done = run_altus("jobs", "list", env={"ALTUS_BATCH__TIMEOUT": value})
    assert_one_error_line(
        done,
        "ALTUS_BATCH__TIMEOUT: must be more than 0 and at most 31536000 seconds (a year);"
        f" leave it unset for no timeout, got {float(value)!r}",
    )


def test_local_workers_far_above_the_cpus_is_one_warning_line(run_altus: RunAltus) -> None:
    cpus = len(os.sched_getaffinity(0))
    done = run_altus("jobs", "list", env={"ALTUS_BATCH__WORKERS": str(150 * cpus)})
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        f"altus: warning: batch.workers = {150 * cpus} starts that many processes on {cpus}"
        " CPU(s); more than 4 per CPU only adds memory and switching",
        "no jobs in this store",
    ]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: path.mkdir(parents=True), "it is a folder"),
        (
            lambda path: path.symlink_to("gone.toml"),
            "it is a link to gone.toml, which does not exist",
        ),
        (lambda path: path.symlink_to(path.name), "too many levels of symbolic links"),
    ],
    ids=["folder", "dangling", "loop"],
)
def test_a_user_config_that_is_not_a_file_is_one_line(
    run_altus: RunAltus, clean_environ: Path, make: Callable[[Path], None], reason: str
) -> None:
    path = clean_environ / "config" / "altus" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)
    assert_one_error_line(run_altus("jobs", "list"), f"{path}: cannot read settings file: {reason}")


def test_a_store_that_is_a_file_is_one_line(run_altus: RunAltus, tmp_path: Path) -> None:
    plain = tmp_path / "not-a-folder"
    plain.write_text("x")
    done = run_altus("jobs", "list", "--store", str(plain))
    assert_one_error_line(done, f"store file://{plain}: {plain} is not a folder")


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_an_s3_store_url_with_credentials_never_shows_them(
    run_altus: RunAltus, debug: list[str]
) -> None:
    done = run_altus(*debug, "jobs", "list", "--store", f"s3://ada:{SECRET}@bucket/jobs")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "altus: error: store 's3://bucket/jobs': an s3:// URL holds no credentials;"
        " use AWS_PROFILE or the AWS_* variables"
    )
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_an_endpoint_with_credentials_is_never_echoed(
    run_altus: RunAltus, s3_env: dict[str, str], debug: list[str]
) -> None:
    """Both ways an endpoint fails: nothing listening, and a server that answers an error."""
    scheme, _, rest = s3_env["AWS_ENDPOINT_URL"].partition("://")
    answering = f"{scheme}://ada:{SECRET}@{rest}"
    closed = f"http://ada:{SECRET}@127.0.0.1:9"
    for endpoint in (answering, closed):
        done = run_altus(
            *debug, "data", "ls", "s3://altus-no-such-bucket/x", env={"AWS_ENDPOINT_URL": endpoint}
        )
        assert done.returncode == 1
        assert done.stderr.splitlines()[-1].startswith("altus: error: ")
        assert "internal error" not in done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert "ada:" not in done.stdout + done.stderr
