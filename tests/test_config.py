"""Settings: each layer, their precedence, and errors that name their source."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import pytest

from altus.config import BatchSettings, Paths, Settings, load_settings
from altus.errors import ConfigError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder with no altus.toml above it in the temp tree."""
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def user_config(clean_environ: Path) -> Path:
    """Where the user's config.toml goes under this test's XDG_CONFIG_HOME."""
    return clean_environ / "config" / "altus" / "config.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(project: Path, **environ: str) -> Settings:
    return load_settings(environ={**os.environ, **environ}, cwd=project)


def test_defaults_come_from_the_dataclasses(project: Path) -> None:
    assert load(project).batch == BatchSettings()
    assert BatchSettings() == BatchSettings("local", None, None, 2, None)


def test_paths_follow_xdg_variables(project: Path, clean_environ: Path) -> None:
    assert load(project).paths == Paths(
        config_dir=clean_environ / "config" / "altus",
        data_dir=clean_environ / "data" / "altus",
        state_dir=clean_environ / "state" / "altus",
        cache_dir=clean_environ / "cache" / "altus",
    )


def test_paths_fall_back_to_home_and_ignore_relative_xdg_values(tmp_path: Path) -> None:
    environ = {
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": "relative/data",
        "XDG_STATE_HOME": "",
        "XDG_CACHE_HOME": "relative/cache",
    }
    paths = load_settings(environ=environ, cwd=tmp_path).paths
    assert paths.config_dir == tmp_path / ".config" / "altus"
    assert paths.data_dir == tmp_path / ".local" / "share" / "altus"
    assert paths.state_dir == tmp_path / ".local" / "state" / "altus"
    assert paths.cache_dir == tmp_path / ".cache" / "altus"


def test_default_store_is_under_the_data_dir(project: Path, clean_environ: Path) -> None:
    settings = load(project)
    assert settings.default_store_url == "file://" + str(clean_environ / "data" / "altus" / "jobs")


def test_default_store_is_the_configured_store(project: Path) -> None:
    settings = load(project, ALTUS_BATCH__STORE="s3://bucket/jobs")
    assert settings.default_store_url == "s3://bucket/jobs"


def test_user_file_is_read(project: Path, user_config: Path) -> None:
    write(user_config, '[batch]\nbackend = "slurm"\nworkers = 4\n')
    assert load(project).batch == BatchSettings(backend="slurm", workers=4)


def test_project_file_is_found_in_a_parent(project: Path) -> None:
    write(project / "altus.toml", "[batch]\nretries = 5\n")
    nested = project / "analysis" / "notebooks"
    nested.mkdir(parents=True)
    assert load(nested).batch.retries == 5


def test_precedence_override_env_project_user(project: Path, user_config: Path) -> None:
    write(user_config, "[batch]\nretries = 1\nworkers = 1\ntimeout = 1\nbackend = 'dask'\n")
    write(project / "altus.toml", "[batch]\nretries = 2\nworkers = 2\ntimeout = 2\n")
    environ = {**os.environ, "ALTUS_BATCH__RETRIES": "3", "ALTUS_BATCH__WORKERS": "3"}
    overrides = {"batch": {"retries": 4}}
    settings = load_settings(environ=environ, cwd=project, overrides=overrides)
    assert settings.batch == BatchSettings(backend="dask", workers=3, retries=4, timeout=2.0)


def test_none_override_means_not_given(project: Path) -> None:
    environ = {**os.environ, "ALTUS_BATCH__WORKERS": "6"}
    overrides = {"batch": {"workers": None, "store": None}}
    settings = load_settings(environ=environ, cwd=project, overrides=overrides)
    assert settings.batch.workers == 6


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3.5", 3.5),
        ("7", 7.0),
    ],
)
def test_env_numbers_are_parsed(project: Path, raw: str, expected: float) -> None:
    timeout = load(project, ALTUS_BATCH__TIMEOUT=raw).batch.timeout
    assert timeout == expected
    assert isinstance(timeout, float)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("slurm", "slurm"),
        ('"slurm"', "slurm"),
        ("2024", "2024"),
        ("file:///data/jobs", "file:///data/jobs"),
    ],
)
def test_env_text_stays_text(project: Path, raw: str, expected: str) -> None:
    assert load(project, ALTUS_BATCH__STORE=raw).batch.store == expected


def test_empty_env_variable_counts_as_unset(project: Path) -> None:
    write(project / "altus.toml", "[batch]\nretries = 5\n")
    assert load(project, ALTUS_BATCH__RETRIES="").batch.retries == 5


def test_env_variables_without_a_section_are_not_settings(project: Path) -> None:
    assert load(project, ALTUS_DEBUG="1").batch == BatchSettings()


def test_explicit_environ_replaces_the_process_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALTUS_BATCH__RETRIES", "9")
    settings = load_settings(environ={"HOME": str(project)}, cwd=project)
    assert settings.batch.retries == 2


