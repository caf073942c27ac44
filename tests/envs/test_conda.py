"""The environment.yml reader: the pip list, the Python pin, conda-only packages, bad input."""

from __future__ import annotations

import pytest

from altus.envs.conda import CondaEnvironment, parse_environment_yml
from altus.errors import EnvError

TYPICAL = """\
# A typical Binder environment file
name: analysis
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.10
  - numpy=1.26   # pinned
  - conda-forge::r-base
  - "scipy>=1.11"
  - pip
  - pip:
    - six==1.16.0
    - "idna>=3"   # a comment after a quoted item
    - 'packaging'
variables:
  OMP_NUM_THREADS: 1
"""

COMPACT = """\
name: compact
dependencies:
- python 3.11
- numpy
- pip:
  - six
"""

FLOW = "dependencies: [python=3.12.*, numpy, pip, sympy]\n"

SAMPLES = [
    TYPICAL,
    COMPACT,
    "dependencies:\n  - pip:\n      - six # only pip\n",
    "---\nname: x\ndependencies:\n  - 'r-ggplot2'\n  - python>=3.9\n...\n",
    "channels: [conda-forge]\ndependencies:\n  - pip:\n    - 'weird#name'\n",
]


def test_typical_file() -> None:
    parsed = parse_environment_yml(TYPICAL, "environment.yml")
    assert parsed == CondaEnvironment(
        pip=("six==1.16.0", "idna>=3", "packaging"),
        conda_only=("numpy=1.26", "conda-forge::r-base", "scipy>=1.11"),
        python_version="3.10",
    )


def test_list_at_column_zero_and_space_pin() -> None:
    parsed = parse_environment_yml(COMPACT, "environment.yml")
    assert parsed == CondaEnvironment(pip=("six",), conda_only=("numpy",), python_version="3.11")


def test_flow_lists() -> None:
    parsed = parse_environment_yml(FLOW, "environment.yml")
    assert parsed == CondaEnvironment((), ("numpy", "sympy"), "3.12")
    flow_pip = "dependencies:\n  - numpy\n  - pip: [six, 'idna']\n"
    assert parse_environment_yml(flow_pip, "e.yml").pip == ("six", "idna")


@pytest.mark.parametrize(
    ("dependency", "version"),
    [
        ("python=3.10", "3.10"),
        ("python==3.10.4", "3.10.4"),
        ("python = 3.9", "3.9"),
        ("python 3.11", "3.11"),
        ("python=3.10.*", "3.10"),
        ("conda-forge::python=3.9", "3.9"),
        ("python>=3.9", None),
        ("python", None),
    ],
)
def test_python_pin(dependency: str, version: str | None) -> None:
    parsed = parse_environment_yml(f"dependencies:\n  - {dependency}\n", "e.yml")
    assert parsed.python_version == version
    assert parsed.conda_only == ()


def test_file_without_dependencies_is_empty() -> None:
    assert parse_environment_yml("name: empty\nchannels:\n  - defaults\n", "e.yml") == (
        CondaEnvironment()
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("dependencies:\n  - pip:\n      index: https://example.org\n", 3),
        ("dependencies:\n  numpy: 1\n", 2),
        ("  indented: at the top\n", 1),
        ("dependencies:\n  - pip: six\n", 0),
    ],
)
def test_unreadable_structure_names_the_line(text: str, line: int) -> None:
    with pytest.raises(EnvError, match=r"^e\.yml") as caught:
        parse_environment_yml(text, "e.yml")
    if line:
        assert str(caught.value).startswith(f"e.yml:{line}:")


@pytest.mark.parametrize("text", SAMPLES)
def test_agrees_with_a_yaml_parser(text: str) -> None:
    """On the subset it reads, the small parser sees what PyYAML sees."""
    yaml = pytest.importorskip("yaml")
    dependencies = yaml.safe_load(text).get("dependencies") or []
    pip = [item for entry in dependencies if isinstance(entry, dict) for item in entry["pip"]]
    others = [entry for entry in dependencies if isinstance(entry, str)]
    parsed = parse_environment_yml(text, "e.yml")
    assert list(parsed.pip) == pip
    assert set(parsed.conda_only) <= set(others)
    assert all(
        entry in parsed.conda_only or entry.startswith(("python", "pip")) for entry in others
    )
