"""Reading a spec: where Binder looks, each kind of file, the digest, ``with_packages``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from altus.envs import EnvSpec, has_spec, read_spec
from altus.errors import EnvError
from envs.helpers import PROJECT_TOML, MakeProject

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"


# --- discovery ---------------------------------------------------------------------------


def test_binder_folder_wins_over_dot_binder_and_root(make_project: MakeProject) -> None:
    root = make_project(
        {
            "binder/requirements.txt": "packaging\n",
            ".binder/requirements.txt": "idna\n",
            "requirements.txt": "six\n",
        }
    )
    spec = read_spec(root)
    assert spec.root == root.resolve()
    assert spec.source == root.resolve() / "binder"
    assert spec.requirement_files == (root.resolve() / "binder" / "requirements.txt",)
    assert ".binder/ (binder/ is used)" in spec.ignored
    assert "requirements.txt in the project root (binder/ is used)" in spec.ignored


def test_dot_binder_wins_over_root(make_project: MakeProject) -> None:
    root = make_project({".binder/requirements.txt": "idna\n", "requirements.txt": "six\n"})
    spec = read_spec(root)
    assert spec.source.name == ".binder"
    assert spec.required_names() == {"idna"}


def test_root_is_read_without_a_binder_folder(make_project: MakeProject) -> None:
    root = make_project({"requirements.txt": "six\n", "runtime.txt": f"python-{RUNNING}\n"})
    spec = read_spec(root)
    assert spec.source == root.resolve()
    assert spec.required_names() == {"six"}
    assert spec.python_version == RUNNING
    assert spec.ignored == ()


def test_a_binder_folder_hides_the_root_project(make_project: MakeProject) -> None:
    """Binder installs the project only when no binder folder is used."""
    root = make_project({"binder/requirements.txt": "six\n", "pyproject.toml": PROJECT_TOML})
    spec = read_spec(root)
    assert spec.project is None
    assert "pyproject.toml in the project root (binder/ is used)" in spec.ignored


def test_an_empty_folder_has_nothing_to_build(make_project: MakeProject) -> None:
    root = make_project({"README.md": "hello\n", "binder/README": "nothing\n"})
    with pytest.raises(EnvError, match=r"no environment files here \(looked for binder/"):
        read_spec(root / "binder")
    with pytest.raises(EnvError, match="no environment files here"):
        read_spec(root)


def test_has_spec_says_whether_read_spec_would_find_files(make_project: MakeProject) -> None:
    assert not has_spec(make_project({"README.md": "hello\n"}, name="bare"))
    assert not has_spec(make_project({"pyproject.toml": "[tool.ruff]\n"}, name="tools"))
    assert has_spec(make_project({"binder/apt.txt": "git\n"}, name="binder"))
    assert has_spec(make_project({"requirements.txt": "six\n"}, name="requirements"))
    assert has_spec(make_project({"pyproject.toml": PROJECT_TOML}, name="project"))


def test_tool_settings_in_pyproject_are_not_a_project(make_project: MakeProject) -> None:
    root = make_project({"pyproject.toml": "[tool.ruff]\nline-length = 100\n"})
    with pytest.raises(EnvError, match="no environment files here"):
        read_spec(root)
    with pytest.raises(EnvError, match="not an installable project"):
        read_spec(root / "pyproject.toml")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match="no such file or folder"):
        read_spec(tmp_path / "nowhere")


def test_other_binder_files_are_named_as_not_handled(make_project: MakeProject) -> None:
    root = make_project({"requirements.txt": "six\n", "install.R": "", "Pipfile": ""})
    assert set(read_spec(root).ignored) == {
        "Pipfile (not handled by altus)",
        "install.R (not handled by altus)",
    }


# --- each kind of file -------------------------------------------------------------------


def test_requirements_file_given_alone(make_project: MakeProject) -> None:
    root = make_project({"dev-requirements.txt": "six\nidna\n", "runtime.txt": "python-3.10\n"})
    spec = read_spec(root / "dev-requirements.txt")
    assert spec.source == root.resolve() / "dev-requirements.txt"
    assert spec.required_names() == {"six", "idna"}
    assert spec.python_version is None  # one file means that file only


@pytest.mark.parametrize("name", ["apt.txt", "runtime.txt", "postBuild", "notes.md"])
def test_files_that_are_not_an_environment_alone(make_project: MakeProject, name: str) -> None:
    root = make_project({name: "x\n"})
    with pytest.raises(EnvError, match="cannot read an environment from this file"):
        read_spec(root / name)


def test_pyproject_installs_the_project(make_project: MakeProject) -> None:
    root = make_project({"pyproject.toml": PROJECT_TOML})
    assert read_spec(root).project == root.resolve()
    assert read_spec(root / "pyproject.toml").project == root.resolve()


def test_environment_yml_pip_part_and_conda_only(make_project: MakeProject) -> None:
    yml = "dependencies:\n  - python=3.10\n  - numpy\n  - pip\n  - pip:\n    - six\n"
    root = make_project({"binder/environment.yml": yml, "binder/requirements.txt": "idna\n"})
    spec = read_spec(root)
    assert spec.requirements == ("six",)
    assert spec.requirement_files == ()
    assert spec.conda_only == ("numpy",)
    assert spec.python_version == "3.10"
    note = "binder/requirements.txt (environment.yml takes precedence, as on Binder)"
    assert note in spec.ignored


def test_environment_yml_pin_wins_over_runtime_txt(make_project: MakeProject) -> None:
    root = make_project(
        {"environment.yml": "dependencies:\n  - python=3.12\n", "runtime.txt": "python-3.10\n"}
    )
    assert read_spec(root).python_version == "3.12"


def test_environment_yml_pip_include(make_project: MakeProject) -> None:
    root = make_project(
        {
            "environment.yml": "dependencies:\n  - pip:\n    - -r extra.txt\n    - six\n",
            "extra.txt": "idna\n",
        }
    )
    spec = read_spec(root / "environment.yml")
    assert spec.requirement_files == (root.resolve() / "extra.txt",)
    assert spec.required_names() == {"six", "idna"}


@pytest.mark.parametrize(
    ("text", "version"), [("python-3.10\n", "3.10"), ("python-3.9.7", "3.9.7")]
)
def test_runtime_txt(make_project: MakeProject, text: str, version: str) -> None:
    root = make_project({"runtime.txt": text})
    spec = read_spec(root)
    assert spec.python_version == version
    assert spec.target_python == version


@pytest.mark.parametrize("text", ["r-4.1-2021-10-01\n", "3.10\n", ""])
def test_runtime_txt_that_is_not_python(make_project: MakeProject, text: str) -> None:
    root = make_project({"runtime.txt": text})
    with pytest.raises(EnvError, match=r"runtime\.txt: expected 'python-3\.X'"):
        read_spec(root)


def test_apt_txt(make_project: MakeProject) -> None:
    root = make_project({"apt.txt": "# system libraries\nlibsndfile1\n\nffmpeg  # video\n"})
    assert read_spec(root).apt_packages == ("libsndfile1", "ffmpeg")


def test_apt_txt_refuses_what_is_not_a_package_name(make_project: MakeProject) -> None:
    root = make_project({"apt.txt": "curl; rm -rf /\n"})
    with pytest.raises(EnvError, match="is not a Debian package name"):
        read_spec(root)


def test_post_build(make_project: MakeProject) -> None:
    root = make_project({"binder/postBuild": "echo hi\n"})
    spec = read_spec(root)
    assert spec.post_build == root.resolve() / "binder" / "postBuild"
    assert spec.files() == [root.resolve() / "binder" / "postBuild"]


def test_included_requirement_files(make_project: MakeProject) -> None:
    root = make_project(
        {
            "requirements.txt": "-r base.txt\n--constraint=pins/constraints.txt\nsix\n",
            "base.txt": "idna\n",
            "pins/constraints.txt": "idna<4\n",
        }
    )
    spec = read_spec(root)
    names = [path.relative_to(root.resolve()).as_posix() for path in spec.requirement_paths()]
    assert names == ["requirements.txt", "base.txt", "pins/constraints.txt"]
    assert spec.required_names() == {"six", "idna"}


def test_a_missing_include_is_reported_when_read(make_project: MakeProject) -> None:
    root = make_project({"requirements.txt": "-r nothere.txt\n"})
    with pytest.raises(EnvError, match=r"nothere\.txt: requirements file not found"):
        read_spec(root)


# --- the digest ----------------------------------------------------------------------------


def test_digest_ignores_paths_comments_order_and_mtime(make_project: MakeProject) -> None:
    first = read_spec(make_project({"requirements.txt": "six\nidna>=3\n"}, name="a"))
    second_root = make_project(
        {"requirements.txt": "# deps\nidna >= 3   # comment\n\n  six\n"}, name="b"
    )
    second = read_spec(second_root)
    assert first.digest == second.digest
    assert len(first.digest) == 64
    assert first.name == first.digest[:12]
    os.utime(second_root / "requirements.txt", (0, 0))
    assert read_spec(second_root).digest == first.digest


@pytest.mark.parametrize(
    ("changed", "text"),
    [
        ("requirements.txt", "six\nidna\npackaging\n"),
        ("base.txt", "idna<4\n"),
        ("runtime.txt", "python-3.10\n"),
        ("apt.txt", "libsndfile1\ncurl\n"),
        ("postBuild", "echo two\n"),
        ("pyproject.toml", PROJECT_TOML.replace('version = "0.1"', 'version = "0.2"')),
    ],
)
def test_digest_changes_with_what_changes_the_build(
    make_project: MakeProject, changed: str, text: str
) -> None:
    files = {
        "requirements.txt": "six\n-r base.txt\n",
        "base.txt": "idna\n",
        "runtime.txt": "python-3.11\n",
        "apt.txt": "libsndfile1\n",
        "postBuild": "echo one\n",
        "pyproject.toml": PROJECT_TOML,
    }
    before = read_spec(make_project(files)).digest
    root = make_project({changed: text})
    assert read_spec(root).digest != before


def test_digest_ignores_the_project_source(make_project: MakeProject) -> None:
    """The pyproject content stands for the project: code edits do not rebuild."""
    root = make_project({"pyproject.toml": PROJECT_TOML, "altus_demo_project.py": "A = 1\n"})
    before = read_spec(root).digest
    (root / "altus_demo_project.py").write_text("A = 2\n")
    assert read_spec(root).digest == before


def test_local_path_requirements_are_tied_to_their_folder(make_project: MakeProject) -> None:
    first = read_spec(make_project({"requirements.txt": "-e .\n"}, name="a"))
    second = read_spec(make_project({"requirements.txt": "-e .\n"}, name="b"))
    assert first.has_local_requirements()
    assert first.digest != second.digest


def test_default_python_is_the_running_one(make_project: MakeProject) -> None:
    spec = read_spec(make_project({"requirements.txt": "six\n"}))
    assert spec.python_version is None
    assert spec.target_python == RUNNING


# --- with_packages -------------------------------------------------------------------------


def test_with_packages_adds_new_requirements_only(make_project: MakeProject) -> None:
    root = make_project({"requirements.txt": "Six>=1.10\njupyter_server\n"})
    spec = read_spec(root)
    extended = spec.with_packages("six", "jupyter-server", "jupyterlab", "JupyterLab>=4")
    assert extended.requirements == ("jupyterlab",)
    assert spec.requirements == ()
    assert extended.digest != spec.digest
    assert extended.with_packages("jupyterlab") == extended


def test_with_packages_digest_does_not_depend_on_order(tmp_path: Path) -> None:
    spec = EnvSpec(root=tmp_path, source=tmp_path)
    assert spec.with_packages("six", "idna").digest == spec.with_packages("idna", "six").digest


@pytest.mark.parametrize("bad", ["", "  ", "-e .", "--index-url=https://example.org"])
def test_with_packages_takes_requirements_not_options(tmp_path: Path, bad: str) -> None:
    with pytest.raises(EnvError, match="is not a package requirement"):
        EnvSpec(root=tmp_path, source=tmp_path).with_packages(bad)
