"""Orders, the grants they give, the access rollup, refunds and the webhook log."""

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
    amount: int  # the list price asked for (minor units)
    currency: str = Field(max_length=3)
    amount_refunded: int = 0
    # What the provider charged, as it reports on the completed session; None until then.
    amount_subtotal: int | None = None
    amount_discount: int = 0
    amount_tax: int = 0
    amount_total: int | None = None
    promotion_code: str | None = Field(default=None, max_length=255)
    # The last dispute on the payment: its provider id, status and amount (minor units).
    dispute_id: str | None = Field(default=None, max_length=255)
    dispute_status: str | None = Field(default=None, max_length=32)
    amount_disputed: int = 0
    # Bumped when the provider answered a server error: Stripe replays a saved 500 for the same
    # idempotency key, so the next attempt must send another one.
    checkout_attempt: int = 0
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
    """Whether one user may open one product now: the rollup of their grants (see `Grant`).

    `revoked_at` is empty while any grant is live; `order_id` names one live grant's order.
    """

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


class GrantEnd(StrEnum):
    refunded = "refunded"
    disputed = "disputed"


class Grant(SQLModel, table=True):
    """What one paid order line gives one user: access to one product until the line ends.

    A user may open a product while any of their grants for it is live (`ended_at` empty);
    `entitlement` is the rollup of these rows that the hot paths read, kept in step by
    `checkout.service.sync_access` in the same transaction.
    """

    __tablename__ = "access_grant"
    __table_args__ = (
        UniqueConstraint("order_id", "product_id"),
        Index("ix_access_grant_user_product", "user_id", "product_id"),
        CheckConstraint("end_reason IN ('refunded', 'disputed')", name="end_reason"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Empty for access given without an order (carried over from before grants existed).
    order_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("order.id", ondelete="SET NULL"), nullable=True),
    )
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    product_id: int = Field(
        sa_column=Column(Integer, ForeignKey("product.id", ondelete="CASCADE"), nullable=False)
    )
    granted_at: datetime = created_at_field()
    ended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    end_reason: str | None = Field(default=None, max_length=16)


class Refund(SQLModel, table=True):
    """A refund the provider told us about, by its id: a failed one gives its amount back."""

    __tablename__ = "order_refund"
    __table_args__ = (UniqueConstraint("provider", "refund_id"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=16)
    refund_id: str = Field(max_length=255)
    order_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("order.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    amount: int
    status: str = Field(max_length=32)
    # The provider's time of the event that reported the failure (unix seconds): an older
    # charge.refunded event arriving later must not bring the failed amount back.
    failed_at: int | None = None
    updated_at: datetime = created_at_field()


class EventOutcome(StrEnum):
    handled = "handled"
    ignored = "ignored"  # a type we do not act on
    unmatched = "unmatched"  # about a payment we do not know yet: kept for replay
    foreign = "foreign"  # a payment we did not create: grants nothing, shown to the admin
    mismatch = "mismatch"  # our order, but another amount or currency than it asked for
    livemode = "livemode"  # live event with a test key or the other way round: ignored
    notice = "notice"  # handled, and the admin should know (an inquiry-type dispute...)


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
    outcome: str | None = Field(default=None, max_length=16, index=True)
