"""Migrations go up and down on both databases, and match the models exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import app.models  # noqa: F401 - every table on the metadata
from app import migrate
from app.db import make_engine, metadata

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"product", "price", "module", "lesson", "asset", "user"} <= tables
    engine.dispose()
    migrate.downgrade(empty_database_url, "base")
    engine = make_engine(empty_database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    migrate.upgrade(empty_database_url)


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_models_and_migrations_do_not_drift(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; add an Alembic revision: {diff}"
