"""Which Python a notebook server runs with.

``--env`` names either an environment the user already has (a virtual
environment's folder, or a Python executable) or a spec for altus to build
(a Binder-style folder, a requirements file, ``pyproject.toml``,
``environment.yml``). With no ``--env``, a root folder holding such files is
the spec, as on Binder; else the Python running altus. An environment altus
builds gets ``jupyterlab`` added; one the user brings must already have it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from altus.errors import NotebookError

__all__ = ["has_jupyterlab", "notebook_python"]

_FIND = "import importlib.util, sys; sys.exit(importlib.util.find_spec('jupyterlab') is None)"


def notebook_python(root: Path, env: str | None) -> tuple[Path, str]:
    """The Python to run JupyterLab with, and how to describe its environment."""
    if env is not None:
        given = Path(env).expanduser()
        python = _existing_python(given)
        if python is not None:
            return _with_jupyterlab(python, f"{given}"), str(given)
        if not given.exists():
            raise NotebookError(f"--env {env}: no such file or folder")
        return _built(given)
    from altus import envs

    if envs.has_spec(root):
        return _built(root)
    python = Path(sys.executable)
    return _with_jupyterlab(python, "the Python running altus"), "current"


def has_jupyterlab(python: Path) -> bool:
    try:
        done = subprocess.run([str(python), "-c", _FIND], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _existing_python(path: Path) -> Path | None:
    """``path`` itself if it is a Python executable, its ``bin/python`` if it is an
    environment's folder (a venv or a conda environment), else None."""
    if path.is_file() and path.name.startswith("python"):
        return path
    candidate = path / "bin" / "python"
    if candidate.exists() and ((path / "pyvenv.cfg").exists() or (path / "conda-meta").is_dir()):
        return candidate
    return None


def _with_jupyterlab(python: Path, where: str) -> Path:
    if python == Path(sys.executable):
        import importlib.util

        if importlib.util.find_spec("jupyterlab") is not None:
            return python
    elif has_jupyterlab(python):
        return python
    raise NotebookError(
        f"{where} has no jupyterlab: install it there (python -m pip install jupyterlab), "
        "or pass --env with a requirements file or folder for altus to build"
    )


def _built(spec_path: Path) -> tuple[Path, str]:
    from altus import envs

    spec = envs.read_spec(spec_path).with_packages("jupyterlab")
    environment = envs.build(spec, quiet=True)
    return environment.python, environment.name
