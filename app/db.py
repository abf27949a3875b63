"""Database engine, naming convention and the request-scoped session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlmodel import Session, SQLModel

# Stable constraint names make Alembic revisions identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_dsn(url: str | URL) -> str:
    """The connection string libpq takes, for psycopg used without SQLAlchemy."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for SQLite (file, WAL, foreign keys) or PostgreSQL (psycopg 3)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            from pathlib import Path

            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("pool_size", 40)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    # As many connections as the thread pool has threads (40): fewer means connections are
    # opened and closed per request under load.
    kwargs.setdefault("pool_size", 40)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commit when the handler succeeds, roll back when it raises."""
    with Session(request.app.state.engine) as session:
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
