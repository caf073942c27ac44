"""Options and parameter types that several command groups share."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

__all__ = ["Duration", "json_option"]

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw]?)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(
        command
    )


class Duration(click.ParamType[timedelta]):
    """``45s``, ``90m``, ``12h``, ``30d`` or ``2w`` as a timedelta; a bare ``0`` is zero."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value).strip().lower())
        if match is None or (not match["unit"] and float(match["amount"]) != 0):
            self.fail(f"{value!r} is not a duration such as 90s, 30m, 2h or 30d", param, ctx)
        return timedelta(**{_UNITS[match["unit"] or "s"]: float(match["amount"])})
