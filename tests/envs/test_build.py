"""Building with real uv, real venvs and real installs from PyPI (small packages only)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from altus.envs import (
    Environment,
    build,
    builder,
    cache,
    find_env,
    list_envs,
    prune,
    read_spec,
    remove,
)
from altus.errors import EnvError
from envs.helpers import PROJECT_TOML, MakeProject

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"

BUILD_SCRIPT = """
import sys
from altus.envs import build, read_spec
env = build(read_spec(sys.argv[1]))
print(env.path, flush=True)
"""


@pytest.fixture
def envs_root(clean_environ: Path) -> Path:
    """Where this test's environments go: under its own XDG cache home."""
    return clean_environ / "cache" / "altus" / "envs"


def run_python(env: Environment, code: str) -> str:
    done = subprocess.run(
        [str(env.python), "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


@pytest.mark.slow
def test_build_installs_the_requirements_into_a_venv(
    make_project: MakeProject, envs_root: Path
) -> None:
    root = make_project({"requirements.txt": "six\n"})
    spec = read_spec(root)
    env = build(spec)
    assert env.name == spec.name
    assert env.path == envs_root / spec.name
    assert env.python.is_file()
    assert env.python_version.startswith(RUNNING)
    assert env.source == root.resolve()
    assert env.has("six")
    assert env.has("Six")
    assert not env.has("idna")
    assert "six" in env.packages()
    assert run_python(env, "import sys, six; print(sys.prefix)") == str(env.path)
    assert env.size_bytes > 0
    metadata = json.loads((env.path / cache.METADATA).read_text())
    assert metadata["digest"] == spec.digest


@pytest.mark.slow
def test_same_spec_is_reused_at_once_without_uv(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = read_spec(make_project({"requirements.txt": "six\n"}))
    first = build(spec)

    def no_tools(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached environment must not run uv")

    monkeypatch.setattr(builder, "run_logged", no_tools)
    monkeypatch.setattr(builder, "uv_binary", no_tools)
    started = time.monotonic()
    again = build(spec)
    assert time.monotonic() - started < 0.5
    assert again.path == first.path
    assert again.created == first.created
    assert again.last_used > first.last_used
    assert find_env(first.name).last_used == again.last_used


@pytest.mark.slow
def test_changed_spec_builds_a_new_environment(make_project: MakeProject) -> None:
    root = make_project({"requirements.txt": "six\n"})
    first = build(read_spec(root))
    (root / "requirements.txt").write_text("six\nidna\n")
    second = build(read_spec(root))
    assert second.name != first.name
    assert second.has("idna")
    assert not first.has("idna")
    assert {env.name for env in list_envs()} == {first.name, second.name}


@pytest.mark.slow
def test_with_packages_gives_its_own_environment(make_project: MakeProject) -> None:
    spec = read_spec(make_project({"requirements.txt": "six\n"}))
    env = build(spec.with_packages("idna"))
    assert env.has("six")
    assert env.has("idna")
    assert env.requirements == ("idna",)


@pytest.mark.slow
def test_environment_yml_pip_part_and_conda_only(make_project: MakeProject) -> None:
    yml = f"dependencies:\n  - python={RUNNING}\n  - numpy\n  - pip:\n    - six\n"
    env = build(read_spec(make_project({"binder/environment.yml": yml})))
    assert env.has("six")
    assert not env.has("numpy")
    assert env.conda_only == ("numpy",)
    assert env.python_version.startswith(RUNNING)


@pytest.mark.slow
def test_runtime_txt_picks_the_python(make_project: MakeProject) -> None:
    env = build(read_spec(make_project({"runtime.txt": f"python-{RUNNING}\n"})))
    assert env.python_version.startswith(RUNNING)
    assert run_python(env, "import sys; print(sys.version_info[:2])") == str(
        tuple(sys.version_info[:2])
    )


def test_python_that_is_not_here_is_one_clear_line(
    make_project: MakeProject, envs_root: Path
) -> None:
    """uv finds no 3.99 anywhere (and has none to download), so the message names it."""
    root = make_project({"runtime.txt": "python-3.99\n"})
    with pytest.raises(EnvError) as caught:
        build(read_spec(root))
    first_line = str(caught.value).splitlines()[0]
    assert first_line.startswith("Python 3.99 (asked for by ")
    assert "is not available on this machine" in first_line
    assert list_envs() == []
    assert not (envs_root / read_spec(root).name).exists()


@pytest.mark.slow
def test_pyproject_installs_the_project(make_project: MakeProject) -> None:
    root = make_project({"pyproject.toml": PROJECT_TOML, "altus_demo_project.py": "A = 1\n"})
    env = build(read_spec(root))
    assert env.has("altus-demo-project")
    assert env.has("six")  # its dependency
    assert run_python(env, "import altus_demo_project; print(altus_demo_project.A)") == "1"


@pytest.mark.slow
def test_post_build_runs_inside_the_environment(make_project: MakeProject) -> None:
    script = (
        'echo "$VIRTUAL_ENV" > where.txt\npython -c "import six" && which python >> where.txt\n'
    )
    root = make_project({"requirements.txt": "six\n", "postBuild": script})
    env = build(read_spec(root))
    lines = (root / "where.txt").read_text().splitlines()
    assert lines == [str(env.path), str(env.python)]


@pytest.mark.slow
def test_no_post_build_is_a_different_environment(make_project: MakeProject) -> None:
    root = make_project({"postBuild": "echo ran >> runs.txt\n"})
    skipped = build(read_spec(root), post_build=False)
    assert not (root / "runs.txt").exists()
    ran = build(read_spec(root))
    assert ran.name != skipped.name
    assert (root / "runs.txt").read_text() == "ran\n"


def test_post_build_failure_names_its_last_lines(
    make_project: MakeProject, envs_root: Path
) -> None:
    script = "echo step one\necho 'cannot find data.csv' >&2\nexit 3\n"
    root = make_project({"binder/postBuild": script})
    with pytest.raises(EnvError) as caught:
        build(read_spec(root))
    lines = str(caught.value).splitlines()
    assert lines[0].endswith("postBuild failed with exit status 3: cannot find data.csv")
    assert "step one" in lines
    assert list_envs() == []
    assert not (envs_root / read_spec(root).name).exists()


def test_unresolvable_requirement_is_uv_s_message(
    make_project: MakeProject, envs_root: Path
) -> None:
    root = make_project({"requirements.txt": "altus-no-such-package-xyz==1.0\n"})
    with pytest.raises(EnvError) as caught:
        build(read_spec(root))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot install the requirements of {root.resolve()}: ")
    assert "altus-no-such-package-xyz" in message
    assert "unsatisfiable" in message
    assert not (envs_root / read_spec(root).name).exists()


# --- apt ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_apt_packages_are_listed_not_installed(make_project: MakeProject) -> None:
    root = make_project({"apt.txt": "altus-test-no-such-apt-package\n"})
    env = build(read_spec(root))
    assert env.apt_packages == ("altus-test-no-such-apt-package",)
    assert env.apt_not_installed == ("altus-test-no-such-apt-package",)


def test_apt_install_is_refused_without_root_or_sudo(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, envs_root: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    found = {"apt-get": "/usr/bin/apt-get"}
    monkeypatch.setattr(builder.shutil, "which", lambda name: found.get(name))
    root = make_project({"apt.txt": "libfoo\nlibbar\n"})
    message = "apt.txt asks for libfoo, libbar; installing them needs root or sudo"
    with pytest.raises(EnvError, match=message):
        build(read_spec(root), allow_apt=True)
    assert not (envs_root / read_spec(root).name).exists()


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``apt-get`` first on PATH that logs its arguments; the test runs as if root."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    script = bin_dir / "apt-get"
    script.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {log}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return log


@pytest.mark.slow
def test_allow_apt_installs_them_also_into_a_cached_environment(
    make_project: MakeProject, fake_apt: Path
) -> None:
    spec = read_spec(make_project({"apt.txt": "altus-test-pkg\n"}))
    listed = build(spec)
    assert listed.apt_not_installed == ("altus-test-pkg",)
    assert not fake_apt.exists()
    installed = build(spec, allow_apt=True)
    assert installed.path == listed.path
    assert installed.apt_not_installed == ()
    assert find_env(listed.name).apt_not_installed == ()
    assert fake_apt.read_text().splitlines() == [
        "noninteractive -q update",
        "noninteractive -q install -y --no-install-recommends altus-test-pkg",
    ]


# --- killed and concurrent builds ----------------------------------------------------------


@pytest.fixture
def builders() -> Iterator[list[subprocess.Popen[str]]]:
    """Build processes started by a test, each in its own process group, killed at the end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def start_build(root: Path, builders: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    builders.append(process)
    return process


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_build_is_never_used_and_is_rebuilt(
    make_project: MakeProject, envs_root: Path, builders: list[subprocess.Popen[str]]
) -> None:
    script = "if [ ! -e hang ]; then touch hang; sleep 60; fi\necho done >> runs.txt\n"
    root = make_project({"requirements.txt": "six\n", "postBuild": script})
    spec = read_spec(root)
    process = start_build(root, builders)
    wait_for(root / "hang")  # six is installed; postBuild is running
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    half_built = envs_root / spec.name
    assert (half_built / "bin").is_dir()
    assert not (half_built / cache.METADATA).exists()
    assert list_envs() == []
    with pytest.raises(EnvError, match="no environment named"):
        find_env(spec.name)

    (half_built / "left-over").write_text("from the killed build")
    env = build(spec)
    assert env.path == half_built
    assert not (half_built / "left-over").exists()
    assert (root / "runs.txt").read_text() == "done\n"


@pytest.mark.slow
def test_two_processes_building_one_spec_build_it_once(
    make_project: MakeProject, builders: list[subprocess.Popen[str]]
) -> None:
    root = make_project(
        {"requirements.txt": "six\n", "postBuild": "echo ran >> runs.txt\nsleep 1\n"}
    )
    processes = [start_build(root, builders) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    paths = {stdout.strip() for stdout, _ in outputs}
    assert paths == {str(find_env(read_spec(root).name).path)}
    assert (root / "runs.txt").read_text() == "ran\n"


# --- list, find, remove, prune -------------------------------------------------------------


@pytest.mark.slow
def test_find_remove_and_prune(make_project: MakeProject, envs_root: Path) -> None:
    old = build(read_spec(make_project({"requirements.txt": "six\n"}, name="old")))
    new = build(read_spec(make_project({"requirements.txt": "idna\n"}, name="new")))
    assert [env.name for env in list_envs()] == [new.name, old.name]  # most recent first
    assert find_env(old.name[:6]) == old

    cache.save(dataclasses.replace(old, last_used=time.time() - 40 * 86400))
    (envs_root / "0123456789ab").mkdir()  # what a killed build of another spec left
    assert [env.name for env in prune(timedelta(days=30), dry_run=True)] == [old.name]
    assert old.path.exists()
    assert [env.name for env in prune(timedelta(days=30))] == [old.name]
    assert not old.path.exists()
    assert not (envs_root / "0123456789ab").exists()
    assert [env.name for env in list_envs()] == [new.name]

    assert remove(new.name[:4]).path == new.path
    assert not new.path.exists()
    assert list_envs() == []
    assert [path.name for path in envs_root.iterdir()] == [".locks"]
    with pytest.raises(EnvError, match="no environment named"):
        remove(new.name)


def fake_env(envs_root: Path, name: str, last_used: float) -> Environment:
    """Metadata alone: enough for listing and finding, without a build."""
    folder = envs_root / name
    folder.mkdir(parents=True)
    env = Environment(
        name=name,
        path=folder,
        digest=name * 2,
        source=Path("/somewhere"),
        python_version="3.11.7",
        created=last_used,
        last_used=last_used,
    )
    return cache.save(env)


def test_find_env_by_name_or_unique_prefix(envs_root: Path) -> None:
    first = fake_env(envs_root, "abc111111111", 1.0)
    second = fake_env(envs_root, "abc222222222", 2.0)
    (envs_root / "abc333333333").mkdir()  # no metadata: not an environment
    assert list_envs() == [second, first]
    assert find_env("abc1") == first
    assert find_env("abc222222222") == second
    with pytest.raises(EnvError, match=r"'abc' matches 2 environments \(abc111111111, abc2"):
        find_env("abc")
    for missing in ("abc3", "", "zzz"):
        with pytest.raises(EnvError, match="no environment named"):
            find_env(missing)


def test_unreadable_metadata_is_not_an_environment(envs_root: Path) -> None:
    env = fake_env(envs_root, "abc111111111", 1.0)
    (env.path / cache.METADATA).write_text("{not json")
    assert list_envs() == []
    (env.path / cache.METADATA).write_text(json.dumps({"format": 99}))
    assert list_envs() == []
