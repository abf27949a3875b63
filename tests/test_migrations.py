"""Migrations go up and down on both databases, and match the models exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, inspect, text
from sqlmodel import Session

import app.models  # noqa: F401 - every table on the metadata
from app import migrate
from app.checkout import service as checkout
from app.checkout.models import Order
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


def _insert(conn: Connection, name: str, **values: object) -> int:
    """Insert a row at an old revision, filling the NOT NULL columns a test does not care about."""
    table = Table(name, MetaData(), autoload_with=conn)
    filler: dict[type, object] = {
        sa.Integer: 0,
        sa.BigInteger: 0,
        sa.String: "x",
        sa.JSON: {},
        sa.Boolean: False,
        sa.DateTime: datetime(2026, 11, 1, tzinfo=UTC),
        sa.Float: 0.0,
    }
    row = dict(values)
    for column in table.columns:
        if column.name in row or column.nullable or column.primary_key:
            continue
        if column.server_default is not None:
            continue
        row[column.name] = next((v for t, v in filler.items() if isinstance(column.type, t)), "x")
    inserted = conn.execute(table.insert().values(**row).returning(table.c.id))
    return int(inserted.scalar_one())


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_grants_migration_carries_orders_and_entitlements_up_and_down(
    empty_database_url: str,
) -> None:
    """0011: every entitlement becomes the grant of its order (ended when it was revoked), paid
    orders record their list price as charged; down again, the entitlements are untouched."""
    migrate.upgrade(empty_database_url, "0010")
    engine = make_engine(empty_database_url)
    paid_at = datetime(2026, 11, 2, tzinfo=UTC)
    with engine.begin() as conn:
        ebook = _insert(conn, "product", slug="ebook", kind="ebook", status="published")
        course = _insert(conn, "product", slug="course", kind="course", status="published")
        lena = _insert(conn, "user", email="lena@example.com", role="buyer", locale="en")
        kept = _insert(
            conn, "order", number="R-2026-00001", user_id=lena, product_id=ebook,
            provider="stripe", status="paid", amount=2900, currency="EUR",
            checkout_key="a" * 32, paid_at=paid_at,
        )  # fmt: skip
        refunded = _insert(
            conn, "order", number="R-2026-00002", user_id=lena, product_id=course,
            provider="stripe", status="refunded", amount=14900, currency="EUR",
            amount_refunded=14900, checkout_key="b" * 32, paid_at=paid_at,
        )  # fmt: skip
        pending = _insert(
            conn, "order", number="R-2026-00003", user_id=lena, product_id=course,
            provider="stripe", status="pending", amount=14900, currency="EUR",
            checkout_key="c" * 32,
        )  # fmt: skip
        _insert(conn, "entitlement", user_id=lena, product_id=ebook, order_id=kept)
        _insert(
            conn, "entitlement", user_id=lena, product_id=course, order_id=refunded,
            revoked_at=paid_at, revoke_reason="refunded",
        )  # fmt: skip
    engine.dispose()

    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    with engine.connect() as conn:
        grants = conn.execute(
            text(
                "SELECT order_id, user_id, product_id, ended_at IS NOT NULL, end_reason "
                "FROM access_grant ORDER BY order_id"
            )
        ).all()
        amounts = {
            int(r[0]): r[1]
            for r in conn.execute(text('SELECT id, amount_total FROM "order" ORDER BY id'))
        }
    assert [tuple(g) for g in grants] == [
        (kept, lena, ebook, False, None),
        (refunded, lena, course, True, "refunded"),
    ]
    assert amounts == {kept: 2900, refunded: 14900, pending: None}
    engine.dispose()

    # A refund after the upgrade ends the grant and the rollup the old way round.
    with Session(make_engine(empty_database_url)) as s:
        order = s.get(Order, kept)
        assert order is not None and order.payment_intent is None
        order.payment_intent = "pi_kept"
        s.add(order)
        s.flush()
        checkout.apply_refund(session=s, payment_intent="pi_kept", amount_refunded=2900, fully=True)
        s.commit()
        assert checkout.active_entitlement(session=s, user_id=lena, product_id=ebook) is None

    migrate.downgrade(empty_database_url, "0010")
    engine = make_engine(empty_database_url)
    tables = set(inspect(engine).get_table_names())
    assert "access_grant" not in tables and "order_refund" not in tables
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT product_id, revoked_at IS NOT NULL FROM entitlement ORDER BY product_id")
        ).all()
        order_columns = {c["name"] for c in inspect(conn).get_columns("order")}
    assert sorted(tuple(r) for r in rows) == sorted([(ebook, True), (course, True)])
    assert "amount_total" not in order_columns
    engine.dispose()
    migrate.upgrade(empty_database_url)
