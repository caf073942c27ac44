"""Environments: a project's Binder-style files realised as a cached uv venv or a Dockerfile.

::

    spec = read_spec("path/to/project")        # binder/, .binder/, else the root
    env = build(spec.with_packages("jupyterlab"))
    env.python, env.has("jupyterlab")
    print(render_dockerfile(spec))

Environments are cached by the spec's digest under ``<XDG cache>/altus/envs/``;
``list_envs``, ``find_env``, ``remove`` and ``prune`` manage them.
"""

from __future__ import annotations

from altus.envs.builder import build
from altus.envs.cache import Environment, find_env, list_envs, prune, remove
from altus.envs.image import render_dockerfile
from altus.envs.spec import EnvSpec, has_spec, read_spec
from altus.errors import EnvError

__all__ = [
    "EnvError",
    "EnvSpec",
    "Environment",
    "build",
    "find_env",
    "has_spec",
    "list_envs",
    "prune",
    "read_spec",
    "remove",
    "render_dockerfile",
]
