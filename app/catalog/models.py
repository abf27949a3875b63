"""Catalog tables: products, prices, modules, lessons and the media assets they use."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    true,
)
from sqlmodel import Field, SQLModel

from app.models_base import created_at_field, json_field

Translated = dict[str, str]  # locale -> text, e.g. {"en": "...", "de": "..."}


class ProductKind(StrEnum):
    course = "course"
    ebook = "ebook"
    bundle = "bundle"


class ProductStatus(StrEnum):
    draft = "draft"
    published = "published"


class ModuleStatus(StrEnum):
    draft = "draft"
    published = "published"


class LessonKind(StrEnum):
    video = "video"
    text = "text"
    pdf = "pdf"


class AssetStatus(StrEnum):
    pending = "pending"
    uploading = "uploading"  # authoring: bytes are arriving (browser, CLI), resumable
    processing = "processing"  # authoring: all bytes stored, the processing job runs
    ready = "ready"
    failed = "failed"


class Product(SQLModel, table=True):
    __tablename__ = "product"
    __table_args__ = (
        CheckConstraint("kind IN ('course', 'ebook', 'bundle')", name="kind"),
        CheckConstraint("status IN ('draft', 'published')", name="status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=80, unique=True)
    kind: ProductKind = Field(sa_type=String(16))
    status: ProductStatus = Field(default=ProductStatus.draft, sa_type=String(16))
    title: Translated = json_field()
    tagline: Translated = json_field()
    description: Translated = json_field()
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()


class Price(SQLModel, table=True):
    __tablename__ = "price"
    __table_args__ = (
        UniqueConstraint("product_id", "currency"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )
    currency: str = Field(max_length=3)
    amount: int


class Module(SQLModel, table=True):
    __tablename__ = "module"
    __table_args__ = (
        UniqueConstraint("product_id", "key"),
        CheckConstraint("status IN ('draft', 'published')", name="status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )
    key: str = Field(max_length=80)
    position: int
    title: Translated = json_field()
    # Published by default: modules from course folders are live with their product; the
    # author area creates modules as drafts and releases them later.
    status: ModuleStatus = Field(
        default=ModuleStatus.published,
        sa_type=String(16),
        sa_column_kwargs={"server_default": "published"},
    )
    published_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    release_notes: Translated = json_field()  # locale -> Markdown, sent with the release email


class Asset(SQLModel, table=True):
    __tablename__ = "asset"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'uploading', 'processing', 'ready', 'failed')", name="status"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    storage_key: str = Field(max_length=255, unique=True)
    content_type: str = Field(max_length=120)
    size: int = Field(sa_type=BigInteger)
    sha256: str = Field(max_length=64, index=True)
    status: AssetStatus = Field(default=AssetStatus.pending, sa_type=String(16))
    duration_seconds: float | None = None
    page_count: int | None = None  # PDFs: checks the pages a reader reports
    # Videos: the HLS playlist cut from this file, when ffmpeg was there to make one.
    hls_key: str | None = Field(default=None, max_length=255)
    original_filename: str = Field(default="", max_length=255)
    created_at: datetime = created_at_field()
    # Authoring uploads (app/authoring/uploads.py): why processing failed, what it could not
    # do (e.g. no ffmpeg), the S3 multipart upload id while uploading, the poster frame.
    failure_reason: str = Field(default="", max_length=500)
    processing_note: str = Field(default="", max_length=500)
    upload_id: str | None = Field(default=None, max_length=1024)
    poster_key: str | None = Field(default=None, max_length=255)
    # The lesson an upload is meant for; it becomes the lesson's asset once ready. No foreign
    # key: lesson.asset_id already points here, and the cycle would need ALTER-time constraints.
    lesson_id: int | None = Field(default=None, index=True)


class Lesson(SQLModel, table=True):
    __tablename__ = "lesson"
    __table_args__ = (
        UniqueConstraint("product_id", "key"),
        CheckConstraint("kind IN ('video', 'text', 'pdf')", name="kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # product_id is kept beside module_id so that access checks need one lookup, not a join.
    product_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    module_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("module.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    key: str = Field(max_length=80)
    position: int
    kind: LessonKind = Field(sa_type=String(16))
    title: Translated = json_field()
    body: Translated = json_field()
    captions: dict[str, int] = json_field()  # locale -> WebVTT asset id
    is_preview: bool = False
    # A hidden lesson stays invisible to buyers even inside a published module.
    published: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    asset_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("asset.id", ondelete="SET NULL"), nullable=True),
    )


class BundleItem(SQLModel, table=True):
    """A product that a bundle grants."""

    __tablename__ = "bundle_item"
    __table_args__ = (UniqueConstraint("bundle_id", "product_id"),)

    id: int | None = Field(default=None, primary_key=True)
    bundle_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )


class ReleaseNotice(SQLModel, table=True):
    """One buyer told about one released module: the release email goes out at most once."""

    __tablename__ = "release_notice"
    __table_args__ = (UniqueConstraint("module_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    module_id: int = Field(
        sa_column=Column(Integer, ForeignKey("module.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    sent_at: datetime = created_at_field()
