"""Data freshness: how new the workspace's data, features and production models' inputs are.

Three kinds of input are checked:

* **silver transactions**: the newest transaction (``invoice_date``) and the
  latest ingestion. *Stale* when nothing was ingested for ``max_age`` (or,
  with ``max_event_age``, when the newest transaction is older than that);
  *missing* before the first ingestion.
* **feature sets** (each published one): the newest row of its timestamp
  column and when it was built. *Behind* when built from an older silver
  version than the current one (rebuild it); event ages as for silver.
* **production models' training data** (a production alias or an active
  production deployment): the silver and feature-set versions the serving
  version's MLflow run trained on. *Outdated* when newer silver data exists.

Silver and feature sets decide :attr:`FreshnessReport.stale`: a retraining
script stops on them, because training on them would not use new data.
Outdated training data of a production model does not: it is the reason to
retrain, and is reported so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import duckdb
from sqlalchemy import func, select

from retailml.automation._durations import format_age
from retailml.core.db import DataVersion, IngestionRun, PlatformDB, as_utc
from retailml.core.db_deploy import Deployment as DeploymentRow
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace
from retailml.data.ingest import SILVER_TABLE
from retailml.feature_engineering._versioning import Manifest, latest_version
from retailml.registry.model_registry import ModelRegistry

#: Statuses that make the report stale.
BLOCKING: Final = ("stale", "missing", "behind")
_DATA_VERSION_TAG: Final = "retailml.data_version"
_FEATURE_SETS_TAG: Final = "retailml.feature_sets"


@dataclass(frozen=True)
class FreshnessItem:
    """The freshness of one input.

    Attributes:
        kind: ``silver``, ``feature_set`` or ``model`` (a production model's training data).
        name: The table, feature set or model.
        version: The data version, feature-set version or model version.
        newest_event: The newest event time in the data (transaction time), if known.
        ingested_at: When the data arrived: the latest ingestion (silver), the
            build (feature set), the ingestion of the trained-on data (model).
        status: ``fresh``, ``stale``, ``missing``, ``behind`` (silver and
            feature sets); ``current``, ``outdated`` or ``unknown`` (models).
        detail: What the status means and how to fix it.
        event_age: ``now - newest_event``.
        ingestion_age: ``now - ingested_at``.
    """

    kind: str
    name: str
    version: str | None
    newest_event: datetime | None
    ingested_at: datetime | None
    status: str
    detail: str
    event_age: timedelta | None = None
    ingestion_age: timedelta | None = None

    @property
    def blocking(self) -> bool:
        """Whether this item makes the report stale."""
        return self.status in BLOCKING

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (times ISO 8601, ages in seconds)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "newest_event": self.newest_event.isoformat() if self.newest_event else None,
            "ingested_at": self.ingested_at.isoformat() if self.ingested_at else None,
            "event_age_s": self.event_age.total_seconds() if self.event_age else None,
            "ingestion_age_s": self.ingestion_age.total_seconds() if self.ingestion_age else None,
            "status": self.status,
            "blocking": self.blocking,
            "detail": self.detail,
        }


@dataclass
class FreshnessReport:
    """The freshness of every input; :attr:`stale` when a retrain should not start."""

    now: datetime
    max_age: timedelta
    max_event_age: timedelta | None
    items: list[FreshnessItem] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        """Whether silver data or a feature set is stale, missing or behind."""
        return any(item.blocking for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "now": self.now.isoformat(),
            "max_age_s": self.max_age.total_seconds(),
            "max_event_age_s": self.max_event_age.total_seconds() if self.max_event_age else None,
            "stale": self.stale,
            "items": [item.to_dict() for item in self.items],
        }

    def summary(self) -> str:
        """One line verdict."""
        blocking = [f"{i.kind} {i.name} ({i.status})" for i in self.items if i.blocking]
        if blocking:
            return "STALE: " + ", ".join(blocking)
        return (
            f"FRESH: {len(self.items)} inputs checked, "
            f"data ingested within {format_age(self.max_age)}"
        )


def _newest(files: list[Path], column: str) -> datetime | None:
    """``max(column)`` over Parquet files (DuckDB reads the row-group statistics)."""
    if not files:
        return None
    with duckdb.connect() as con:
        row = con.execute(
            f'SELECT max("{column}") FROM read_parquet(?, hive_partitioning = true)',
            [[str(f) for f in files]],
        ).fetchone()
    value = row[0] if row else None
    if isinstance(value, datetime):
        return as_utc(value)
    if value is not None and hasattr(value, "isoformat"):  # a calendar date
        return datetime.fromisoformat(value.isoformat()).replace(tzinfo=UTC)
    return None


def _judge(
    newest_event: datetime | None,
    arrived: datetime | None,
    now: datetime,
    max_age: timedelta,
    max_event_age: timedelta | None,
) -> tuple[str, list[str], timedelta | None, timedelta | None]:
    event_age = now - newest_event if newest_event else None
    arrival_age = now - arrived if arrived else None
    problems = []
    if arrival_age is not None and arrival_age > max_age:
        problems.append(f"nothing new for {format_age(arrival_age)} (limit {format_age(max_age)})")
    if max_event_age is not None and event_age is not None and event_age > max_event_age:
        problems.append(
            f"newest event {format_age(event_age)} old (limit {format_age(max_event_age)})"
        )
    return ("stale" if problems else "fresh"), problems, event_age, arrival_age


def _silver(
    workspace: Workspace,
    db: PlatformDB,
    now: datetime,
    max_age: timedelta,
    max_event_age: timedelta | None,
) -> FreshnessItem:
    latest = db.latest_data_version(SILVER_TABLE)
    with db.session() as session:
        ingested = session.scalar(
            select(func.max(IngestionRun.finished_at)).where(IngestionRun.status == "succeeded")
        )
    parts = (
        sorted(workspace.transactions.glob("part-*.parquet"))
        if workspace.transactions.is_dir()
        else []
    )
    if latest is None or not parts:
        return FreshnessItem(
            "silver",
            SILVER_TABLE,
            None,
            None,
            None,
            "missing",
            "no silver transactions; ingest data: retailml data ingest PATH",
        )
    newest = _newest(parts, "invoice_date")
    arrived = as_utc(ingested) or as_utc(latest.created_at)
    status, problems, event_age, age = _judge(newest, arrived, now, max_age, max_event_age)
    detail = (
        "; ".join(problems) + "; ingest the new transactions: retailml data ingest PATH"
        if problems
        else f"{latest.row_count:,} rows, last ingested {format_age(age or timedelta())} ago"
    )
    return FreshnessItem(
        "silver", SILVER_TABLE, latest.version, newest, arrived, status, detail, event_age, age
    )


def _feature_sets(
    workspace: Workspace,
    current: str | None,
    now: datetime,
    max_age: timedelta,
    max_event_age: timedelta | None,
) -> list[FreshnessItem]:
    items = []
    root = workspace.features
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        version = latest_version(directory) if directory.is_dir() else None
        if version is None:
            continue
        manifest = Manifest.read(directory / version)
        built = as_utc(datetime.fromisoformat(manifest.created_at))
        newest = _newest(
            sorted((directory / version).rglob("*.parquet")), manifest.timestamp_column
        )
        # A feature set is as fresh as the silver data it was built from: only
        # event ages and being behind silver count, not the age of the build.
        status, problems, event_age, age = _judge(newest, None, now, max_age, max_event_age)
        if (
            manifest.input_table == SILVER_TABLE
            and current
            and manifest.input_data_version != current
        ):
            status = "behind"
            problems.insert(
                0,
                f"built from silver {manifest.input_data_version[:12]}, silver is now "
                f"{current[:12]}; rebuild it: retailml features build",
            )
        age = now - built if built else None
        detail = "; ".join(problems) or (
            f"{manifest.row_count:,} rows from the current silver version"
        )
        items.append(
            FreshnessItem(
                "feature_set",
                directory.name,
                version,
                newest,
                built,
                status,
                detail,
                event_age,
                age,
            )
        )
    return items


def _production_versions(registry: ModelRegistry) -> dict[str, str]:
    """``model -> version`` serving production (alias, or an active production deployment)."""
    serving = {
        model.name: model.aliases["production"]
        for model in registry.list_models()
        if "production" in model.aliases
    }
    with registry.db.session() as session:
        for row in session.scalars(
            select(DeploymentRow).where(
                DeploymentRow.environment == "production", DeploymentRow.status == "active"
            )
        ):
            serving.setdefault(row.model_name, row.version)
    return serving


def _models(
    registry: ModelRegistry,
    workspace: Workspace,
    db: PlatformDB,
    current: str | None,
    now: datetime,
) -> list[FreshnessItem]:
    items = []
    for name, semver in sorted(_production_versions(registry).items()):
        version = registry.get_model_version(name, semver)
        tags: dict[str, str] = {}
        if version.run_id:
            tags = dict(registry.client.get_run(version.run_id).data.tags)
        data_version = tags.get(_DATA_VERSION_TAG)
        feature_sets: dict[str, str] = json.loads(tags.get(_FEATURE_SETS_TAG) or "{}")
        newest: datetime | None = None
        for feature_set, feature_version in feature_sets.items():
            directory = workspace.features / feature_set / feature_version
            if (directory / "_manifest.json").is_file():
                column = Manifest.read(directory).timestamp_column
                found = _newest(sorted(directory.rglob("*.parquet")), column)
                if found and (newest is None or found > newest):
                    newest = found
        if data_version is None:
            items.append(
                FreshnessItem(
                    "model",
                    name,
                    semver,
                    newest,
                    None,
                    "unknown",
                    "its training run recorded no silver data version "
                    "(trained on a DataFrame or a file)",
                    now - newest if newest else None,
                )
            )
            continue
        with db.session() as session:
            row = session.scalars(
                select(DataVersion).where(
                    DataVersion.table_name == SILVER_TABLE, DataVersion.version == data_version
                )
            ).first()
            newer = 0
            if row is not None:
                newer = int(
                    session.scalar(
                        select(func.count(DataVersion.id)).where(
                            DataVersion.table_name == SILVER_TABLE, DataVersion.id > row.id
                        )
                    )
                    or 0
                )
        arrived = as_utc(row.created_at) if row is not None else None
        if data_version == current:
            status, detail = "current", "trained on the current silver data"
        else:
            status = "outdated"
            detail = (
                f"trained on silver {data_version[:12]}; {newer} newer ingestion(s) since: "
                "retrain it (retailml retrain)"
                if row is not None
                else f"trained on silver {data_version[:12]}, unknown to this workspace"
            )
        items.append(
            FreshnessItem(
                "model",
                name,
                semver,
                newest,
                arrived,
                status,
                detail,
                now - newest if newest else None,
                now - arrived if arrived else None,
            )
        )
    return items


def check_freshness(
    max_age: timedelta = timedelta(days=2),
    *,
    max_event_age: timedelta | None = None,
    models: bool = True,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> FreshnessReport:
    """How fresh the workspace's silver data, feature sets and production models' inputs are.

    Args:
        max_age: Silver data is stale when nothing was ingested for this long.
        max_event_age: Also stale when the newest transaction (or feature row)
            is older than this; None checks arrival only (sample data is old).
        models: Also report production models' training data.
        settings: retailml settings (default the process settings).
        now: The time ages are measured from (default the current time).

    Returns:
        A :class:`FreshnessReport`; ``report.stale`` tells a script to stop.
    """
    settings = settings or get_settings()
    now = as_utc(now) or datetime.now(UTC)
    workspace = Workspace.from_settings(settings)
    report = FreshnessReport(now=now, max_age=max_age, max_event_age=max_event_age)
    db = PlatformDB.from_settings(settings)
    try:
        silver = _silver(workspace, db, now, max_age, max_event_age)
        report.items.append(silver)
        report.items.extend(_feature_sets(workspace, silver.version, now, max_age, max_event_age))
        if models:
            with ModelRegistry(settings) as registry:
                report.items.extend(_models(registry, workspace, db, silver.version, now))
    finally:
        db.dispose()
    return report
