"""The retailml exception hierarchy.

Every error retailml raises on purpose derives from :class:`RetailMLError`;
errors from third-party libraries are translated at the boundary with
``raise ... from exc`` so callers catch one family::

    RetailMLError
     ├── ConfigError           settings or a configuration file are invalid
     ├── DataValidationError   input data does not have the expected shape or values
     │    └── InputFileError   a file cannot be read as the expected kind of input
     ├── NotFoundError         a named thing (table, model, run, file) does not exist
     └── StateError            the operation conflicts with the current platform state

Messages follow one form: what was expected, what was got (``!r``), and how
to fix it. :func:`problem` builds that form so every message reads alike.
"""

from __future__ import annotations


def problem(expected: str, got: str, fix: str, *, subject: str | None = None) -> str:
    """Compose an error message in the expected / got / how-to-fix form.

    Args:
        expected: What retailml needed.
        got: What it found instead (quote values with ``!r``).
        fix: What the user can do about it.
        subject: The file, setting or object the problem is about.

    Returns:
        One message, e.g. ``"data.csv: expected ...; got ...; fix: ..."``.
    """
    head = f"{subject}: " if subject else ""
    return f"{head}expected {expected}; got {got}. Fix: {fix}"


class RetailMLError(Exception):
    """Base class of every error retailml raises on purpose."""


class ConfigError(RetailMLError):
    """Settings or a configuration file are invalid."""


class DataValidationError(RetailMLError):
    """Input data does not have the expected shape or values."""


class InputFileError(DataValidationError):
    """A file cannot be read as the expected kind of input."""


class NotFoundError(RetailMLError):
    """A named table, model, run or file does not exist."""


class StateError(RetailMLError):
    """The operation conflicts with the current platform state."""
