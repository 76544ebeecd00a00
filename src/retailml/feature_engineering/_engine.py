"""What the pipeline asks of a feature engine, and the registry of engines.

An engine runs the feature definitions' SQL over the silver Parquet parts and
writes each result as partitioned Parquet into a directory the pipeline
chooses; it never hands whole tables to Python. DuckDB is the embedded
default; the Spark engine implements the same protocol over the same SQL
(transpiled with sqlglot).

An engine may also offer :class:`MonthlyWriter`: computing a feature set
whose rows each come from one calendar month of transactions
(:attr:`~retailml.feature_engineering._definitions.FeatureSet.chunkable_by`)
a few months at a time, which bounds the memory its aggregations hold.

An engine may compute several feature sets at once: its
:attr:`EngineSpec.sessions` splits the ``engine_options`` into one set of
options per session, and the pipeline opens that many sessions and hands each
the next set to compute, the costliest first
(:attr:`~retailml.feature_engineering._definitions.FeatureSet.relative_cost`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable


class FeatureEngine(Protocol):
    """A session that computes feature sets; closed when the ``with`` block ends."""

    name: str

    def __enter__(self) -> FeatureEngine: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def add_relations(self, names: Sequence[str]) -> None:
        """Make dimension relations (``dim_customers``, ``dim_dates``, ...) readable by SQL."""

    def write(self, sql: str, directory: Path, partitioning: Sequence[str]) -> int:
        """Run ``sql`` and write its rows under ``directory`` (an existing empty directory).

        Returns:
            The number of rows written.
        """


@runtime_checkable
class MonthlyWriter(Protocol):
    """An engine that can compute a month-chunkable feature set a time window at a time."""

    def write_by_month(self, sql: str, directory: Path, partitioning: Sequence[str]) -> int:
        """Like :meth:`FeatureEngine.write`, for SQL whose every row comes from one month.

        The caller guarantees that each output row is computed from the
        transactions of one calendar month of ``invoice_date`` and carries
        that month as its ``year`` and ``month``. The engine may then run the
        SQL over windows of whole months and write each window's rows as
        they come; the files hold the same rows as :meth:`FeatureEngine.write`
        would write.

        Returns:
            The number of rows written.
        """


@runtime_checkable
class Interruptible(Protocol):
    """An engine whose running query another thread may cancel."""

    def interrupt(self) -> None:
        """Cancel the query running now (if any); the engine stays usable."""


#: Builds an engine over the silver parts, with a scratch directory and the
#: validated ``engine_options``.
EngineFactory = Callable[[Sequence[Path], Path, Mapping[str, Any]], FeatureEngine]


def _no_problems(_options: Mapping[str, Any]) -> list[str]:
    return []


def _one_session(options: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [options]


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine.

    Attributes:
        factory: Creates an engine session.
        options: Option name -> (type, description) accepted in ``engine_options``.
        check: Problems with option values beyond their types (one line each),
            reported with the rest of the configuration's problems.
        sessions: The options of each session that computes feature sets at
            the same time as the others (one session, the options as given,
            unless the engine says otherwise).
    """

    factory: EngineFactory
    options: Mapping[str, tuple[type, str]]
    check: Callable[[Mapping[str, Any]], list[str]] = _no_problems
    sessions: Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]] = _one_session


def engines() -> dict[str, EngineSpec]:
    """Every available engine, by name (``"duckdb"``, ``"spark"``)."""
    from retailml.feature_engineering import _duckdb_engine, _spark_engine

    return {
        "duckdb": EngineSpec(
            _duckdb_engine.DuckDBEngine,
            _duckdb_engine.OPTIONS,
            _duckdb_engine.check_options,
            _duckdb_engine.session_options,
        ),
        "spark": EngineSpec(
            _spark_engine.SparkEngine, _spark_engine.OPTIONS, _spark_engine.check_options
        ),
    }
