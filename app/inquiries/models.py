"""Consulting inquiries: the contact, the evidence of what they studied, and the pipeline."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Column, Date, DateTime, ForeignKey, Index, Integer, String
from sqlmodel import Field, SQLModel

from app.models_base import created_at_field, json_field


class InquiryStatus(StrEnum):
    new = "new"
    contacted = "contacted"
    call_scheduled = "call_scheduled"
    proposal_sent = "proposal_sent"
    won = "won"
    lost = "lost"
    no_response = "no_response"


OPEN_STATUSES = (
    InquiryStatus.new,
    InquiryStatus.contacted,
    InquiryStatus.call_scheduled,
    InquiryStatus.proposal_sent,
)
STATUS_VALUES = ", ".join(f"'{s.value}'" for s in InquiryStatus)


class Inquiry(SQLModel, table=True):
    __tablename__ = "inquiry"
    __table_args__ = (
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="status"),
        Index("ix_inquiry_status_updated", "status", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    company_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("company.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    company_name: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=60)
    message: str = Field(max_length=5000)
    locale: str = Field(default="en", max_length=8)
    # "buyer" for signed-in buyers; else where the visitor came from (UTM source or referrer).
    source: str = Field(default="", max_length=200)
    attribution: dict[str, Any] = json_field()
    evidence: dict[str, Any] = json_field()  # engagement snapshot taken at submission
    status: InquiryStatus = Field(default=InquiryStatus.new, sa_type=String(24))
    next_follow_up: date | None = Field(default=None, sa_type=Date)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()  # last status change or note by the admin
    won_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class InquiryChange(SQLModel, table=True):
    """One step of an inquiry's history: who moved it, when, from what to what."""

    __tablename__ = "inquiry_change"

    id: int | None = Field(default=None, primary_key=True)
    inquiry_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("inquiry.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    actor_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("user.id", ondelete="SET NULL"), nullable=True),
    )
    from_status: str | None = Field(default=None, max_length=24)
    to_status: str = Field(max_length=24)
    note: str = Field(default="", max_length=2000)
    next_follow_up: date | None = Field(default=None, sa_type=Date)
    at: datetime = created_at_field()
