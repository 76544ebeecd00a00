"""The contract every training estimator shares: declared parameters, fitted state, input frames.

Parameter constraints are declared once per estimator, as a class attribute
mapping each ``__init__`` argument to a :class:`Constraint`::

    _param_constraints = {
        "algorithm": one_of("kmeans", "dbscan", "hierarchical"),
        "n_clusters": integer(low=2),
        ...
    }

:meth:`ContractEstimator._validate_params` checks them all at the start of
``fit`` (never in ``__init__``, which only stores its arguments, so
``set_params`` and ``clone`` behave as in scikit-learn) and reports every bad
parameter in one :class:`~retailml.core.errors.ConfigError` (one line per
parameter, all at once) in one template, e.g. (one line, wrapped here)::

    The 'n_clusters' parameter of CustomerSegmenter must be an int >= 2.
    Got 1 instead. Fix: pass e.g. CustomerSegmenter(n_clusters=5).

The example in the fix is the parameter's default unless the constraint names
a better one. The class name comes from the estimator, so a subclass reports
itself. (This ``_validate_params`` replaces scikit-learn's method of that
name, which reads ``_parameter_constraints`` in scikit-learn's own format.)

The same base class gives every estimator the fitted check (``predict`` before
``fit`` raises :class:`~retailml.core.errors.StateError` "<ClassName> is not
fitted; call fit(...) first") and the input-frame check; :func:`resolve_columns`
and :func:`numeric_matrix` check feature columns, and :func:`thread_limit`
bounds native thread pools while an estimator computes.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from retailml.core.errors import ConfigError, DataValidationError, StateError, problem

__all__ = [
    "MAX_SEED",
    "Constraint",
    "ContractEstimator",
    "boolean",
    "column_names",
    "int_tuple",
    "integer",
    "numeric_matrix",
    "one_of",
    "optional",
    "real",
    "resolve_columns",
    "seed",
    "thread_limit",
]

FloatMatrix: TypeAlias = npt.NDArray[np.float64]

#: Largest seed accepted as ``random_state`` (NumPy's legacy seeding limit).
MAX_SEED = 2**32 - 1

_NO_EXAMPLE = object()


@dataclass(frozen=True)
class Constraint:
    """What values one parameter accepts.

    Attributes:
        accepts: True for a valid value.
        description: The accepted values as the end of "must be ...", e.g.
            ``"an int >= 2"``.
        example: A valid value shown in the fix; the parameter's default when
            left out.
        hint: Optional extra advice appended to the fix.
    """

    accepts: Callable[[object], bool]
    description: str
    example: object = _NO_EXAMPLE
    hint: str = ""


def _as_int(value: object) -> int | None:
    """The value as an int when it is an integer (a bool is not), else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        return int(value)
    return None


