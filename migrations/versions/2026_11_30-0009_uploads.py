"""uploads: asset statuses uploading and processing, failure reason, upload id, poster

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failure_reason", sa.String(length=500), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("processing_note", sa.String(length=500), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("upload_id", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("poster_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("lesson_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_asset_lesson_id"), ["lesson_id"], unique=False)
        batch_op.drop_constraint("status", type_="check")
        batch_op.create_check_constraint(
            "status", "status IN ('pending', 'uploading', 'processing', 'ready', 'failed')"
        )


def downgrade() -> None:
    # Unfinished uploads have no place in the old statuses: they count as failed there.
    op.execute("UPDATE asset SET status = 'failed' WHERE status IN ('uploading', 'processing')")
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.drop_constraint("status", type_="check")
        batch_op.create_check_constraint("status", "status IN ('pending', 'ready', 'failed')")
        batch_op.drop_index(batch_op.f("ix_asset_lesson_id"))
        batch_op.drop_column("lesson_id")
        batch_op.drop_column("poster_key")
        batch_op.drop_column("upload_id")
        batch_op.drop_column("processing_note")
        batch_op.drop_column("failure_reason")
