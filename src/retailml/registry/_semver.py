"""Semantic versions (``major.minor.patch`` with an optional pre-release) and their order.

Precedence follows semver.org, section 11: numeric fields compare as
numbers; a pre-release sorts before its release (``1.2.0-rc.1 < 1.2.0``);
pre-release identifiers compare field by field, numbers below words, and a
shorter list of equal fields sorts first. Build metadata (``+build``) does
not change precedence, so it is refused rather than silently ignored.
"""

from __future__ import annotations

import re
from typing import Final

from retailml.core.errors import ConfigError, problem

_IDENT: Final = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
SEMVER: Final = re.compile(
    rf"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-({_IDENT}(?:\.{_IDENT})*))?$"
)

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def is_semver(text: object) -> bool:
    """Whether ``text`` is a valid semantic version string."""
    return isinstance(text, str) and SEMVER.match(text) is not None


def parse_semver(text: object) -> SemverKey:
    """The sort key of a semantic version.

    Raises:
        ConfigError: when ``text`` is not ``major.minor.patch[-pre.release]``.
    """
    match = SEMVER.match(text) if isinstance(text, str) else None
    if match is None:
        if isinstance(text, str) and text[:1] in {"v", "V"} and is_semver(text[1:]):
            fix = f"drop the leading {text[0]!r}: model_version={text[1:]!r}"
        elif isinstance(text, str) and "+" in text:
            fix = "drop the build metadata ('+...'); it does not order versions"
        else:
            fix = "pass e.g. model_version='1.2.0' or '1.3.0-rc.1'"
        raise ConfigError(
            problem(
                "a semantic version major.minor.patch[-pre.release] without leading zeros",
                repr(text),
                fix,
                subject="model_version",
            )
        )
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    fields = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
    )
    return int(major), int(minor), int(patch), 0, fields