def _as_real(value: object) -> float | None:
    """The value as a float when it is a finite real number (a bool is not), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def _within(
    value: float | None, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    if value is None:
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


def one_of(*values: object, example: object = _NO_EXAMPLE) -> Constraint:
    """One of a fixed set of values, e.g. an algorithm name."""
    listed = ", ".join(repr(v) for v in values[:-1])
    described = f"one of {listed} or {values[-1]!r}" if len(values) > 1 else f"{values[0]!r}"
    return Constraint(
        lambda v: any(v == option and type(v) is type(option) for option in values),
        described,
        example,
    )


def integer(low: int | None = None, high: int | None = None) -> Constraint:
    """An int (not a bool) within inclusive bounds."""
    bounds = _bounds(low, high, False, False)
    return Constraint(
        lambda v: _within(_as_int(v), low, high, False, False),
        f"an int {bounds}".rstrip(),
    )


def real(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Constraint:
    """A finite real number (ints accepted, bools not) within bounds."""
    bounds = _bounds(low, high, low_open, high_open)
    return Constraint(
        lambda v: _within(_as_real(v), low, high, low_open, high_open),
        f"a float {bounds}".rstrip(),
    )


def boolean() -> Constraint:
    """True or False."""
    return Constraint(lambda v: isinstance(v, bool | np.bool_), "a bool")


def seed() -> Constraint:
    """A ``random_state``: None (not repeatable) or an int seed."""
    return Constraint(
        lambda v: v is None or _within(_as_int(v), 0, MAX_SEED, False, False),
        f"None or an int in [0, {MAX_SEED}]",
    )


def column_names(example: object = _NO_EXAMPLE) -> Constraint:
    """None (the estimator's default columns) or a non-empty list of distinct column names."""

    def accepts(value: object) -> bool:
        if value is None:
            return True
        if isinstance(value, str) or not isinstance(value, Sequence) or not value:
            return False
        return all(isinstance(v, str) and v for v in value) and len(set(value)) == len(value)

    return Constraint(accepts, "None or a non-empty list of distinct column names", example)


def int_tuple(low: int = 1, example: object = _NO_EXAMPLE) -> Constraint:
    """A non-empty tuple or list of ints >= ``low`` (layer sizes)."""

    def accepts(value: object) -> bool:
        return (
            isinstance(value, tuple | list)
            and len(value) > 0
            and all(_within(_as_int(v), low, None, False, False) for v in value)
        )

    return Constraint(accepts, f"a non-empty tuple of ints >= {low}", example)


def optional(constraint: Constraint) -> Constraint:
    """None or what ``constraint`` accepts."""
    return Constraint(
        lambda v: v is None or constraint.accepts(v),
        f"None or {constraint.description}",
        constraint.example,
        constraint.hint,
    )


@contextmanager
def thread_limit(n_jobs: int) -> Iterator[None]:
    """Bound the native thread pools (OpenMP, BLAS) to ``n_jobs`` threads within the block.

    PyTorch and scikit-learn each ship their own OpenMP runtime. Once both
    are loaded and each keeps a thread per core, their spinning workers
    starve each other: on 2 cores an 815-row KMeans took 7 s instead of
    0.04 s. Every estimator fits and predicts under this limit.
    """
    with threadpool_limits(limits=n_jobs):
        yield


class ContractEstimator(BaseEstimator):  # type: ignore[misc]  # scikit-learn has no type hints
    """Base of every training estimator: scikit-learn's ``get_params``/``set_params``/``clone``.

    Subclasses declare ``_param_constraints`` (one entry per ``__init__``
    argument), store their arguments unchanged in ``__init__``, call
    :meth:`_validate_params` first in ``fit`` and :meth:`_check_fitted` first
    in every method that needs a fitted model. Learned state ends in ``_``.
    """

    #: ``parameter name -> Constraint`` for every ``__init__`` argument.
    _param_constraints: ClassVar[Mapping[str, Constraint]] = {}

    def _validate_params(self) -> None:
        """Check every parameter against its declared constraint; report all problems at once.

        Raises:
            ConfigError: one line per invalid parameter, in the template of this module.
        """
        name = type(self).__name__
        params = self.get_params(deep=False)
        undeclared = sorted(set(params) - set(self._param_constraints))
        if undeclared:  # a programming error in the estimator, not a user mistake
            raise TypeError(f"{name} declares no constraint for {undeclared}")
        defaults = {
            key: p.default for key, p in inspect.signature(type(self).__init__).parameters.items()
        }
        problems = []
        for key, constraint in self._param_constraints.items():
            value = params[key]
            if constraint.accepts(value):
                continue
            example = defaults.get(key) if constraint.example is _NO_EXAMPLE else constraint.example
            hint = f" {constraint.hint}" if constraint.hint else ""
            problems.append(
                f"The {key!r} parameter of {name} must be {constraint.description}. "
                f"Got {value!r} instead. Fix: pass e.g. {name}({key}={example!r}).{hint}"
            )
        if len(problems) == 1:
            raise ConfigError(problems[0])
        if problems:
            body = "\n".join(f"  - {p}" for p in problems)
            raise ConfigError(f"{len(problems)} invalid parameters of {name}:\n{body}")

    def __sklearn_is_fitted__(self) -> bool:
        """True once ``fit`` has set learned state (scikit-learn's ``check_is_fitted`` asks)."""
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def _check_fitted(self) -> None:
        """Raise :class:`StateError` naming the class when ``fit`` has not run."""
        if not self.__sklearn_is_fitted__():
            raise StateError(f"{type(self).__name__} is not fitted; call fit(...) first")

    def _check_frame(self, X: object) -> pd.DataFrame:  # noqa: N803
        """The input as a non-empty DataFrame, or :class:`DataValidationError`."""
        name = type(self).__name__
        if not isinstance(X, pd.DataFrame):
            raise DataValidationError(
                problem(
                    "a pandas DataFrame with one row per sample and named columns",
                    f"{type(X).__name__}",
                    "wrap the data, e.g. pd.DataFrame(array, columns=[...])",
                    subject=name,
                )
            )
        if X.empty:
            raise DataValidationError(
                problem(
                    "at least one row and one column",
                    f"a frame of shape {X.shape}",
                    "pass the rows to fit or score",
                    subject=name,
                )
            )
        return X


def resolve_columns(
    frame: pd.DataFrame,
    requested: Sequence[str],
    *,
    owner: str,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Map requested names (aliases allowed) to columns of ``frame``, or fail listing the columns.

    A name that is a column is taken as is; otherwise an alias is followed.

    Raises:
        DataValidationError: naming every unknown name and the available columns.
    """
    aliases = aliases or {}
    resolved: list[str] = []
    unknown: list[str] = []
    for name in requested:
        column = name if name in frame.columns else aliases.get(name, name)
        (resolved if column in frame.columns else unknown).append(column)
    if unknown:
        alias_note = (
            f" (aliases: {', '.join(f'{k}={v}' for k, v in aliases.items())})" if aliases else ""
        )
        raise DataValidationError(
            problem(
                f"feature columns present in the data{alias_note}",
                f"unknown {', '.join(map(repr, unknown))}; available: "
                f"{', '.join(map(repr, map(str, frame.columns)))}",
                "choose features among the available columns or add the missing ones",
                subject=owner,
            )
        )
    if len(set(resolved)) != len(resolved):
        raise DataValidationError(
            problem(
                "each feature once",
                f"{list(requested)!r}, which names {resolved!r}",
                "drop the repeated feature (an alias and its column name count as one)",
                subject=owner,
            )
        )
    return resolved


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[str], *, owner: str) -> FloatMatrix:
    """The columns as a float64 matrix; every value numeric and finite.

    Booleans count as 0/1.

    Raises:
        DataValidationError: naming non-numeric columns or columns with missing or
            infinite values.
    """
    part = frame.loc[:, list(columns)]
    bad_type = [
        c
        for c in columns
        if not (pd.api.types.is_numeric_dtype(part[c]) or pd.api.types.is_bool_dtype(part[c]))
    ]
    if bad_type:
        raise DataValidationError(
            problem(
                "numeric feature columns",
                ", ".join(f"{c!r} ({part[c].dtype})" for c in bad_type),
                "choose numeric features or encode the others as numbers first",
                subject=owner,
            )
        )
    matrix = part.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(matrix)
    if not finite.all():
        counts = (~finite).sum(axis=0)
        listed = ", ".join(
            f"{c!r} ({int(n)} rows)" for c, n in zip(columns, counts, strict=True) if n
        )
        raise DataValidationError(
            problem(
                "finite values in every feature column",
                f"missing or infinite values in {listed}",
                "fill or drop those rows, or leave the columns out of the features",
                subject=owner,
            )
        )
    return matrix
