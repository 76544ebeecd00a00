"""One exception family, messages in the expected / got / fix form."""

from __future__ import annotations

import retailml
from retailml.core.errors import (
    ConfigError,
    DataValidationError,
    InputFileError,
    NotFoundError,
    RetailMLError,
    StateError,
    problem,
)


def test_every_error_is_a_retailml_error() -> None:
    for cls in (ConfigError, DataValidationError, InputFileError, NotFoundError, StateError):
        assert issubclass(cls, RetailMLError)
    assert issubclass(InputFileError, DataValidationError)


def test_problem_reads_expected_got_fix() -> None:
    message = problem("a .csv file", "'x.json'", "convert it", subject="x.json")
    assert message == "x.json: expected a .csv file; got 'x.json'. Fix: convert it"


def test_package_exports_are_pinned() -> None:
    assert sorted(retailml.__all__) == sorted(
        [
            "ConfigError",
            "DataValidationError",
            "InputFileError",
            "NotFoundError",
            "RetailMLError",
            "StateError",
            "__version__",
        ]
    )
