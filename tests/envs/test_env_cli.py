"""``altus env`` end to end, in child processes, through the real entry point."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from altus.envs import cache, find_env
from envs.helpers import MakeProject

RunEnv = Callable[..., subprocess.CompletedProcess[str]]

ENTRY_POINT = """
import sys

from altus.cli.main import COMMAND_GROUPS, cli, main

if "env" not in COMMAND_GROUPS:  # until the group is registered in main.py
    from altus.cli.env import env

    cli.add_command(env)
main(sys.argv[1:])
"""


@pytest.fixture
def altus_env(tmp_path: Path) -> RunEnv:
    """Run ``altus env ARGS`` in a child process; returns the finished process."""
    script = tmp_path / "altus_entry.py"
    script.write_text(ENTRY_POINT)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), "env", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=dict(os.environ),
        )

    return run


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("altus: error: ")
    for fragment in fragments:
        assert fragment in line


@pytest.mark.slow
def test_build_list_show_rm_round_trip(make_project: MakeProject, altus_env: RunEnv) -> None:
    root = make_project(
        {
            "binder/environment.yml": "dependencies:\n  - r-base\n  - pip:\n    - six\n",
            "binder/apt.txt": "altus-test-no-such-apt-package\n",
        }
    )
    built = altus_env("build", str(root), "--with", "idna", "-q")
    assert built.returncode == 0, built.stderr
    name = read_name(built.stdout)
    assert f"{name} (built in " in built.stdout
    assert "conda-only packages (not installed): r-base" in built.stdout
    assert "not installed (apt)  altus-test-no-such-apt-package (--allow-apt" in built.stdout

    again = altus_env("build", str(root), "--with", "idna", "--json")
    data = json.loads(again.stdout)
    assert data["reused"] is True
    assert data["name"] == name
    assert data["conda_only"] == ["r-base"]
    assert data["apt_not_installed"] == ["altus-test-no-such-apt-package"]
    assert Path(data["python"]).is_file()
    assert again.stderr == ""  # a reused environment runs no tool

    listed = altus_env("list")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "SOURCE", "PYTHON", "SIZE", "CREATED", "LAST", "USED"]
    assert row.split()[:2] == [name, str(root.resolve() / "binder")]
    listed_json = json.loads(altus_env("list", "--json").stdout)
    assert [item["name"] for item in listed_json] == [name]
    assert listed_json[0]["size_bytes"] > 0

    shown = altus_env("show", name[:5])
    assert shown.returncode == 0, shown.stderr
    assert "six" in shown.stdout
    assert "not handled" in shown.stdout
    shown_json = json.loads(altus_env("show", name, "--json").stdout)
    assert {"six", "idna"} <= {package["name"] for package in shown_json["packages"]}
    assert shown_json["requirements"] == ["six", "idna"]

    removed = altus_env("rm", name)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"removed {name} (")
    assert json.loads(altus_env("list", "--json").stdout) == []
    assert_one_line_error(altus_env("show", name), f"no environment named '{name}'")


@pytest.mark.slow
def test_rm_unused_for_with_dry_run(make_project: MakeProject, altus_env: RunEnv) -> None:
    built = altus_env("build", str(make_project({"requirements.txt": "six\n"})), "-q")
    name = read_name(built.stdout)
    env = find_env(name)
    cache.save(dataclasses.replace(env, last_used=time.time() - 3 * 86400))

    assert altus_env("rm", "--unused-for", "4d").stderr.strip() == "no environment to remove"
    dry = altus_env("rm", "--unused-for", "2d", "--dry-run", "--json")
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert [item["name"] for item in report["removed"]] == [name]
    assert env.path.exists()
    done = altus_env("rm", "--unused-for", "2d")
    assert done.stdout.startswith(f"removed {name} (")
    assert not env.path.exists()


def test_rm_needs_names_or_a_duration(altus_env: RunEnv) -> None:
    for args in ((), ("abc", "--unused-for", "3d")):
        done = altus_env("rm", *args)
        assert done.returncode == 2
        assert "give NAMEs or --unused-for DURATION" in done.stderr
    done = altus_env("rm", "--unused-for", "soon")
    assert done.returncode == 2
    assert "'soon' is not a duration such as 90s, 30m, 2h or 30d" in done.stderr


def test_unresolvable_requirement_is_one_line_and_exit_1(
    make_project: MakeProject, altus_env: RunEnv
) -> None:
    root = make_project({"requirements.txt": "altus-no-such-package-xyz==1.0\n"})
    done = altus_env("build", str(root / "requirements.txt"), "-q")
    assert_one_line_error(done, "cannot install the requirements of", "altus-no-such-package-xyz")
    assert done.stderr.count("\n") == 1
    assert json.loads(altus_env("list", "--json").stdout) == []


def test_build_shows_uv_output_unless_quiet(make_project: MakeProject, altus_env: RunEnv) -> None:
    root = make_project({"runtime.txt": "python-3.99\n"})
    loud = altus_env("build", str(root))
    assert_one_line_error(loud, "Python 3.99", "not available on this machine")
    assert loud.stderr.count("\n") > 1  # uv's own words came first, on stderr


def test_no_environment_files(tmp_path: Path, altus_env: RunEnv) -> None:
    assert_one_line_error(altus_env("build", str(tmp_path)), "no environment files here")
    assert_one_line_error(altus_env("dockerfile", str(tmp_path / "nowhere")), "no such file")


def test_list_with_nothing_built(altus_env: RunEnv) -> None:
    done = altus_env("list")
    assert done.returncode == 0
    assert done.stdout == ""
    assert "no environments built yet" in done.stderr


def test_dockerfile(make_project: MakeProject, altus_env: RunEnv) -> None:
    root = make_project({"binder/requirements.txt": "six\n", "binder/apt.txt": "curl\n"})
    done = altus_env("dockerfile", str(root), "--with", "jupyterlab")
    assert done.returncode == 0, done.stderr
    assert "FROM python:" in done.stdout
    assert "RUN uv pip install --no-cache -r binder/requirements.txt jupyterlab" in done.stdout
    assert "      curl \\" in done.stdout


def read_name(stdout: str) -> str:
    first = stdout.splitlines()[0].split()
    assert first[0] == "environment", stdout
    return first[1]
