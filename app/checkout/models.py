"""Orders, entitlements and the webhook log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from app.models_base import created_at_field, json_field


class OrderStatus(StrEnum):
    pending = "pending"  # checkout started, not paid
    processing = "processing"  # paid by a delayed method (e.g. SEPA debit), not settled yet
    paid = "paid"
    failed = "failed"
    expired = "expired"
    refunded = "refunded"
    disputed = "disputed"


ORDER_STATUSES = ", ".join(f"'{s.value}'" for s in OrderStatus)


class Order(SQLModel, table=True):
    __tablename__ = "order"
    __table_args__ = (
        CheckConstraint(f"status IN ({ORDER_STATUSES})", name="status"),
        CheckConstraint("provider IN ('stripe', 'test')", name="provider"),
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("provider", "provider_session_id"),
        Index("ix_order_payment_intent", "payment_intent"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=24, unique=True)  # shown to buyers: R-2026-00042
    user_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="RESTRICT"), nullable=False)
    )
    provider: str = Field(max_length=16)
    provider_session_id: str | None = Field(default=None, max_length=255)
    payment_intent: str | None = Field(default=None, max_length=255)
    status: OrderStatus = Field(default=OrderStatus.pending, sa_type=String(16))
    amount: int
    currency: str = Field(max_length=3)
    amount_refunded: int = 0
    # Personal fields: erased when the buyer deletes their account; the rest stays for the books.
    email: str | None = Field(default=None, max_length=320)
    buyer_name: str | None = Field(default=None, max_length=200)
    company_name: str | None = Field(default=None, max_length=200)
    vat_id: str | None = Field(default=None, max_length=32)
    business: bool = False
    consent_text: str | None = Field(default=None, max_length=1000)
    consent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    attribution: dict[str, Any] = json_field()
    receipt_url: str | None = Field(default=None, max_length=500)
    # One key per checkout form shown: a double submit or a retry reuses the order, and the
    # provider sees the same idempotency key, so no second checkout session is made.
    checkout_key: str = Field(max_length=64, unique=True)
    flagged: bool = False
    account_created: bool = False  # the buyer's account was made by this purchase
    created_at: datetime = created_at_field()
    paid_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    updated_at: datetime = created_at_field()


class Entitlement(SQLModel, table=True):
    """The right of one user to one product; revoked on refund or dispute."""

    __tablename__ = "entitlement"
    __table_args__ = (UniqueConstraint("user_id", "product_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    product_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    order_id: int | None = Field(
        default=None,
        sa_column=Column(
            Integer, ForeignKey("order.id", ondelete="SET NULL"), nullable=True, index=True
        ),
    )
    granted_at: datetime = created_at_field()
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    revoke_reason: str | None = Field(default=None, max_length=32)
    # When the buyer last opened the product: the library marks modules released since then.
    seen_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class WebhookEvent(SQLModel, table=True):
    """Every provider event, stored once; handled_at stays empty until it has been acted on."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index("ix_webhook_event_ref", "provider", "ref"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=16)
    event_id: str = Field(max_length=255)
    type: str = Field(max_length=100)
    ref: str | None = Field(default=None, max_length=255)  # the payment intent it concerns
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = created_at_field()
    handled_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    note: str | None = Field(default=None, max_length=300)
