"""authoring: module status and releases, hidden lessons, release emails, library marks

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing modules and lessons were published with their product: they stay visible.
    with op.batch_alter_table("module", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="published")
        )
        batch_op.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("release_notes", sa.JSON(), nullable=False, server_default="{}")
        )
        batch_op.create_check_constraint("status", "status IN ('draft', 'published')")

    with op.batch_alter_table("lesson", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.true())
        )

    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("release_emails", sa.Boolean(), nullable=False, server_default=sa.true())
        )

    with op.batch_alter_table("entitlement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "release_notice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("module_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["module_id"], ["module.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("module_id", "user_id"),
    )
    with op.batch_alter_table("release_notice", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_release_notice_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("release_notice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_release_notice_user_id"))

    op.drop_table("release_notice")
    with op.batch_alter_table("entitlement", schema=None) as batch_op:
        batch_op.drop_column("seen_at")

    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("release_emails")

    with op.batch_alter_table("lesson", schema=None) as batch_op:
        batch_op.drop_column("published")

    with op.batch_alter_table("module", schema=None) as batch_op:
        batch_op.drop_constraint("status", type_="check")
        batch_op.drop_column("release_notes")
        batch_op.drop_column("published_at")
        batch_op.drop_column("status")
