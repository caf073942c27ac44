"""Settings, resolved once from every layer into frozen objects.

Layers, strongest first:

1. keyword ``overrides`` given to :func:`load_settings` (``None`` means "not given",
   so a caller can pass its own keyword defaults straight through);
2. environment variables ``ALTUS_<SECTION>__<KEY>``, read as TOML scalars where
   they parse (``3``, ``2.5``, ``true``) and as plain strings otherwise; an empty
   variable counts as unset;
3. the project's ``altus.toml``, in the working directory or its nearest parent;
4. the user's ``$XDG_CONFIG_HOME/altus/config.toml`` (``~/.config/altus/config.toml``);
5. the defaults written on the dataclasses below.

Files hold one table per section::

    [batch]
    backend = "local"
    retries = 3

    [store]
    mode = "group"     # job records readable by the store folder's group; default "private"

Each layer is checked on its own, so an unknown key, a wrong type or a value
out of range is reported with the file or variable it came from; a settings
file that is there but cannot be read (a folder, a dangling link, a link loop)
is an error too, never silently skipped. Nothing here is cached: the caller
resolves settings once and passes the frozen result on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from altus.errors import ConfigError

__all__ = ["BatchSettings", "Paths", "Settings", "StoreSettings", "load_settings"]

ENV_PREFIX = "ALTUS_"
PROJECT_FILE = "altus.toml"
USER_FILE = "config.toml"
MAX_TIMEOUT = 365 * 24 * 3600.0
"""A task timeout longer than a year is no timeout; past ~1e9 s the OS refuses the alarm."""
WORKERS_PER_CPU = 4
"""More local workers than this per CPU earns a warning: tasks that wait on I/O gain from
a few per CPU, past that each worker is a process that only adds memory and switching."""
STORE_MODES = ("private", "group")


@dataclass(frozen=True)
class Paths:
    """Where altus keeps its own files on this machine (XDG base directories)."""

    config_dir: Path
    data_dir: Path
    state_dir: Path
    cache_dir: Path


@dataclass(frozen=True)
class BatchSettings:
    """Defaults for ``Knot``: which backend, which store, how many workers and retries."""

    backend: str = "local"
    store: str | None = None
    workers: int | None = None
    retries: int = 2
    timeout: float | None = None


@dataclass(frozen=True)
class StoreSettings:
    """Who may read what altus writes to a ``file://`` store (job records).

    ``private`` (the default): the owner only (files 0600, folders 0700), because
    results and captured output often hold secrets. ``group``: the group of the
    store's folder may read too (files 0640, setgid folders 2750); nobody else.
    """

    mode: str = "private"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved from all layers."""

    paths: Paths
    batch: BatchSettings
    store: StoreSettings = field(default_factory=StoreSettings)

    @property
    def default_store_url(self) -> str:
        """The store for job records when none is given: ``batch.store`` or the data dir."""
        if self.batch.store:
            return self.batch.store
        return "file://" + str(self.paths.data_dir / "jobs")


Layer = dict[str, dict[str, Any]]

_SECTIONS: Mapping[str, type[Any]] = {"batch": BatchSettings, "store": StoreSettings}

_RULES: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "batch.retries": (lambda value: value >= 0, "must be 0 or more"),
    "batch.workers": (lambda value: value >= 1, "must be 1 or more"),
    "batch.timeout": (
        lambda value: math.isfinite(value) and 0 < value <= MAX_TIMEOUT,
        f"must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds (a year);"
        " leave it unset for no timeout",
    ),
    "batch.backend": (lambda value: bool(value.strip()), "must not be empty"),
    "store.mode": (lambda value: value in STORE_MODES, f"must be one of {', '.join(STORE_MODES)}"),
}


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> Settings:
    """Resolve settings from every layer; raise ``ConfigError`` naming the bad source."""
    env = os.environ if environ is None else environ
    paths = resolve_paths(env)
    layers = [
        _file_layer(paths.config_dir / USER_FILE),
        _file_layer(find_project_file(Path.cwd() if cwd is None else cwd)),
        _env_layer(env),
        _override_layer(overrides or {}),
    ]
    merged = _merge(layers)
    batch = dataclasses.replace(BatchSettings(), **merged["batch"])
    _warn_about_workers(batch)
    return Settings(paths=paths, batch=batch, store=StoreSettings(**merged["store"]))


def resolve_paths(environ: Mapping[str, str]) -> Paths:
    """The XDG config, data, state and cache directories for altus, ignoring relative values."""
    home = Path(environ.get("HOME") or Path.home())
    return Paths(
        config_dir=_xdg_dir(environ, "XDG_CONFIG_HOME", home / ".config"),
        data_dir=_xdg_dir(environ, "XDG_DATA_HOME", home / ".local" / "share"),
        state_dir=_xdg_dir(environ, "XDG_STATE_HOME", home / ".local" / "state"),
        cache_dir=_xdg_dir(environ, "XDG_CACHE_HOME", home / ".cache"),
    )


