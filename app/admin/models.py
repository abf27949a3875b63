"""Visit counting tables, and the indexes the dashboard's queries need on other domains' tables."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, Date, DateTime, ForeignKey, Index, Integer, String
from sqlmodel import Field, SQLModel

from app.accounts.models import User
from app.checkout.models import Order
from app.inquiries.models import Inquiry


class VisitKind:
    """What a counted row stands for: a visitor-day, the catalog page, or a product page."""

    site = "site"
    catalog = "catalog"
    product = "product"


class VisitSalt(SQLModel, table=True):
    """The random salt of one day; yesterday's is deleted, so old hashes cannot be recomputed."""

    __tablename__ = "visit_salt"

    day: date = Field(sa_column=Column(Date, primary_key=True, nullable=False))
    salt: str = Field(max_length=64)


class Visit(SQLModel, table=True):
    """Today's de-duplication rows: one per visitor hash and page; deleted once the day is over."""

    __tablename__ = "visit"

    day: date = Field(sa_column=Column(Date, primary_key=True, nullable=False))
    visitor: str = Field(sa_column=Column(String(32), primary_key=True, nullable=False))
    kind: str = Field(sa_column=Column(String(16), primary_key=True, nullable=False))
    product_slug: str = Field(
        default="", sa_column=Column(String(200), primary_key=True, nullable=False)
    )


class VisitDay(SQLModel, table=True):
    """Counted visitors per day, page kind, product and source: what the dashboard reads."""

    __tablename__ = "visit_day"

    day: date = Field(sa_column=Column(Date, primary_key=True, nullable=False))
    kind: str = Field(sa_column=Column(String(16), primary_key=True, nullable=False))
    product_slug: str = Field(
        default="", sa_column=Column(String(200), primary_key=True, nullable=False)
    )
    source: str = Field(default="", sa_column=Column(String(200), primary_key=True, nullable=False))
    visitors: int = Field(default=0, sa_column=Column(Integer, nullable=False))


REVENUE_COLUMNS = [
    "currency",
    "amount",
    "amount_total",
    "amount_refunded",
    "amount_disputed",
    "dispute_status",
]

# The dashboard's indexes live here, beside the queries that need them, rather than in the
# owning domains' models: buyers in a range (paid_at), "no earlier paid order" (user_id,
# paid_at), inquiries in a range, and the members of a company.
Index(
    "ix_order_paid_at",
    Order.__table__.c.paid_at,  # type: ignore[attr-defined]
    # Revenue per currency is then read from the index alone on PostgreSQL.
    postgresql_include=REVENUE_COLUMNS,
)
Index(
    "ix_order_user_paid",
    Order.__table__.c.user_id,  # type: ignore[attr-defined]
    Order.__table__.c.paid_at,  # type: ignore[attr-defined]
)
Index("ix_inquiry_created_at", Inquiry.__table__.c.created_at)  # type: ignore[attr-defined]
Index("ix_user_company_id", User.__table__.c.company_id)  # type: ignore[attr-defined]


class BuyerFunnel(SQLModel, table=True):
    """Per buyer: the first paid order and the milestones after it, one narrow row to count.

    Kept up to date by database triggers on `order`, `buyer_engagement`, `inquiry` and `user`
    (migration 0007), so every write that changes a buyer's funnel, whichever domain makes it,
    updates this row in the same transaction; the dashboard reads only this table for buyers.
    """

    __tablename__ = "buyer_funnel"

    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    first_paid_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    product_id: int = Field(sa_column=Column(Integer, nullable=False))
    utm_source: str = Field(default="", sa_column=Column(String(200), nullable=False))
    referrer: str = Field(default="", sa_column=Column(String(300), nullable=False))
    company_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    engaged_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    inquired_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    won_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
