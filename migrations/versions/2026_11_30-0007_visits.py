"""visits, the buyer funnel rollup with its triggers, and the dashboard's indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

`buyer_funnel` holds one row per buyer (first paid order, source, company, engaged, first
inquiry, first won inquiry). On PostgreSQL, triggers on `order`, `inquiry`, `buyer_engagement`
and `user` keep it current in the transaction that changes those tables, whichever code writes
them. SQLite gets the table but no triggers: Alembic's batch mode copies and drops a table to
alter it, which drops its triggers and breaks those that name it; the embedded database is
small, and the dashboard rebuilds the table when it is opened there (app/admin/service.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The buyer's row, made again from the tables it summarizes: {uid} is the user's id.
# The same definition as app/admin/service.py rebuild_funnel(); tests compare the two.
REFRESH = """
DELETE FROM buyer_funnel WHERE user_id = {uid};
INSERT INTO buyer_funnel (user_id, first_paid_at, product_id, utm_source, referrer, company_id,
                          engaged_at, inquired_at, won_at)
SELECT o.user_id, o.paid_at, o.product_id, {utm}, {referrer}, u.company_id, be.engaged_at,
       (SELECT min(i.created_at) FROM inquiry i WHERE i.user_id = o.user_id),
       (SELECT min(coalesce(i.won_at, i.updated_at)) FROM inquiry i
         WHERE i.user_id = o.user_id AND i.status = 'won')
FROM "order" o
JOIN "user" u ON u.id = o.user_id
LEFT JOIN buyer_engagement be ON be.user_id = o.user_id
WHERE o.user_id = {uid} AND o.paid_at IS NOT NULL
ORDER BY o.paid_at, o.id
LIMIT 1;
"""
PG_JSON = {
    "utm": "left(coalesce(o.attribution ->> 'utm_source', ''), 200)",
    "referrer": "left(coalesce(o.attribution ->> 'referrer', ''), 300)",
}
ORDER_COLUMNS = "user_id, paid_at, product_id, attribution"
INQUIRY_COLUMNS = "user_id, status, won_at, created_at, updated_at"

PG_UP = [
    "CREATE FUNCTION buyer_funnel_refresh(uid integer) RETURNS void LANGUAGE sql AS $$"
    + REFRESH.format(uid="uid", **PG_JSON)
    + "$$",
    """CREATE FUNCTION buyer_funnel_on_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM buyer_funnel_refresh(OLD.user_id);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.user_id IS DISTINCT FROM OLD.user_id) THEN
    PERFORM buyer_funnel_refresh(NEW.user_id);
  END IF;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION buyer_funnel_on_engaged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE buyer_funnel SET engaged_at = NEW.engaged_at WHERE user_id = NEW.user_id;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION buyer_funnel_on_company() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE buyer_funnel SET company_id = NEW.company_id WHERE user_id = NEW.id;
  RETURN NULL;
END $$""",
    f"""CREATE TRIGGER buyer_funnel_order AFTER INSERT OR UPDATE OF {ORDER_COLUMNS}
ON "order" FOR EACH ROW EXECUTE FUNCTION buyer_funnel_on_change()""",
    f"""CREATE TRIGGER buyer_funnel_inquiry AFTER INSERT OR DELETE OR UPDATE OF {INQUIRY_COLUMNS}
ON inquiry FOR EACH ROW EXECUTE FUNCTION buyer_funnel_on_change()""",
    # Ingestion updates buyer_engagement with every batch: the WHEN keeps that free.
    """CREATE TRIGGER buyer_funnel_engaged_insert AFTER INSERT ON buyer_engagement
FOR EACH ROW WHEN (NEW.engaged_at IS NOT NULL) EXECUTE FUNCTION buyer_funnel_on_engaged()""",
    """CREATE TRIGGER buyer_funnel_engaged_update AFTER UPDATE OF engaged_at ON buyer_engagement
