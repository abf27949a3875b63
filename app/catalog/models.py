"""Catalog tables: products, prices, modules, lessons and the media assets they use."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
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


class LessonKind(StrEnum):
    video = "video"
    text = "text"
    pdf = "pdf"


class AssetStatus(StrEnum):
    pending = "pending"
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
    __table_args__ = (UniqueConstraint("product_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )
    key: str = Field(max_length=80)
    position: int
    title: Translated = json_field()


class Asset(SQLModel, table=True):
    __tablename__ = "asset"
    __table_args__ = (CheckConstraint("status IN ('pending', 'ready', 'failed')", name="status"),)

    id: int | None = Field(default=None, primary_key=True)
    storage_key: str = Field(max_length=255, unique=True)
    content_type: str = Field(max_length=120)
    size: int = Field(sa_type=BigInteger)
    sha256: str = Field(max_length=64, index=True)
    status: AssetStatus = Field(default=AssetStatus.pending, sa_type=String(16))
    duration_seconds: float | None = None
    page_count: int | None = None  # PDFs: checks the pages a reader reports
    original_filename: str = Field(default="", max_length=255)
    created_at: datetime = created_at_field()


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
