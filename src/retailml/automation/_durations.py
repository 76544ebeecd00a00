"""Ages on the command line and in policies: ``"30d"``, ``"12h"``, ``"2w"``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from retailml.core.errors import ConfigError, problem

_AGE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str | timedelta, *, subject: str = "age") -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` (or a timedelta) as a positive timedelta.

    Raises:
        ConfigError: for any other form, or a zero age.
    """
    if isinstance(text, timedelta):
        age = text
    else:
        match = _AGE.match(str(text))
        if match is None:
            raise ConfigError(
                problem(
                    "an age such as '30d', '12h', '90m' or '2w'",
                    repr(text),
                    "write a number followed by s, m, h, d or w",
                    subject=subject,
                )
            )
        age = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if age <= timedelta(0):
        raise ConfigError(problem("a positive age", repr(text), "pass e.g. '30d'", subject=subject))
    return age


def format_age(age: timedelta) -> str:
    """A short human form: ``"3d 4h"``, ``"5h 12m"``, ``"42s"``."""
    seconds = int(age.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"
