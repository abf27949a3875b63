"""Authoring request and response models: what the author may send, and what comes back.

Every limit lives here, so that the JSON API and the HTML forms refuse the same input.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.catalog.models import LessonKind, ModuleStatus, ProductKind, ProductStatus

CURRENCIES = ("EUR", "AUD", "USD")
MAX_PRICE = 10_000_000  # minor units: 100,000.00 in any currency is surely a typo
MAX_ORDER = 500  # ids in one reorder call

Locale = Literal["en", "de"]
Currency = Literal["EUR", "AUD", "USD"]
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,79}$"
Slug = Annotated[str, StringConstraints(strip_whitespace=True, pattern=SLUG_PATTERN)]


# A text per language; unknown languages and oversized texts are refused (422).
TitleText = dict[Locale, Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]]
TaglineText = dict[Locale, Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)]]
DescriptionText = dict[
    Locale, Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)]
]
BodyText = dict[Locale, Annotated[str, StringConstraints(max_length=100_000)]]
NotesText = dict[Locale, Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]]
Amount = Annotated[int, Field(gt=0, le=MAX_PRICE)]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductCreate(_In):
    slug: Slug
    kind: ProductKind
    title: TitleText
    tagline: TaglineText = Field(default_factory=dict)
    description: DescriptionText = Field(default_factory=dict)


class ProductUpdate(_In):
    """Only the fields sent are changed."""

    slug: Slug | None = None
    kind: ProductKind | None = None
    title: TitleText | None = None
    tagline: TaglineText | None = None
    description: DescriptionText | None = None
    includes: list[Id] | None = Field(default=None, max_length=100)  # bundles: product ids


class PricesIn(_In):
    """All prices of a product at once; a currency left out has no price."""

    prices: dict[Currency, Amount]


class ModuleCreate(_In):
    title: TitleText
    key: Slug | None = None


class ModuleUpdate(_In):
    title: TitleText | None = None
    key: Slug | None = None


class ModuleRelease(_In):
    """Publishing a module: optionally email the product's buyers, with release notes."""

    notify: bool = False
    notes: NotesText = Field(default_factory=dict)


class LessonCreate(_In):
    title: TitleText
    kind: LessonKind
    key: Slug | None = None


class LessonUpdate(_In):
    """Only the fields sent are changed; `asset_id: null` detaches the file."""

    title: TitleText | None = None
    kind: LessonKind | None = None
    key: Slug | None = None
    is_preview: bool | None = None
    published: bool | None = None
    body: BodyText | None = None
    captions: dict[Locale, Id] | None = None  # locale -> WebVTT asset id
    asset_id: Id | None = None


class OrderIn(_In):
    """The new order: every id of the list, each once."""

    ids: list[Id] = Field(max_length=MAX_ORDER)


# Responses ------------------------------------------------------------------------------------


class LessonOut(BaseModel):
    id: int
    key: str
    kind: LessonKind
    position: int
    title: dict[str, str]
    body: dict[str, str]
    captions: dict[str, int]
    is_preview: bool
    published: bool
    asset_id: int | None


class ModuleOut(BaseModel):
    id: int
    key: str
    position: int
    status: ModuleStatus
    published_at: datetime | None
    title: dict[str, str]
    release_notes: dict[str, str]
    lessons: list[LessonOut]


class ProductOut(BaseModel):
    id: int
    slug: str
    kind: ProductKind
    status: ProductStatus
    title: dict[str, str]
    tagline: dict[str, str]
    description: dict[str, str]
    prices: dict[str, int]
    includes: list[int]
    modules: list[ModuleOut]
    updated_at: datetime


class ProductSummary(BaseModel):
    id: int
    slug: str
    kind: ProductKind
    status: ProductStatus
    title: dict[str, str]
    prices: dict[str, int]
    modules: int
    lessons: int
    updated_at: datetime


class ReleaseOut(BaseModel):
    module: ModuleOut
    notified: bool  # whether release emails were queued
