"""The Dockerfile rendering of a spec (checked as text: there is no Docker engine here)."""

from __future__ import annotations

import re

from altus.envs import read_spec, render_dockerfile
from envs.helpers import PROJECT_TOML, MakeProject

INSTRUCTIONS = {"FROM", "LABEL", "ENV", "ARG", "RUN", "USER", "WORKDIR", "COPY"}


def instructions(text: str) -> list[str]:
    """Each instruction as one line (continuations joined); every line must belong to one."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.startswith("#")):
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        assert line.split()[0] in INSTRUCTIONS, line
        joined.append(line)
    assert not pending, "the text ends inside a continued instruction"
    return joined


def index_of(lines: list[str], pattern: str) -> int:
    matches = [number for number, line in enumerate(lines) if re.search(pattern, line)]
    assert matches, f"no instruction matches {pattern!r}"
    return matches[0]


def test_binder_folder_with_every_file(make_project: MakeProject) -> None:
    root = make_project(
        {
            "binder/requirements.txt": "-r base.txt\nnumpy>=1.26\n",
            "binder/base.txt": "six\n",
            "binder/runtime.txt": "python-3.10\n",
            "binder/apt.txt": "libsndfile1\nffmpeg\n",
            "binder/postBuild": "jupyter labextension list\n",
        }
    )
    spec = read_spec(root).with_packages("jupyterlab>=4")
    text = render_dockerfile(spec)
    lines = instructions(text)

    assert lines[0] == "FROM python:3.10-slim"
    assert f'LABEL org.altus.env.digest="{spec.digest}"' in lines
    assert str(root) not in text  # nothing from this machine's paths
    assert text.startswith(f"# Rendered by altus from binder (environment {spec.name}).")

    apt = lines[index_of(lines, "apt-get install")]
    assert apt.startswith("RUN apt-get update && apt-get install -y --no-install-recommends")
    assert "libsndfile1 ffmpeg" in apt
    assert apt.endswith("&& apt-get clean && rm -rf /var/lib/apt/lists/*")

    user = index_of(lines, r"^USER \$\{NB_USER\}$")
    assert index_of(lines, "apt-get install") < user
    assert "ARG NB_USER=jovyan" in lines
    assert "ARG NB_UID=1000" in lines
    assert index_of(lines, r"useradd .*--uid \$\{NB_UID\}") < user
    assert index_of(lines, r"uv venv --seed --python /usr/local/bin/python /opt/venv") < user
    assert lines[index_of(lines, "^WORKDIR")] == "WORKDIR /home/${NB_USER}/project"

    copy_requirements = index_of(lines, r"^COPY .* binder/requirements\.txt binder/requirements")
    copy_base = index_of(lines, r"^COPY .* binder/base\.txt binder/base\.txt$")
    install = index_of(lines, "uv pip install")
    copy_all = index_of(lines, r"^COPY --chown=\$\{NB_USER\}:\$\{NB_USER\} \. \.$")
    post_build = index_of(lines, "^RUN bash binder/postBuild$")
    assert user < copy_requirements < install
    assert copy_base < install < copy_all < post_build == len(lines) - 1
    assert lines[install] == (
        "RUN uv pip install --no-cache -r binder/requirements.txt 'jupyterlab>=4'"
    )


def test_default_python_and_no_apt(make_project: MakeProject) -> None:
    import sys

    root = make_project({"requirements.txt": "six\n"})
    lines = instructions(render_dockerfile(read_spec(root)))
    assert lines[0] == f"FROM python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    assert not any("apt-get" in line for line in lines)
    assert "RUN uv pip install --no-cache -r requirements.txt" in lines


def test_project_is_copied_then_installed(make_project: MakeProject) -> None:
    root = make_project({"pyproject.toml": PROJECT_TOML})
    lines = instructions(render_dockerfile(read_spec(root)))
    copy_all = index_of(lines, r"^COPY .* \. \.$")
    assert lines[copy_all + 1] == "RUN uv pip install --no-cache ."


def test_local_requirements_copy_the_project_first(make_project: MakeProject) -> None:
    root = make_project({"requirements.txt": "-e ./src/pkg\nsix\n"})
    lines = instructions(render_dockerfile(read_spec(root)))
    copy_all = index_of(lines, r"^COPY .* \. \.$")
    assert lines[copy_all + 1] == "RUN uv pip install --no-cache -r requirements.txt"
    assert sum(line.startswith("COPY") for line in lines) == 1


def test_conda_only_packages_are_named_as_not_handled(make_project: MakeProject) -> None:
    yml = "dependencies:\n  - python=3.12\n  - r-base\n  - numpy=1.26\n  - pip:\n    - six\n"
    text = render_dockerfile(read_spec(make_project({"environment.yml": yml})))
    assert "# Not handled (conda-only packages): r-base, numpy=1.26" in text
    lines = instructions(text)
    assert lines[0] == "FROM python:3.12-slim"
    assert "RUN uv pip install --no-cache six" in lines
