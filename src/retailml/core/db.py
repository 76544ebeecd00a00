"""The platform database: SQLAlchemy 2 models and the engine that holds them.

Platform state (ingestion runs and data versions today; deployments, A/B
tests, approvals, audit, alerts, jobs and the prediction log later) lives in
one relational database: a SQLite file in the workspace by default (WAL mode,
busy timeout), PostgreSQL when ``RETAILML_DATABASE_URL`` names one. The
schema is owned by Alembic migrations in ``retailml/core/migrations``;
:meth:`PlatformDB.migrate` brings any database to the latest revision.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, overload

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from retailml.core.errors import ConfigError, problem
from retailml.core.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: The newest migration's revision. A database already there is not handed to
#: Alembic, whose import alone costs more than most commands take
#: (``tests/core/test_db.py`` checks that this is Alembic's head).
SCHEMA_HEAD = "0008"
#: PostgreSQL advisory-lock key that serialises migrations ("rtml" in ASCII).
_LOCK_KEY = 0x72746D6C


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the platform's only clock)."""
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands them back naive; they are UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    """A new random identifier (32 hex characters)."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base of every platform table."""


class IngestionRun(Base):
    """One file ingested into bronze, silver and quarantine.

    A source file is ingested once: ``source_hash`` is unique, so re-ingesting
    the same bytes changes nothing, even from two processes at once.
    """

    __tablename__ = "ingestion_runs"
    __table_args__ = (UniqueConstraint("source_hash", name="uq_ingestion_runs_source_hash"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source_path: Mapped[str] = mapped_column(String(4096))
    source_hash: Mapped[str] = mapped_column(String(64))
    file_format: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="succeeded")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows_read: Mapped[int] = mapped_column(Integer)
    silver_rows: Mapped[int] = mapped_column(Integer)
    quarantined_rows: Mapped[int] = mapped_column(Integer)
    duplicates_removed: Mapped[int] = mapped_column(Integer)
    report_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)


class DataVersion(Base):
    """A version of a workspace table: what it contained after a change.

    ``version`` is a content-derived identifier (a digest of the table's
    parts), so later stages can record exactly which data they read.
    """

    __tablename__ = "data_versions"
    __table_args__ = (UniqueConstraint("table_name", "version", name="uq_data_versions_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[str] = mapped_column(String(64))
    parent_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    row_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ingestion_run_id: Mapped[str | None] = mapped_column(
        ForeignKey("ingestion_runs.id", ondelete="SET NULL"), nullable=True
    )


def _sqlite_pragmas(busy_timeout_s: float) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


class PlatformDB:
    """A connection to the platform database.

    Args:
        url: SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        busy_timeout_s: How long a SQLite writer waits for a lock.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        if url.startswith("sqlite"):
            database = url.split("///", 1)[-1]
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": busy_timeout_s}, future=True
            )
            event.listen(self.engine, "connect", _sqlite_pragmas(busy_timeout_s))
        else:
            self.engine = create_engine(url, pool_pre_ping=True, future=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, migrate: bool = True) -> PlatformDB:
        """Open the database the settings name, migrated to the latest schema."""
        settings = settings or get_settings()
        db = cls(settings.resolved_database_url, busy_timeout_s=settings.db_busy_timeout_s)
        if migrate:
            db.migrate()
        return db

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema with Alembic (idempotent, safe from several processes).

        Concurrent first runs take turns: PostgreSQL through a transaction-scoped
        advisory lock, SQLite through a lock file beside the database.
        """
        self.check_connection()
        if revision == "head" and self.current_revision() == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._migration_lock(), self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            yield
            return
        import fcntl

        lock_path = Path(f"{database}.migrate.lock")
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def check_connection(self) -> None:
        """Connect once, translating an unreachable server into a ConfigError."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise ConfigError(
                problem(
                    "a reachable platform database",
                    f"{self.engine.url.render_as_string(hide_password=True)!r} "
                    f"failing with {exc.orig!r}",
                    "start the database server or correct RETAILML_DATABASE_URL",
                    subject="platform database",
                )
            ) from exc

    def current_revision(self) -> str | None:
        """The Alembic revision the database is at, or None before any migration."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def latest_data_version(self, table_name: str) -> DataVersion | None:
        """The newest recorded version of a table, or None."""
        with self._sessions() as session:
            return session.scalars(
                select(DataVersion)
                .where(DataVersion.table_name == table_name)
                .order_by(DataVersion.id.desc())
                .limit(1)
            ).first()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


class UsesPlatformDB:
    """Mixin for objects that use the platform database and can be used in ``with``.

    The database is the one given to the constructor (shared, never closed
    here) or one opened from ``settings`` on first use and disposed by
    :meth:`close`. Subclasses call :meth:`_use_db` in ``__init__`` and extend
    :meth:`close` for anything else they own.
    """

    settings: Settings
    _db: PlatformDB | None
    _owns_db: bool

    def _use_db(self, settings: Settings, db: PlatformDB | None) -> None:
        self.settings = settings
        self._db = db
        self._owns_db = db is None

    @property
    def db(self) -> PlatformDB:
        """The platform database (opened and migrated on first use)."""
        if self._db is None:
            self._db = PlatformDB.from_settings(self.settings)
        return self._db

    def close(self) -> None:
        """Release the database connections this object opened itself."""
        if self._db is not None and self._owns_db:
            self._db.dispose()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FeatureBuild(Base):
    """One build of a feature-set version: its lineage from silver data to features.

    A row is written for every version the feature pipeline publishes
    (``status="published"``) and for every version validation stopped
    (``status="rejected"``, no ``output_path``). Forcing a rebuild of the same
    version adds a row; reusing a published version adds none.
    """

    __tablename__ = "feature_builds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    feature_set: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[str] = mapped_column(String(64))
    input_table: Mapped[str] = mapped_column(String(255))
    input_data_version: Mapped[str] = mapped_column(String(128))
    transformation: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    engine: Mapped[str] = mapped_column(String(32))
    output_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    row_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


from retailml.core import db_ab as _db_ab  # noqa: E402,F401
from retailml.core import db_deploy as _db_deploy  # noqa: E402,F401
from retailml.core import db_governance as _db_governance  # noqa: E402,F401
from retailml.core import db_jobs as _db_jobs  # noqa: E402,F401
from retailml.core import db_monitoring as _db_monitoring  # noqa: E402,F401
from retailml.core import db_registry as _db_registry  # noqa: E402,F401
