"""Grants per order line, the amounts Stripe charged, refunds by id, event outcomes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

Every entitlement becomes a grant of the order it names (or a grant without an order when it
names none), ended when the entitlement was revoked; paid orders get the list price as what
was charged, which is what wave 1 recorded.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amount_subtotal", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("amount_discount", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("amount_tax", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("amount_total", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("promotion_code", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("dispute_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("dispute_status", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("amount_disputed", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("checkout_attempt", sa.Integer(), nullable=False, server_default="0")
        )
    # Revenue per currency stays readable from the paid_at index alone (PostgreSQL).
    with op.batch_alter_table("order", schema=None) as batch_op:
        batch_op.drop_index("ix_order_paid_at")
        batch_op.create_index(
            "ix_order_paid_at",
            ["paid_at"],
            unique=False,
            postgresql_include=[
                "currency",
                "amount",
                "amount_total",
                "amount_refunded",
                "amount_disputed",
                "dispute_status",
            ],
        )

    with op.batch_alter_table("webhook_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_webhook_event_outcome", ["outcome"], unique=False)

    op.create_table(
        "access_grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.CheckConstraint(
            "end_reason IN ('refunded', 'disputed')", name=op.f("ck_access_grant_end_reason")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["order.id"],
            name=op.f("fk_access_grant_order_id_order"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_access_grant_user_id_user"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["product.id"],
            name=op.f("fk_access_grant_product_id_product"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_grant")),
        sa.UniqueConstraint(
            "order_id", "product_id", name=op.f("uq_access_grant_order_id_product_id")
        ),
    )
    op.create_index(
        "ix_access_grant_user_product", "access_grant", ["user_id", "product_id"], unique=False
    )
    op.create_table(
        "order_refund",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("refund_id", sa.String(length=255), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("failed_at", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["order.id"],
            name=op.f("fk_order_refund_order_id_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_refund")),
        sa.UniqueConstraint(
            "provider", "refund_id", name=op.f("uq_order_refund_provider_refund_id")
        ),
    )
    op.create_index("ix_order_refund_order_id", "order_refund", ["order_id"], unique=False)

    # Existing data: each entitlement is the grant of the order it names.
    op.execute(
        """
        INSERT INTO access_grant (order_id, user_id, product_id, granted_at, ended_at, end_reason)
        SELECT e.order_id, e.user_id, e.product_id, e.granted_at, e.revoked_at,
               CASE WHEN e.revoked_at IS NULL THEN NULL
                    WHEN e.revoke_reason = 'disputed' THEN 'disputed'
                    ELSE 'refunded' END
        FROM entitlement e
        """
    )
    op.execute(
        """
        UPDATE "order" SET amount_subtotal = amount, amount_total = amount
        WHERE paid_at IS NOT NULL
        """
    )
    op.execute(
        """
        UPDATE "order" SET dispute_status = 'needs_response', amount_disputed = amount
        WHERE status = 'disputed'
        """
    )


def downgrade() -> None:
    # The entitlement rollup already holds what access is; grants and refunds go.
    op.drop_index("ix_order_refund_order_id", table_name="order_refund")
    op.drop_table("order_refund")
    op.drop_index("ix_access_grant_user_product", table_name="access_grant")
    op.drop_table("access_grant")
    with op.batch_alter_table("webhook_event", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_event_outcome")
        batch_op.drop_column("outcome")
    with op.batch_alter_table("order", schema=None) as batch_op:
        batch_op.drop_index("ix_order_paid_at")
        batch_op.create_index(
            "ix_order_paid_at",
            ["paid_at"],
            unique=False,
            postgresql_include=["currency", "amount", "amount_refunded"],
        )
    with op.batch_alter_table("order", schema=None) as batch_op:
        for name in (
            "checkout_attempt",
            "amount_disputed",
            "dispute_status",
            "dispute_id",
            "promotion_code",
            "amount_total",
            "amount_tax",
            "amount_discount",
            "amount_subtotal",
        ):
            batch_op.drop_column(name)
