"""A project's environment, read from its files the way Binder (repo2docker) reads them.

Binder looks in ``binder/``, else ``.binder/``, else the project root, and
only in that one folder. altus does the same with the files a uv environment
can honour:

``requirements.txt``
    pip requirements (ignored when an ``environment.yml`` is present, as on Binder);
``environment.yml``
    its ``pip:`` list and ``python=X.Y``; every other dependency is conda-only
    and listed as not handled;
``runtime.txt``
    ``python-X.Y``, the Python version (an ``environment.yml`` pin wins);
``apt.txt``
    Debian packages, installed only when the build is allowed to;
``postBuild``
    a script run with bash inside the environment after the installs;
``pyproject.toml`` / ``setup.py``
    the project itself is installed, only from the root (Binder installs a
    ``setup.py`` only when no binder folder is used).

Other Binder files (``Pipfile``, ``install.R``, ``Project.toml``, a
``Dockerfile``…) are named in ``EnvSpec.ignored`` so that a user sees what was
left out instead of a silently different environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from altus.envs import requirements as req
from altus.envs.conda import parse_environment_yml
from altus.errors import EnvError

__all__ = ["BINDER_FOLDERS", "EnvSpec", "read_spec"]

BINDER_FOLDERS = ("binder", ".binder")
REQUIREMENTS = "requirements.txt"
ENVIRONMENT_YML = "environment.yml"
RUNTIME = "runtime.txt"
APT = "apt.txt"
POST_BUILD = "postBuild"
ENV_FILES = (REQUIREMENTS, ENVIRONMENT_YML, RUNTIME, APT, POST_BUILD)
PROJECT_MARKERS = ("pyproject.toml", "setup.py")
PROJECT_FILES = (*PROJECT_MARKERS, "setup.cfg")
NOT_HANDLED = (
    "Pipfile",
    "Pipfile.lock",
    "install.R",
    "DESCRIPTION",
    "Project.toml",
    "REQUIRE",
    "default.nix",
    "Dockerfile",
    "start",
)
NAME_LENGTH = 12
DIGEST_FORMAT = 1

_RUNTIME = re.compile(r"^python-(?P<version>3(?:\.\d+){1,2})$")
_APT_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.:=~_-]*$")


@dataclass(frozen=True)
class EnvSpec:
    """What to build: pip requirements, a project, a Python version, apt packages, postBuild.

    ``root`` is the project folder: installs and postBuild run there (as Binder
    runs them from the repository root) and it is the Docker build context.
    ``source`` is the folder or file the spec was read from, ``inputs`` the
    files in it that were used, and ``ignored`` notes on those that were not.
    """

    root: Path
    source: Path
    requirement_files: tuple[Path, ...] = ()
    requirements: tuple[str, ...] = ()
    project: Path | None = None
    python_version: str | None = None
    apt_packages: tuple[str, ...] = ()
    conda_only: tuple[str, ...] = ()
    post_build: Path | None = None
    ignored: tuple[str, ...] = ()
    inputs: tuple[Path, ...] = ()

    @property
    def target_python(self) -> str:
        """The Python version to build with: the spec's, else the running one's ``X.Y``."""
        return self.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"

    @property
    def digest(self) -> str:
        """A hash of everything that changes the build, and of nothing else.

        Hashed: the requirement files (and the files they include) in normal
        form, the extra requirements, the Python version, the apt packages,
        the postBuild script, and the project's ``pyproject.toml``/``setup.py``/
        ``setup.cfg`` content. Not hashed: paths and modification times, so the
        same spec in another checkout reuses the environment; and the project's
        source files, so editing code does not rebuild (the project's metadata
        is what decides its dependencies). The one exception: a requirement
        that names a local path adds the project folder, because the same text
        means different code elsewhere.
        """
        payload = json.dumps(self._digest_payload(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def name(self) -> str:
        """The name of the environment this spec builds."""
        return self.digest[:NAME_LENGTH]

    def with_packages(self, *packages: str) -> EnvSpec:
        """A copy that also installs ``packages``, leaving out those already required."""
        known = self.required_names() | set(self.requirements)
        extra: list[str] = []
        for package in packages:
            text = " ".join(package.split())
            if not text or text.startswith("-"):
                raise EnvError(f"{package!r} is not a package requirement")
            key = req.requirement_name(text) or text
            if key not in known:
                known.add(key)
                extra.append(text)
        return dataclasses.replace(self, requirements=(*self.requirements, *extra))

    def required_names(self) -> set[str]:
        """The canonical names of the distributions the requirement lines ask for."""
        names = map(req.requirement_name, self._requirement_lines())
        return {name for name in names if name is not None}

    def requirement_paths(self) -> list[Path]:
        """The requirement files and every file they include, each once."""
        found = [path for top in self.requirement_files for path in req.included_files(top)]
        return list(dict.fromkeys(found))

    def files(self) -> list[Path]:
        """Every file the spec was read from, requirement includes too."""
        found = [*self.inputs, *self.requirement_paths()]
        if self.project is not None:
            found += [self.project / name for name in PROJECT_FILES]
        found += [path for path in (self.post_build,) if path is not None]
        return list(dict.fromkeys(path for path in found if path.is_file()))

    def has_local_requirements(self) -> bool:
        """Whether a requirement names a path on this disk (``-e .``, ``./pkg``)."""
        return any(req.is_local(line) for line in self._requirement_lines())

    def _requirement_lines(self) -> list[str]:
        lines = [
            line for path in self.requirement_paths() for line in req.logical_lines(_read(path))
        ]
        return [*self.requirements, *lines]

    def _digest_payload(self) -> dict[str, object]:
        file_lines = [
            sorted(map(req.normal_form, req.logical_lines(_read(path))))
            for path in self.requirement_paths()
        ]
        project = None
        if self.project is not None:
            project = {
                name: _read(self.project / name)
                for name in PROJECT_FILES
                if (self.project / name).is_file()
            }
        return {
            "format": DIGEST_FORMAT,
            "python": self.target_python,
            "requirement_files": file_lines,
            "requirements": sorted(set(map(req.normal_form, self.requirements))),
            "project": project,
            "apt": sorted(set(self.apt_packages)),
            "post_build": None if self.post_build is None else _read(self.post_build),
            "local_root": str(self.root) if self.has_local_requirements() else None,
        }


def read_spec(path: Path | str) -> EnvSpec:
    """The spec of a project folder (``binder/``, ``.binder/``, else its root) or of one file.

    One file may be a requirements file (``*.txt``), a ``pyproject.toml`` or
    ``setup.py`` (the project is installed), or an ``environment.yml``.
    Raises ``EnvError`` when there is nothing to build from.
    """
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        return _from_folder(target)
    if target.is_file():
        return _from_file(target)
    raise EnvError(f"{target}: no such file or folder")


def has_spec(folder: Path | str) -> bool:
    """Whether ``folder`` holds files ``read_spec`` would read (a binder folder, environment
    files, or an installable project)."""
    root = Path(folder)
    if any((root / name).is_dir() for name in BINDER_FOLDERS):
        return True
    return any((root / name).is_file() for name in ENV_FILES) or _is_project(root)


def _from_folder(root: Path) -> EnvSpec:
    folder, ignored = _binder_folder(root)
    found = {name: folder / name for name in ENV_FILES if (folder / name).is_file()}
    ignored += [
        f"{(folder / name).relative_to(root)} (not handled by altus)"
        for name in NOT_HANDLED
        if (folder / name).exists()
    ]
    project = root if folder == root and _is_project(root) else None
    if not found and project is None:
        raise EnvError(f"{root}: no environment files here (looked for {_looked_for()})")
    if ENVIRONMENT_YML in found and REQUIREMENTS in found:
        note = "environment.yml takes precedence, as on Binder"
        ignored.append(f"{found.pop(REQUIREMENTS).relative_to(root)} ({note})")
    spec = EnvSpec(
        root=root,
        source=folder,
        project=project,
        ignored=tuple(ignored),
        inputs=tuple(found.values()),
    )
    return _with_python_files(spec, found)


def _from_file(path: Path) -> EnvSpec:
    spec = EnvSpec(root=path.parent, source=path, inputs=(path,))
    if path.name in PROJECT_MARKERS:
        if not _is_project(path.parent, path.name):
            raise EnvError(f"{path}: not an installable project (no [project] or [build-system])")
        return dataclasses.replace(spec, project=path.parent)
    if path.suffix in (".yml", ".yaml"):
        return _with_environment_yml(spec, path)
    if path.suffix == ".txt" and path.name not in (RUNTIME, APT):
        return _with_requirements(spec, path)
    expected = "a folder, a requirements file, pyproject.toml, setup.py or environment.yml"
    raise EnvError(f"{path}: cannot read an environment from this file (expected {expected})")


def _binder_folder(root: Path) -> tuple[Path, list[str]]:
    """The folder Binder reads, and notes on the candidates it passes over."""
    present = [root / name for name in BINDER_FOLDERS if (root / name).is_dir()]
    if not present:
        return root, []
    chosen = present[0]
    notes = [f"{other.name}/ ({chosen.name}/ is used)" for other in present[1:]]
    notes += [f"{name} in the project root ({chosen.name}/ is used)" for name in _root_files(root)]
    return chosen, notes


def _root_files(root: Path) -> list[str]:
    names = [name for name in ENV_FILES if (root / name).is_file()]
    return names + [name for name in PROJECT_MARKERS if _is_project(root, name)]


def _is_project(folder: Path, *names: str) -> bool:
    """Whether ``folder`` is an installable project, not a ``pyproject.toml`` of tool settings.

    A ``pyproject.toml`` counts when it has a ``[project]`` or ``[build-system]``
    table; a ``setup.py`` always counts.
    """
    names = names or PROJECT_MARKERS
    if "setup.py" in names and (folder / "setup.py").is_file():
        return True
    pyproject = folder / "pyproject.toml"
    if "pyproject.toml" not in names or not pyproject.is_file():
        return False
    try:
        document = tomllib.loads(_read(pyproject))
    except tomllib.TOMLDecodeError as exc:
        raise EnvError(f"{pyproject}: invalid TOML: {exc}") from exc
    return "project" in document or "build-system" in document


def _with_python_files(spec: EnvSpec, found: dict[str, Path]) -> EnvSpec:
    if RUNTIME in found:
        spec = dataclasses.replace(spec, python_version=_runtime_version(found[RUNTIME]))
    if REQUIREMENTS in found:
        spec = _with_requirements(spec, found[REQUIREMENTS])
    if ENVIRONMENT_YML in found:
        spec = _with_environment_yml(spec, found[ENVIRONMENT_YML])
    if APT in found:
        spec = dataclasses.replace(spec, apt_packages=_apt_packages(found[APT]))
    if POST_BUILD in found:
        spec = dataclasses.replace(spec, post_build=found[POST_BUILD])
    return spec


def _with_requirements(spec: EnvSpec, path: Path) -> EnvSpec:
    req.included_files(path)  # a missing include is reported now, not half-way through a build
    return dataclasses.replace(spec, requirement_files=(*spec.requirement_files, path))


def _with_environment_yml(spec: EnvSpec, path: Path) -> EnvSpec:
    conda = parse_environment_yml(_read(path), path)
    files, lines = _split_includes(conda.pip, path.parent)
    return dataclasses.replace(
        spec,
        requirement_files=(*spec.requirement_files, *files),
        requirements=(*spec.requirements, *lines),
        conda_only=(*spec.conda_only, *conda.conda_only),
        python_version=conda.python_version or spec.python_version,
    )


def _split_includes(lines: Iterable[str], folder: Path) -> tuple[list[Path], list[str]]:
    """``-r FILE`` items of a ``pip:`` list become requirement files; the rest stay lines."""
    files: list[Path] = []
    rest: list[str] = []
    for line in lines:
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0] in ("-r", "--requirement"):
            files.append(folder / parts[1])
            req.included_files(folder / parts[1])
        else:
            rest.append(" ".join(parts))
    return files, rest


def _runtime_version(path: Path) -> str:
    lines = [line.strip() for line in _read(path).splitlines() if line.strip()]
    match = _RUNTIME.match(lines[0]) if lines else None
    if match is None:
        got = repr(lines[0]) if lines else "nothing"
        message = "expected 'python-3.X' (other runtimes, such as R, are not handled)"
        raise EnvError(f"{path}: {message}, got {got}")
    return match["version"]


def _apt_packages(path: Path) -> tuple[str, ...]:
    packages = req.logical_lines(_read(path))
    for package in packages:
        if not _APT_PACKAGE.match(package):
            raise EnvError(f"{path}: {package!r} is not a Debian package name")
    return tuple(dict.fromkeys(packages))


def _looked_for() -> str:
    folders = ", ".join(f"{name}/" for name in BINDER_FOLDERS)
    return f"{folders}, {', '.join((*ENV_FILES, *PROJECT_MARKERS))}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EnvError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvError(f"{path}: cannot read: {exc}") from exc
