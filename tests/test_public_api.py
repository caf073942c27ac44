"""The public API is exactly what the documentation names (as httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import altus
import altus.batch
import altus.errors

DOCUMENTED = ["AltusError", "Executor", "Job", "Knot", "__version__", "jobs"]
"""What README.md and issue 2 promise at the top level."""

PUBLIC_MODULES = [
    "altus",
    "altus.batch",
    "altus.errors",
    "altus.config",
    "altus.storage",
    "altus.envs",
]


def test_all_is_exactly_the_documented_names() -> None:
    assert sorted(altus.__all__) == sorted(DOCUMENTED)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_each_public_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from altus import {name}", namespace)
    assert namespace[name] is getattr(altus, name)


def test_star_import_gives_the_documented_names() -> None:
    namespace: dict[str, object] = {}
    exec("from altus import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(DOCUMENTED)


def test_every_public_member_of_the_package_is_exported() -> None:
    """No public name in ``altus``'s namespace is left out of ``__all__`` (helpers start with _)."""
    public = {
        name
        for name, value in vars(altus).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__
    }
    assert sorted(public - set(altus.__all__)) == []


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_public_types_are_the_documented_kinds() -> None:
    import concurrent.futures

    assert issubclass(altus.Executor, concurrent.futures.Executor)
    assert issubclass(altus.AltusError, Exception)
    assert callable(altus.jobs)
    assert callable(altus.Job.attach)
    assert isinstance(altus.__version__, str)
    assert altus.__version__.count(".") >= 1
    assert list(inspect.signature(altus.Knot).parameters) == [
        "func",
        "backend",
        "workers",
        "retries",
        "timeout",
        "store",
        "name",
        "resources",
        "backend_options",
    ]


def test_every_error_is_an_altus_error_and_exported() -> None:
    errors = {
        name
        for name, value in vars(altus.errors).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert errors == set(altus.errors.__all__)
    assert all(issubclass(getattr(altus.errors, name), altus.AltusError) for name in errors)