def test_settings_are_frozen(project: Path) -> None:
    settings = load(project)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch.retries = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ALTUS_BATCH__RETRIES", "three", "ALTUS_BATCH__RETRIES: expected int, got str"),
        ("ALTUS_BATCH__RETRIES", "true", "ALTUS_BATCH__RETRIES: expected int, got bool"),
        ("ALTUS_BATCH__RETRIES", "-1", "ALTUS_BATCH__RETRIES: must be 0 or more"),
        ("ALTUS_BATCH__WORKERS", "0", "ALTUS_BATCH__WORKERS: must be 1 or more"),
        ("ALTUS_BATCH__TIMEOUT", "[1]", "ALTUS_BATCH__TIMEOUT: expected float, got list"),
        ("ALTUS_BATCH__COLOUR", "1", "ALTUS_BATCH__COLOUR: unknown key 'colour' in [batch]"),
        ("ALTUS_NOPE__RETRIES", "1", "ALTUS_NOPE__RETRIES: unknown section 'nope'"),
    ],
)
def test_bad_env_variable_is_named(project: Path, variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        load(project, **{variable: value})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[batch]\nretries = '3'\n", r"\[batch\] retries: expected int, got str"),
        ("[batch]\nworkerz = 3\n", r"\[batch\] workerz: unknown key 'workerz'"),
        ("[cluster]\n", r"\[cluster\]: unknown section 'cluster'"),
        ("retries = 3\n", r"'retries' must be inside a section"),
        ("[batch\nretries = 3\n", r"invalid TOML"),
    ],
)
def test_bad_project_file_is_named(project: Path, text: str, message: str) -> None:
    path = write(project / "altus.toml", text)
    with pytest.raises(ConfigError, match=message) as caught:
        load(project)
    assert str(caught.value).startswith(f"{path}: ")


def test_bad_user_file_is_named(project: Path, user_config: Path) -> None:
    write(user_config, "[batch]\nbackend = 3\n")
    message = f"{user_config}: [batch] backend: expected str, got int 3"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load(project)


def test_bad_override_is_named(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"^keyword override batch\.retries: expected int"):
        load_settings(environ=dict(os.environ), cwd=project, overrides={"batch": {"retries": 1.5}})


# -- values that validate but cannot work, and files that are not files ---------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "0", "1e300", "31536001"])
def test_a_timeout_that_no_task_can_use_is_refused(project: Path, value: str) -> None:
    with pytest.raises(
        ConfigError, match=r"^ALTUS_BATCH__TIMEOUT: must be more than 0 and at most"
    ):
        load(project, ALTUS_BATCH__TIMEOUT=value)


def test_a_timeout_of_up_to_a_year_is_kept(project: Path) -> None:
    assert load(project, ALTUS_BATCH__TIMEOUT="31536000").batch.timeout == 31536000.0


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e12])
def test_a_timeout_keyword_that_cannot_work_is_refused(project: Path, value: float) -> None:
    with pytest.raises(ConfigError, match=r"keyword override batch\.timeout: must be"):
        load_settings(cwd=project, overrides={"batch": {"timeout": value}})


def test_local_workers_far_above_the_cpus_warn(project: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    with pytest.warns(UserWarning, match=rf"batch.workers = {8 * cpus} .* on {cpus} CPU"):
        load(project, ALTUS_BATCH__WORKERS=str(8 * cpus))


def test_local_workers_up_to_four_per_cpu_or_a_cluster_do_not_warn(project: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(project, ALTUS_BATCH__WORKERS=str(4 * cpus))
        load(project, ALTUS_BATCH__WORKERS="300", ALTUS_BATCH__BACKEND="slurm")


def link_loop(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.name)


def dangling_link(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("missing.toml")


def folder(path: Path) -> None:
    path.mkdir(parents=True)


UNREADABLE = {
    "folder": (folder, "it is a folder"),
    "dangling": (dangling_link, "it is a link to missing.toml, which does not exist"),
    "loop": (link_loop, "too many levels of symbolic links"),
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_a_user_config_that_is_not_a_file_is_an_error(
    project: Path, user_config: Path, kind: str
) -> None:
    make, reason = UNREADABLE[kind]
    make(user_config)
    with pytest.raises(ConfigError) as caught:
        load(project)
    assert str(caught.value) == f"{user_config}: cannot read settings file: {reason}"


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_a_project_file_that_is_not_a_file_is_an_error(project: Path, kind: str) -> None:
    make, reason = UNREADABLE[kind]
    make(project / "altus.toml")
    nested = project / "src"
    nested.mkdir()
    with pytest.raises(ConfigError) as caught:
        load(nested)
    assert str(caught.value) == f"{project / 'altus.toml'}: cannot read settings file: {reason}"


def test_store_mode_defaults_to_private_and_can_be_group(project: Path) -> None:
    assert load(project).store.mode == "private"
    write(project / "altus.toml", '[store]\nmode = "group"\n')
    assert load(project).store.mode == "group"
    assert load(project, ALTUS_STORE__MODE="private").store.mode == "private"
