"""The platform database: migrations, SQLite pragmas, constraints, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from retailml.core.db import MIGRATIONS_DIR, SCHEMA_HEAD, DataVersion, IngestionRun, PlatformDB
from retailml.core.errors import ConfigError
from retailml.core.settings import Settings


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def ingestion_run(source_hash: str, run_id: str) -> IngestionRun:
    now = datetime.now(UTC)
    return IngestionRun(
        id=run_id,
        source_path="/data/online_retail.csv",
        source_hash=source_hash,
        file_format="csv",
        status="succeeded",
        started_at=now,
        finished_at=now,
        rows_read=10,
        silver_rows=8,
        quarantined_rows=1,
        duplicates_removed=1,
    )


def test_migrations_bring_a_fresh_database_to_the_head_revision(platform_db: PlatformDB) -> None:
    assert platform_db.current_revision() == head_revision()
    tables = set(inspect(platform_db.engine).get_table_names())
    assert {"ingestion_runs", "data_versions", "alembic_version"} <= tables


def test_schema_head_names_the_newest_migration() -> None:
    # A database at SCHEMA_HEAD is not handed to Alembic: a new migration must move it.
    assert head_revision() == SCHEMA_HEAD


def test_a_database_behind_the_head_is_upgraded(database_url: str) -> None:
    db = PlatformDB(database_url)
    try:
        db.migrate("0007")
        assert db.current_revision() == "0007"
        db.migrate()
        assert db.current_revision() == SCHEMA_HEAD
    finally:
        db.dispose()


def test_migrations_are_idempotent(platform_db: PlatformDB) -> None:
    platform_db.migrate()
    platform_db.migrate()
    assert platform_db.current_revision() == head_revision()


def test_an_unmigrated_database_has_no_revision(database_url: str) -> None:
    db = PlatformDB(database_url)
    try:
        assert db.current_revision() is None
    finally:
        db.dispose()


def test_sqlite_uses_wal_and_the_configured_busy_timeout(tmp_path: Path) -> None:
    db = PlatformDB(f"sqlite:///{tmp_path / 'nested' / 'platform.db'}", busy_timeout_s=7.5)
    try:
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 7500
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert db.dialect == "sqlite"
        assert (tmp_path / "nested" / "platform.db").exists()  # parent directory created
    finally:
        db.dispose()


def test_a_source_hash_can_be_ingested_only_once(platform_db: PlatformDB) -> None:
    with platform_db.session() as session:
        session.add(ingestion_run("a" * 64, "1" * 32))
    with pytest.raises(IntegrityError), platform_db.session() as session:
        session.add(ingestion_run("a" * 64, "2" * 32))
    with platform_db.session() as session:
        assert session.scalar(select(func.count()).select_from(IngestionRun)) == 1


def test_latest_data_version_returns_the_newest(platform_db: PlatformDB) -> None:
    assert platform_db.latest_data_version("silver.transactions") is None
    created = datetime.now(UTC)
    with platform_db.session() as session:
        session.add(DataVersion(table_name="silver.transactions", version="v1", row_count=1))
        session.add(
            DataVersion(
                table_name="silver.transactions",
                version="v2",
                parent_version="v1",
                row_count=2,
                created_at=created + timedelta(seconds=1),
            )
        )
        session.add(DataVersion(table_name="features.rfm", version="f1", row_count=5))
    latest = platform_db.latest_data_version("silver.transactions")
    assert latest is not None
    assert (latest.version, latest.parent_version, latest.row_count) == ("v2", "v1", 2)
    other = platform_db.latest_data_version("features.rfm")
    assert other is not None and other.version == "f1"


def test_a_table_version_is_recorded_once(platform_db: PlatformDB) -> None:
    with platform_db.session() as session:
        session.add(DataVersion(table_name="silver.transactions", version="v1", row_count=1))
    with pytest.raises(IntegrityError), platform_db.session() as session:
        session.add(DataVersion(table_name="silver.transactions", version="v1", row_count=1))


def test_from_settings_defaults_to_sqlite_in_the_workspace(settings: Settings) -> None:
    db = PlatformDB.from_settings(settings)
    try:
        assert db.dialect == "sqlite"
        assert (settings.home / "platform.db").exists()
        assert db.current_revision() == head_revision()
    finally:
        db.dispose()


def test_an_unreachable_postgresql_is_a_config_error_naming_the_setting() -> None:
    db = PlatformDB("postgresql+psycopg://postgres@127.0.0.1:1/retailml")
    try:
        with pytest.raises(
            ConfigError, match=r"reachable platform database.*RETAILML_DATABASE_URL"
        ):
            db.migrate()
    finally:
        db.dispose()


def test_migrations_match_the_models(platform_db: PlatformDB) -> None:
    """Alembic finds nothing to autogenerate: the migrations create exactly the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from retailml.core.db import Base

    with platform_db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