def find_project_file(cwd: Path) -> Path | None:
    """The nearest ``altus.toml`` in ``cwd`` or one of its parents, whatever it is: one
    that is not a readable file is reported when read, not passed over."""
    start = cwd.absolute()
    for folder in (start, *start.parents):
        candidate = folder / PROJECT_FILE
        if os.path.lexists(candidate):
            return candidate
    return None


def _warn_about_workers(batch: BatchSettings) -> None:
    """Local workers are processes on this machine: far more than its CPUs is a mistake."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    if batch.backend == "local" and batch.workers and batch.workers > WORKERS_PER_CPU * cpus:
        warnings.warn(
            f"batch.workers = {batch.workers} starts that many processes on {cpus} CPU(s);"
            f" more than {WORKERS_PER_CPU} per CPU only adds memory and switching",
            UserWarning,
            stacklevel=3,
        )


def _xdg_dir(environ: Mapping[str, str], variable: str, fallback: Path) -> Path:
    # The XDG spec says a relative value is invalid and must be ignored.
    value = environ.get(variable, "")
    base = Path(value) if value and Path(value).is_absolute() else fallback
    return base / "altus"


def _file_layer(path: Path | None) -> Layer:
    if path is None or not os.path.lexists(path):
        return {}
    document = _read_toml(path)
    layer: Layer = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} must be inside a section such as [batch]")
        _section_type(section, f"{path}: [{section}]")
        for key, value in table.items():
            where = f"{path}: [{section}] {key}"
            layer.setdefault(section, {})[key] = _checked(section, key, value, where)
    return layer


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings file: {_unreadable(path, exc)}") from exc


def _unreadable(path: Path, exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    if isinstance(exc, FileNotFoundError) and path.is_symlink():
        return f"it is a link to {os.readlink(path)}, which does not exist"
    return (exc.strerror or str(exc)).lower()


def _env_layer(environ: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for variable, raw in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable or raw == "":
            continue
        section, _, key = variable.removeprefix(ENV_PREFIX).lower().partition("__")
        value = _env_value(raw, _field_type(section, key, variable))
        layer.setdefault(section, {})[key] = _checked(section, key, value, variable)
    return layer


def _env_value(raw: str, field_type: object) -> object:
    """A TOML scalar when ``raw`` is one; the raw string where the field takes text."""
    try:
        parsed: object = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw
    if str in _accepted_types(field_type) and not isinstance(parsed, str):
        return raw
    return parsed


def _override_layer(overrides: Mapping[str, Mapping[str, object]]) -> Layer:
    layer: Layer = {}
    for section, values in overrides.items():
        for key, value in values.items():
            if value is not None:
                where = f"keyword override {section}.{key}"
                layer.setdefault(section, {})[key] = _checked(section, key, value, where)
    return layer


def _merge(layers: list[Layer]) -> Layer:
    """Later layers win, key by key."""
    merged: Layer = {section: {} for section in _SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            merged[section].update(values)
    return merged


def _checked(section: str, key: str, value: object, where: str) -> object:
    """``value`` converted to the field's type, or ``ConfigError`` naming ``where``."""
    value = _coerce(value, _field_type(section, key, where), where)
    rule = _RULES.get(f"{section}.{key}")
    if value is not None and rule is not None and not rule[0](value):
        raise ConfigError(f"{where}: {rule[1]}, got {value!r}")
    return value


def _section_type(section: str, where: str) -> type[Any]:
    if section not in _SECTIONS:
        known = ", ".join(sorted(_SECTIONS))
        raise ConfigError(f"{where}: unknown section {section!r} (known: {known})")
    return _SECTIONS[section]


def _field_type(section: str, key: str, where: str) -> object:
    hints = typing.get_type_hints(_section_type(section, where))
    if key not in hints:
        known = ", ".join(sorted(hints))
        raise ConfigError(f"{where}: unknown key {key!r} in [{section}] (known: {known})")
    return hints[key]


def _coerce(value: object, field_type: object, where: str) -> object:
    accepted = _accepted_types(field_type)
    # bool is an int subclass, but ``retries = true`` is a mistake, not 1.
    is_bool = isinstance(value, bool)
    if isinstance(value, accepted) and (bool in accepted or not is_bool):
        return value
    if float in accepted and isinstance(value, int) and not is_bool:
        return float(value)
    expected = " or ".join(kind.__name__ for kind in accepted if kind is not type(None))
    raise ConfigError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def _accepted_types(field_type: object) -> tuple[type, ...]:
    members = typing.get_args(field_type) or (field_type,)
    return tuple(member for member in members if isinstance(member, type))
