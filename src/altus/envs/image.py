"""The same spec as a Dockerfile, for backends that run containers instead of venvs.

The image mirrors what ``build`` does on a machine, in Binder's order: apt
packages as root (one layer, lists cleaned), then a non-root user (``jovyan``,
uid 1000, as on Binder) owning a venv made by uv, the requirement files copied
and installed before the rest of the project (so editing code does not
invalidate the install layer), the project installed, and postBuild run from
the project folder. The build context is ``spec.root``; files are named
relative to it. The image's digest label is the spec's, so a backend can tell
which environment an image holds.
"""

from __future__ import annotations

import shlex
from importlib import metadata
from pathlib import Path

from altus.envs.spec import EnvSpec
from altus.errors import EnvError

__all__ = ["render_dockerfile"]

USER = "jovyan"
UID = 1000
VENV = "/opt/venv"
OWNER = "--chown=${NB_USER}:${NB_USER}"


def render_dockerfile(spec: EnvSpec) -> str:
    """Dockerfile text that builds ``spec``'s environment from the project folder."""
    sections = [
        _header(spec),
        _base(spec),
        _apt(spec),
        _user_and_venv(),
        _install(spec),
        _post_build(spec),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header(spec: EnvSpec) -> str:
    lines = [
        f"# Rendered by altus from {_relative(spec, spec.source)} (environment {spec.name}).",
        "# Build it from the project folder: docker build -f Dockerfile .",
    ]
    if spec.conda_only:
        lines.append(f"# Not handled (conda-only packages): {', '.join(spec.conda_only)}")
    lines += [f"# Ignored: {note}" for note in spec.ignored]
    return "\n".join(lines)


def _base(spec: EnvSpec) -> str:
    return "\n".join(
        [
            f"FROM python:{spec.target_python}-slim",
            f'LABEL org.altus.env.digest="{spec.digest}"',
            "ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1",
        ]
    )


def _apt(spec: EnvSpec) -> str:
    if not spec.apt_packages:
        return ""
    packages = [f"      {shlex.quote(package)} \\" for package in spec.apt_packages]
    return "\n".join(
        [
            "RUN apt-get update \\",
            " && apt-get install -y --no-install-recommends \\",
            *packages,
            " && apt-get clean \\",
            " && rm -rf /var/lib/apt/lists/*",
        ]
    )


def _user_and_venv() -> str:
    return "\n".join(
        [
            f"RUN pip install --no-cache-dir {_uv_requirement()}",
            f"ARG NB_USER={USER}",
            f"ARG NB_UID={UID}",
            f"ENV HOME=/home/${{NB_USER}} VIRTUAL_ENV={VENV} PATH={VENV}/bin:${{PATH}}",
            "RUN useradd --create-home --shell /bin/bash --uid ${NB_UID} ${NB_USER} \\",
            f" && uv venv --seed --python /usr/local/bin/python {VENV} \\",
            f" && chown -R ${{NB_USER}}:${{NB_USER}} {VENV}",
            "USER ${NB_USER}",
            "WORKDIR /home/${NB_USER}/project",
        ]
    )


def _install(spec: EnvSpec) -> str:
    """COPY and install; requirement files first unless one names a local path."""
    arguments = [f"-r {shlex.quote(_relative(spec, path))}" for path in spec.requirement_files]
    arguments += [shlex.quote(line) for line in spec.requirements]
    lines: list[str] = []
    copy_all = f"COPY {OWNER} . ."
    if spec.has_local_requirements():
        lines.append(copy_all)
    else:
        lines += [
            f"COPY {OWNER} {shlex.quote(name)} {shlex.quote(name)}"
            for name in (_relative(spec, path) for path in spec.requirement_paths())
        ]
    if arguments:
        lines.append(f"RUN uv pip install --no-cache {' '.join(arguments)}")
    if copy_all not in lines:
        lines.append(copy_all)
    if spec.project is not None:
        lines.append(f"RUN uv pip install --no-cache {shlex.quote(_relative(spec, spec.project))}")
    return "\n".join(lines)


def _post_build(spec: EnvSpec) -> str:
    if spec.post_build is None:
        return ""
    return f"RUN bash {shlex.quote(_relative(spec, spec.post_build))}"


def _relative(spec: EnvSpec, path: Path) -> str:
    """``path`` as the build context names it (``.`` for the root itself)."""
    try:
        return path.resolve().relative_to(spec.root.resolve()).as_posix()
    except ValueError as exc:
        raise EnvError(f"{path} is outside the project folder {spec.root}") from exc


def _uv_requirement() -> str:
    """The uv that built the local environments, pinned, so both resolve alike."""
    try:
        return f"uv=={metadata.version('uv')}"
    except metadata.PackageNotFoundError:
        return "uv"
