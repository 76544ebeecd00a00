"""Alembic environment: runs on the connection :class:`PlatformDB` passes in."""

from __future__ import annotations

from alembic import context

from retailml.core.db import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - retailml always passes one
    raise RuntimeError("retailml migrations run through PlatformDB.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
