"""Personalised copies of e-books, made once per buyer and file version."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, ForeignKey, Integer, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models_base import created_at_field


class CopyStatus(StrEnum):
    pending = "pending"
    ready = "ready"
    failed = "failed"


class StampedCopy(SQLModel, table=True):
    __tablename__ = "stamped_copy"
    __table_args__ = (
        UniqueConstraint("user_id", "asset_id"),
        CheckConstraint("status IN ('pending', 'ready', 'failed')", name="status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    # The asset is the file version: a new upload is a new asset, so a new copy is made.
    asset_id: int = Field(
        sa_column=Column(Integer, ForeignKey("asset.id", ondelete="CASCADE"), nullable=False)
    )
    order_number: str = Field(default="", max_length=24)
    storage_key: str | None = Field(default=None, max_length=255)
    status: CopyStatus = Field(default=CopyStatus.pending, sa_type=String(16))
    error: str | None = Field(default=None, max_length=300)
    downloads: int = 0
    created_at: datetime = created_at_field()
