"""Realising a spec as a virtual environment with uv, cached by the spec's digest.

``build`` returns at once when an environment with the spec's digest is
complete; otherwise, holding that digest's lock, it installs apt packages (when
allowed), creates the venv with ``uv venv --seed``, installs the requirements
and the project in one ``uv pip install`` (one resolve, so conflicts are found
together), runs postBuild, and writes the metadata last. Any failure deletes
the folder, so a failed build is never reused; a killed one leaves a folder
without metadata, which the next build deletes.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from altus.envs import cache
from altus.envs.cache import Environment
from altus.envs.runner import Finished, condense_uv_error, run_logged, uv_binary
from altus.envs.spec import NAME_LENGTH, EnvSpec
from altus.errors import EnvError

__all__ = ["build", "python_for"]

ERROR_LINES = 10


def build(
    spec: EnvSpec,
    *,
    allow_apt: bool = False,
    post_build: bool = True,
    quiet: bool = True,
    envs_dir: Path | None = None,
) -> Environment:
    """The environment of ``spec``: reused if built before, else built now.

    ``allow_apt`` installs ``apt.txt`` packages with apt-get (as root, or with
    ``sudo -n``); without it they are listed in ``apt_not_installed``.
    ``post_build=False`` skips postBuild; that is a different environment, so
    it never passes for one where postBuild ran. ``quiet=False`` shows the
    tools' output on stderr while they run.
    """
    if not post_build:
        spec = dataclasses.replace(spec, post_build=None)
    root = cache.envs_root(envs_dir)
    digest = spec.digest
    folder = root / digest[:NAME_LENGTH]
    with cache.locked(root, folder.name):
        env = cache.load(folder)
        if env is None:
            return _build_new(spec, digest, folder, allow_apt=allow_apt, quiet=quiet)
        if env.digest != digest:
            raise EnvError(f"{folder} holds another spec's environment; remove it (altus env rm)")
        return _reuse(env, allow_apt=allow_apt, quiet=quiet)


def python_for(spec: EnvSpec) -> str:
    """What to pass to ``uv venv --python``: the running Python when it is the version asked."""
    running = [str(part) for part in sys.version_info[:3]]
    asked = (spec.python_version or spec.target_python).split(".")
    if sys.executable and running[: len(asked)] == asked:
        return sys.executable
    return spec.target_python


def _reuse(env: Environment, *, allow_apt: bool, quiet: bool) -> Environment:
    if allow_apt and env.apt_not_installed:
        _install_apt(list(env.apt_not_installed), quiet=quiet)
        env = dataclasses.replace(env, apt_not_installed=())
    return cache.touch(env)


def _build_new(
    spec: EnvSpec, digest: str, folder: Path, *, allow_apt: bool, quiet: bool
) -> Environment:
    shutil.rmtree(folder, ignore_errors=True)  # a killed build's leftovers
    started = time.time()
    try:
        apt_missing = _apt_missing(list(spec.apt_packages))
        if allow_apt and apt_missing:
            _install_apt(apt_missing, quiet=quiet)
            apt_missing = []
        _create_venv(spec, folder, quiet=quiet)
        env = _environment(spec, digest, folder, started, apt_missing)
        _install(spec, env, quiet=quiet)
        if spec.post_build is not None:
            _run_post_build(spec.post_build, spec.root, env, quiet=quiet)
        return cache.save(dataclasses.replace(env, last_used=time.time()))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _create_venv(spec: EnvSpec, folder: Path, *, quiet: bool) -> None:
    python = python_for(spec)
    command = [uv_binary(), "venv", "--seed", "--python", python, str(folder)]
    done = run_logged(command, quiet=quiet, cwd=folder.parent)
    if done.ok:
        return
    reason = condense_uv_error(done.tail)
    if python == sys.executable:
        raise EnvError(f"cannot create a virtual environment in {folder}: {reason}")
    asked = f"Python {spec.target_python} (asked for by {spec.source})"
    raise EnvError(f"{asked} is not available on this machine: {reason}")


def _install(spec: EnvSpec, env: Environment, *, quiet: bool) -> None:
    arguments: list[str] = []
    for path in spec.requirement_files:
        arguments += ["-r", str(path)]
    for line in spec.requirements:
        arguments += shlex.split(line) if line.startswith("-") else [line]
    if spec.project is not None:
        arguments.append(str(spec.project))
    if not arguments:
        return
    # Compiled now, once: else every start pays for it, and every start when the user's
    # environment sets PYTHONDONTWRITEBYTECODE (a JupyterLab start took 1 s longer).
    install = [uv_binary(), "pip", "install", "--compile-bytecode"]
    command = [*install, "--python", str(env.python), *arguments]
    done = run_logged(command, quiet=quiet, cwd=spec.root)
    if not done.ok:
        raise EnvError(
            f"cannot install the requirements of {spec.source}: {condense_uv_error(done.tail)}"
        )


def _run_post_build(script: Path, cwd: Path, env: Environment, *, quiet: bool) -> None:
    """Run postBuild with bash as if the environment were activated."""
    variables = dict(os.environ)
    variables.pop("PYTHONHOME", None)
    variables["VIRTUAL_ENV"] = str(env.path)
    variables["PATH"] = os.pathsep.join([str(env.bin_dir), variables.get("PATH", os.defpath)])
    done = run_logged(["bash", str(script)], quiet=quiet, cwd=cwd, env=variables)
    if not done.ok:
        raise EnvError(_failure(f"{script} failed with exit status {done.returncode}", done))


def _apt_missing(packages: list[str]) -> list[str]:
    """The packages dpkg does not list as installed (all of them where there is no dpkg)."""
    dpkg = shutil.which("dpkg-query")
    if not packages or dpkg is None:
        return packages
    names = [package.split("=")[0] for package in packages]
    done = subprocess.run(
        [dpkg, "--show", "--showformat=${Package} ${db:Status-Status}\\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0] for line in done.stdout.splitlines() if line.endswith(" installed")
    }
    return [package for package, name in zip(packages, names, strict=True) if name not in installed]


def _install_apt(packages: list[str], *, quiet: bool) -> None:
    """apt-get update and install, as root or with ``sudo -n``; refused (EnvError) otherwise."""
    listed = ", ".join(packages)
    if shutil.which("apt-get") is None:
        raise EnvError(f"apt.txt asks for {listed}, but this machine has no apt-get")
    apt = [*_as_root(listed), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]
    steps = {
        "update": [*apt, "update"],
        "install": [*apt, "install", "-y", "--no-install-recommends", *packages],
    }
    for step, command in steps.items():
        done = run_logged(command, quiet=quiet)
        if not done.ok:
            raise EnvError(_failure(f"apt-get {step} failed for {listed}", done))


def _as_root(listed: str) -> list[str]:
    """Nothing as root, ``sudo -n`` (never a password prompt) otherwise, where there is sudo."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-n"]
    raise EnvError(f"apt.txt asks for {listed}; installing them needs root or sudo")


def _environment(
    spec: EnvSpec, digest: str, folder: Path, started: float, apt_missing: list[str]
) -> Environment:
    return Environment(
        name=folder.name,
        path=folder,
        digest=digest,
        source=spec.source,
        python_version=_venv_version(folder) or spec.target_python,
        created=started,
        last_used=started,
        files=tuple(str(path) for path in spec.files()),
        requirements=spec.requirements,
        apt_packages=spec.apt_packages,
        apt_not_installed=tuple(apt_missing),
        conda_only=spec.conda_only,
        ignored=spec.ignored,
    )


def _venv_version(folder: Path) -> str | None:
    """The full Python version a venv's ``pyvenv.cfg`` records (uv: ``version_info``)."""
    try:
        text = (folder / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return value.strip()
    return None


def _failure(headline: str, done: Finished) -> str:
    """``headline: last line`` first (the CLI prints only that), then the last lines."""
    lines = done.last_lines(ERROR_LINES)
    first = f"{headline}: {lines[-1].strip()}" if lines else headline
    return "\n".join([first, *lines]) if lines else first
