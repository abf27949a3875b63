"""Alembic environment: the URL comes from settings, or a connection handed over by the caller."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

import app.models  # noqa: F401 - registers every table on the metadata
from app.config import get_settings
from app.db import make_engine, metadata

config = context.config


# Replicas that start together must not migrate at the same time.
MIGRATION_LOCK = 0x7261_7070  # "rapp"


def _run(connection: Connection) -> None:
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()
    try:
        _migrate(connection)
    finally:
        if postgres:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            connection.commit()


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.attributes.get("url") or get_settings().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `rapport migrate`")
run_migrations_online()
