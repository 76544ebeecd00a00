"""Shared fixtures: an isolated workspace and the platform database on both backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from retailml.core.db import PlatformDB
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace

if TYPE_CHECKING:
    from retailml.governance.model_governance import ApprovalRequest

#: Admin connection to the PostgreSQL server the tests create databases on.
POSTGRES_ADMIN_URL = os.environ.get(
    "RETAILML_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def approve(settings: Settings, model_name: str, version: str, **kwargs: Any) -> ApprovalRequest:
    """A real, approved production request (see ``governance/approvals.py``).

    Prefer ``from governance.approvals import approve``: a ``conftest`` module name can be
    shadowed by a sub-directory's conftest (e.g. ``tests/registry/conftest.py``).
    """
    from governance.approvals import approve as approved

    return approved(settings, model_name, version, **kwargs)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for a fresh workspace under tmp_path; no retailml.yaml, no database URL."""
    for name in list(os.environ):
        if name.startswith("RETAILML_") and name != "RETAILML_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RETAILML_HOME", str(tmp_path / "workspace"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def workspace(settings: Settings) -> Workspace:
    """An initialised workspace."""
    ws = Workspace.from_settings(settings)
    ws.init()
    return ws


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the running PostgreSQL; fails (never skips) if it is down."""
    try:
        conn = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL!r} ({exc}); "
            "run 'make services' (scripts/ensure-services.sh) and retry"
        )
    yield conn
    conn.close()


@pytest.fixture
def postgres_url(postgres_admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"retailml_test_{uuid.uuid4().hex[:12]}"
    postgres_admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    postgres_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The platform database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'platform.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def platform_db(database_url: str) -> Iterator[PlatformDB]:
    """A migrated platform database on each backend."""
    db = PlatformDB(database_url)
    db.migrate()
    yield db
    db.dispose()
