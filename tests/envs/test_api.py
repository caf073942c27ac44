"""``altus.envs`` offers exactly the names the notebook code and the CLI build on."""

from __future__ import annotations

import inspect

import altus.envs
from altus.errors import AltusError, EnvError

DOCUMENTED = [
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


def test_all_is_the_documented_names() -> None:
    assert sorted(altus.envs.__all__) == sorted(DOCUMENTED)


def test_env_error_is_an_altus_error() -> None:
    assert altus.envs.EnvError is EnvError
    assert issubclass(EnvError, AltusError)


def test_build_signature() -> None:
    parameters = inspect.signature(altus.envs.build).parameters
    assert list(parameters) == ["spec", "allow_apt", "post_build", "quiet", "envs_dir"]
    assert parameters["allow_apt"].default is False
    assert parameters["post_build"].default is True
    assert parameters["quiet"].default is True


def test_environment_carries_what_the_callers_read() -> None:
    fields = set(altus.envs.Environment.__dataclass_fields__)
    assert {"name", "path", "source", "python_version", "created", "last_used"} <= fields
    for attribute in ("python", "size_bytes", "has", "packages", "to_dict"):
        assert hasattr(altus.envs.Environment, attribute)