FOR EACH ROW WHEN (NEW.engaged_at IS DISTINCT FROM OLD.engaged_at)
EXECUTE FUNCTION buyer_funnel_on_engaged()""",
    """CREATE TRIGGER buyer_funnel_company AFTER UPDATE OF company_id ON "user"
FOR EACH ROW WHEN (NEW.company_id IS DISTINCT FROM OLD.company_id)
EXECUTE FUNCTION buyer_funnel_on_company()""",
]
PG_DOWN = [
    'DROP TRIGGER buyer_funnel_company ON "user"',
    "DROP TRIGGER buyer_funnel_engaged_update ON buyer_engagement",
    "DROP TRIGGER buyer_funnel_engaged_insert ON buyer_engagement",
    "DROP TRIGGER buyer_funnel_inquiry ON inquiry",
    'DROP TRIGGER buyer_funnel_order ON "order"',
    "DROP FUNCTION buyer_funnel_on_company()",
    "DROP FUNCTION buyer_funnel_on_engaged()",
    "DROP FUNCTION buyer_funnel_on_change()",
    "DROP FUNCTION buyer_funnel_refresh(integer)",
]


# Existing buyers, once: each user's first paid order with what followed.
BACKFILL = """
INSERT INTO buyer_funnel (user_id, first_paid_at, product_id, utm_source, referrer, company_id,
                          engaged_at, inquired_at, won_at)
SELECT o.user_id, o.paid_at, o.product_id, {utm}, {referrer}, u.company_id, be.engaged_at,
       (SELECT min(i.created_at) FROM inquiry i WHERE i.user_id = o.user_id),
       (SELECT min(coalesce(i.won_at, i.updated_at)) FROM inquiry i
         WHERE i.user_id = o.user_id AND i.status = 'won')
FROM (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY paid_at, id) AS nth
      FROM "order" WHERE paid_at IS NOT NULL AND user_id IS NOT NULL) o
JOIN "user" u ON u.id = o.user_id
LEFT JOIN buyer_engagement be ON be.user_id = o.user_id
WHERE o.nth = 1
"""


def upgrade() -> None:
    op.create_table(
        "buyer_funnel",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("first_paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("utm_source", sa.String(length=200), nullable=False),
        sa.Column("referrer", sa.String(length=300), nullable=False),
        sa.Column("company_id", sa.Integer(), nullable=True),
        sa.Column("engaged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("won_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    with op.batch_alter_table("buyer_funnel", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_buyer_funnel_first_paid_at"), ["first_paid_at"], unique=False
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(BACKFILL.format(**PG_JSON))
        for statement in PG_UP:
            op.execute(statement)
    op.create_table(
        "visit",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("product_slug", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("day", "visitor", "kind", "product_slug"),
    )
    op.create_table(
        "visit_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("product_slug", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("visitors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", "product_slug", "source"),
    )
    op.create_table(
        "visit_salt",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    with op.batch_alter_table("inquiry", schema=None) as batch_op:
        batch_op.create_index("ix_inquiry_created_at", ["created_at"], unique=False)

    with op.batch_alter_table("order", schema=None) as batch_op:
        batch_op.create_index(
            "ix_order_paid_at",
            ["paid_at"],
            unique=False,
            postgresql_include=["currency", "amount", "amount_refunded"],
        )
        batch_op.create_index("ix_order_user_paid", ["user_id", "paid_at"], unique=False)

    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.create_index("ix_user_company_id", ["company_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_index("ix_user_company_id")

    with op.batch_alter_table("order", schema=None) as batch_op:
        batch_op.drop_index("ix_order_user_paid")
        batch_op.drop_index("ix_order_paid_at")

    with op.batch_alter_table("inquiry", schema=None) as batch_op:
        batch_op.drop_index("ix_inquiry_created_at")

    op.drop_table("visit_salt")
    op.drop_table("visit_day")
    op.drop_table("visit")
    if op.get_bind().dialect.name == "postgresql":
        for statement in PG_DOWN:
            op.execute(statement)
    with op.batch_alter_table("buyer_funnel", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_buyer_funnel_first_paid_at"))
    op.drop_table("buyer_funnel")
