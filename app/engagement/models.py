"""Engagement tables: the append-only event log and the rollups that pages read instead."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlmodel import Field, SQLModel

from app.models_base import created_at_field


class EventKind(StrEnum):
    lesson_opened = "lesson_opened"
    video_progress = "video_progress"
    lesson_completed = "lesson_completed"
    page_viewed = "page_viewed"
    ebook_downloaded = "ebook_downloaded"  # recorded by the server when a copy is downloaded


class EngagementEvent(SQLModel, table=True):
    """One thing a buyer did, exactly as it arrived (after validation); never updated."""

    __tablename__ = "engagement_event"
    __table_args__ = (
        # A retry of the same batch carries the same client ids: stored once.
        UniqueConstraint("user_id", "client_id"),
        Index("ix_engagement_event_user_product", "user_id", "product_id"),
    )

    # SQLite numbers rows itself only for INTEGER PRIMARY KEY; PostgreSQL needs 64 bits here.
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    client_id: uuid.UUID = Field(sa_column=Column(Uuid(), nullable=False))
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )
    lesson_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("lesson.id", ondelete="CASCADE"), nullable=True),
    )
    kind: str = Field(sa_column=Column(String(24), nullable=False))
    # video_progress: start/end in media seconds and the playback rate; page_viewed: page, seconds
    start: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    end: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    rate: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    page: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    seconds: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    received_at: datetime = created_at_field()


class LessonProgress(SQLModel, table=True):
    """Per buyer and lesson: what was really watched or read, kept up to date on ingestion."""

    __tablename__ = "lesson_progress"
    __table_args__ = (Index("ix_lesson_progress_user_product", "user_id", "product_id"),)

    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    lesson_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("lesson.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )
    # Merged [start, end] intervals of media seconds, sorted and disjoint.
    intervals: list[list[float]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    covered_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    duration_seconds: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    position: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    pages: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reading_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    opened_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    completed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_active_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class BuyerEngagement(SQLModel, table=True):
    """Per buyer: the facts the score is made of, summed over all their products."""

    __tablename__ = "buyer_engagement"

    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    lessons_total: int = 0  # lessons in the products the buyer owns, when last counted
    lessons_completed: int = 0
    media_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    pages_read: int = 0
    reading_seconds: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    downloads: int = 0
    first_active_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_active_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True, index=True)
    )
    # The first time the score crossed the threshold; the invitation and the funnel use it.
    engaged_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True, index=True)
    )
    score_at_last_event: float = Field(default=0.0, sa_column=Column(Float, nullable=False))


class Rejection(StrEnum):
    malformed = "malformed"
    unknown_kind = "unknown_kind"
    unknown_lesson = "unknown_lesson"
    wrong_kind = "wrong_kind"
    not_entitled = "not_entitled"
    out_of_range = "out_of_range"
    bad_time = "bad_time"
    duplicate_in_batch = "duplicate_in_batch"
