"""Orders, fulfilment, refunds and entitlements: grant once, revoke for good, lose nothing."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Text, cast, func, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.accounts import service as accounts
from app.accounts.models import Company, Role, User
from app.catalog.models import BundleItem, Price, Product, ProductKind, ProductStatus
from app.checkout.models import (
    Entitlement,
    EventOutcome,
    Grant,
    GrantEnd,
    Order,
    OrderStatus,
    Refund,
    WebhookEvent,
)
from app.checkout.providers import CheckoutDetails
from app.models_base import utcnow

log = structlog.get_logger()

# What a consumer in the EU agrees to before paying for digital content (§ 356 (5) BGB).
CONSENT_TEXT = {
    "en": (
        "I want immediate access to the digital content and I know that my 14-day right of "
        "withdrawal ends once access begins."
    ),
    "de": (
        "Ich möchte sofort auf die digitalen Inhalte zugreifen und weiß, dass mein 14-tägiges "
        "Widerrufsrecht mit Beginn des Zugriffs erlischt."
    ),
}
FINAL = (OrderStatus.refunded, OrderStatus.disputed)


class CheckoutError(ValueError):
    """A purchase request that cannot be served as asked (unknown product or currency...)."""


@dataclass
class Outcome:
    """What a fulfilment step did, and what must happen after the commit."""

    order: Order | None = None
    kind: EventOutcome = EventOutcome.handled
    granted: bool = False
    new_user_id: int | None = None
    after_commit: list[Callable[[], None]] = field(default_factory=list)


def lock(session: Session, key: str) -> None:
    """Serialise all work on one payment: webhook deliveries, the success page, refunds.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write statement takes the
    database's single write lock until commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode())})
    else:
        session.execute(update(Order).where(col(Order.id) == -1).values(flagged=False))


def _order_number(session: Session) -> str:
    year = utcnow().year
    count = session.exec(select(func.count()).select_from(Order)).one()
    return f"R-{year}-{count + 1:05d}"


def start_order(
    *,
    session: Session,
    product_slug: str,
    currency: str,
    checkout_key: str,
    provider: str,
    user: User | None,
    email: str | None,
    business: bool,
    company_name: str | None,
    vat_id: str | None,
    consent_locale: str | None,
    attribution: dict[str, Any],
) -> tuple[Order, Product]:
    """A pending order for a published product in one of its currencies (or the same one again
    for a repeated form: double submits and retries reuse it)."""
    existing = session.exec(select(Order).where(Order.checkout_key == checkout_key)).first()
    product = session.exec(
        select(Product).where(
            Product.slug == product_slug, Product.status == ProductStatus.published
        )
    ).first()
    if product is None:
        raise CheckoutError("unknown product")
    if existing is not None:
        if existing.product_id != product.id:
            raise CheckoutError("this checkout form belongs to another product")
        return existing, product
    price = session.exec(
        select(Price).where(Price.product_id == product.id, Price.currency == currency.upper())
    ).first()
    if price is None:
        raise CheckoutError(f"{product_slug} has no price in {currency}")
    if not business and consent_locale is None:
        raise CheckoutError("consent to immediate access is required for consumers")
    for attempt in range(5):
        order = Order(
            number=_order_number(session),
            user_id=user.id if user else None,
            product_id=product.id or 0,
            provider=provider,
            amount=price.amount,
            currency=price.currency,
            email=(user.email if user else email),
            business=business,
            company_name=(company_name or None) if business else None,
            vat_id=(vat_id or None) if business else None,
            consent_text=None if business else CONSENT_TEXT[consent_locale or "en"],
            consent_at=None if business else utcnow(),
            attribution=attribution,
            checkout_key=checkout_key,
        )
        try:
            with session.begin_nested():
                session.add(order)
        except IntegrityError:
            if attempt == 4:
                raise
            continue  # another order took the number at the same moment
        return order, product
    raise AssertionError("unreachable")


def attach_session(*, session: Session, order: Order, session_id: str) -> None:
    """Remember the provider's checkout session for the order."""
    order.provider_session_id = session_id
    order.updated_at = utcnow()
    session.add(order)


def _products_granted_by(session: Session, product_id: int) -> list[int]:
    product = session.get(Product, product_id)
    ids = [product_id]
    if product is not None and product.kind == ProductKind.bundle:
        ids += list(
            session.exec(select(BundleItem.product_id).where(BundleItem.bundle_id == product_id))
        )
    return ids


def sync_access(*, session: Session, user_id: int, product_ids: list[int]) -> None:
    """Bring the access rollup (`entitlement`) in line with the user's grants: a product is
    open while any of its grants is live, and closed once none is."""
    now = utcnow()
    for product_id in product_ids:
        grants = list(
            session.exec(
                select(Grant)
                .where(Grant.user_id == user_id, Grant.product_id == product_id)
                .order_by(col(Grant.granted_at).desc(), col(Grant.id).desc())
            )
        )
        live = [g for g in grants if g.ended_at is None]
        current = session.exec(
            select(Entitlement)
            .where(Entitlement.user_id == user_id, Entitlement.product_id == product_id)
            .with_for_update()
        ).first()
        if live:
            live_orders = {g.order_id for g in live}
            if current is None:
                try:
                    with session.begin_nested():
                        session.add(
                            Entitlement(
                                user_id=user_id, product_id=product_id, order_id=live[0].order_id
                            )
                        )
                except IntegrityError:
                    continue  # opened by another order at the same moment: access exists
            elif current.revoked_at is not None:
                current.revoked_at = None
                current.revoke_reason = None
                current.order_id = live[0].order_id
                current.granted_at = now
                session.add(current)
            elif current.order_id not in live_orders:
                current.order_id = live[0].order_id  # the copy stamped for a live order
                session.add(current)
        elif current is not None and current.revoked_at is None:
            current.revoked_at = now
            current.revoke_reason = next((g.end_reason for g in grants if g.end_reason), None)
            session.add(current)
    session.flush()


def _grant(session: Session, order: Order, user_id: int) -> None:
    """One grant per product the order line gives (a bundle gives its items too)."""
    product_ids = _products_granted_by(session, order.product_id)
    for product_id in product_ids:
        exists = session.exec(
            select(Grant.id).where(Grant.order_id == order.id, Grant.product_id == product_id)
        ).first()
        if exists is not None:
            continue
        try:
            with session.begin_nested():
                session.add(Grant(order_id=order.id, user_id=user_id, product_id=product_id))
        except IntegrityError:
            continue  # the same order granted at the same moment by a racing delivery
    sync_access(session=session, user_id=user_id, product_ids=product_ids)


def _end_grants(session: Session, order: Order, reason: GrantEnd) -> int:
    """End the order's live grants; access stays where another order still grants it."""
    grants = list(
        session.exec(select(Grant).where(Grant.order_id == order.id, col(Grant.ended_at).is_(None)))
    )
    return _set_end(session, grants, utcnow(), reason)


def _restore_grants(session: Session, order: Order, reason: GrantEnd) -> int:
    """Undo an end for `reason` only (a dispute won does not undo a refund)."""
    grants = list(
        session.exec(select(Grant).where(Grant.order_id == order.id, Grant.end_reason == reason))
    )
    return _set_end(session, grants, None, None)


def _set_end(
    session: Session, grants: list[Grant], ended_at: datetime | None, reason: GrantEnd | None
) -> int:
    """Give the grants their end (or none), then bring each user's access in line."""
    for grant in grants:
        grant.ended_at = ended_at
        grant.end_reason = reason
        session.add(grant)
    session.flush()
    for user_id in {g.user_id for g in grants}:
        sync_access(
            session=session,
            user_id=user_id,
            product_ids=[g.product_id for g in grants if g.user_id == user_id],
        )
    return len(grants)


def _buyer(
    session: Session, order: Order, details: CheckoutDetails, outcome: Outcome
) -> User | None:
    if order.user_id is not None:
        return session.get(User, order.user_id)
    email = details.email or order.email
    if not email:
        return None
    try:
        address = accounts.normalize_email(email)
    except accounts.AccountError:
        log.warning("checkout.bad_email", order=order.number)
        return None
    user = accounts.get_user_by_email(session=session, email=address)
    if user is None:
        user = User(email=address, role=Role.buyer, name=(details.name or "")[:200])
        session.add(user)
        session.flush()
        outcome.new_user_id = user.id
        order.account_created = True
    # An account that existed before this checkout is never changed by it (anyone can type
    # an address into the form): name, company and language go on the order only.
    company_name = details.business_name or order.company_name
    if company_name and order.account_created and user.company_id is None:
        company = Company(
            name=company_name[:200], vat_id=(details.tax_id or order.vat_id or "")[:32]
        )
        session.add(company)
        session.flush()
        user.company_id = company.id
        session.add(user)
    return user


def find_order(session: Session, provider: str, details: CheckoutDetails) -> Order | None:
    """Our order for a checkout session: the one that stored this session's id, or the one
    named by the session's metadata (set by our API key only). Never by `client_reference_id`:
    anyone can put an order number into a Payment Link's URL."""
    order = session.exec(
        select(Order)
        .where(Order.provider == provider, Order.provider_session_id == details.session_id)
        .with_for_update()
    ).first()
    if order is None and details.metadata_order_number and details.metadata_order_id:
        order = session.exec(
            select(Order)
            .where(
                Order.provider == provider,
                Order.number == details.metadata_order_number,
                cast(col(Order.id), Text) == details.metadata_order_id,
            )
            .with_for_update()
        ).first()
    return order


def _charged_as_asked(order: Order, details: CheckoutDetails) -> bool:
    """The session is for the order's price and currency (before discounts and tax)."""
    if details.currency is not None and details.currency.upper() != order.currency.upper():
        return False
    return details.amount_subtotal is None or details.amount_subtotal == order.amount


def _record_amounts(order: Order, details: CheckoutDetails) -> None:
    order.amount_subtotal = (
        details.amount_subtotal if details.amount_subtotal is not None else order.amount
    )
    order.amount_discount = details.amount_discount
    order.amount_tax = details.amount_tax
    order.amount_total = (
        details.amount_total
        if details.amount_total is not None
        else order.amount_subtotal - details.amount_discount + details.amount_tax
    )
    order.promotion_code = details.promotion_code


def apply_checkout(
    *, session: Session, provider: str, details: CheckoutDetails, event: str
) -> Outcome:
    """Bring an order up to date with its checkout session (from a webhook or the success page).

    Grants at most once; a refunded or disputed order is never granted again. A session that
    is not one of ours, or not for the order's amount, grants nothing.
    """
    outcome = Outcome()
    lock(session, details.payment_intent or details.session_id)
    order = find_order(session, provider, details)
    if order is None:
        outcome.kind = EventOutcome.foreign
        log.warning("checkout.foreign_session", session_id=details.session_id, via=event)
        return outcome
    outcome.order = order
    ours = order.provider_session_id in (None, details.session_id)
    if event in ("expired", "async_failed") and not ours:
        return outcome  # an abandoned earlier session of this order: the order goes on
    if not _charged_as_asked(order, details):
        order.flagged = True
        order.updated_at = utcnow()
        session.add(order)
        outcome.kind = EventOutcome.mismatch
        log.error(
            "checkout.amount_mismatch",
            order=order.number,
            session_id=details.session_id,
            currency=details.currency,
            amount_subtotal=details.amount_subtotal,
        )
        return outcome
    if order.status in FINAL or order.status == OrderStatus.paid:
        if not ours and details.payment_status == "paid":
            # Paid through a second session of the same order (two tabs): money to give back.
            order.flagged = True
            outcome.kind = EventOutcome.notice
            log.error("order.paid_twice", order=order.number, session_id=details.session_id)
        session.add(order)
        return outcome
    if details.payment_intent and not order.payment_intent:
        order.payment_intent = details.payment_intent
    order.provider_session_id = details.session_id
    if event == "expired":
        if order.status == OrderStatus.pending:
            order.status = OrderStatus.expired
    elif event == "async_failed":
        order.status = OrderStatus.failed
    elif details.payment_status in ("paid", "no_payment_required") or event == "async_succeeded":
        user = _buyer(session, order, details, outcome)
        _record_amounts(order, details)
        order.status = OrderStatus.paid
        order.paid_at = utcnow()
        if user is not None:
            order.user_id = user.id
            order.email = order.email or user.email
            order.buyer_name = order.buyer_name or details.name
            session.add(order)
            session.flush()
            _grant(session, order, user.id or 0)
            outcome.granted = True
        log.info("order.paid", order=order.number, provider=provider, granted=outcome.granted)
    elif details.status == "complete":
        _record_amounts(order, details)
        order.status = OrderStatus.processing  # e.g. SEPA debit: paid later, or not
    order.updated_at = utcnow()
    session.add(order)
    session.flush()
    return outcome


def _order_for_payment(session: Session, payment_intent: str) -> Order | None:
    """The order paid by this payment intent, locked for this transaction (None: unknown yet)."""
    lock(session, payment_intent)
    return session.exec(
        select(Order).where(Order.payment_intent == payment_intent).with_for_update()
    ).first()


def apply_refund(
    *,
    session: Session,
    payment_intent: str,
    amount_refunded: int,
    fully: bool,
    receipt_url: str | None = None,
    reported_at: int | None = None,
) -> Order | None:
    """Record what the charge says was refunded; a full refund ends the order's grants.

    `reported_at` is the provider's time of the report: one older than a refund failure we
    already know of is stale and changes nothing. None when no order matches yet.
    """
    order = _order_for_payment(session, payment_intent)
    if order is None:
        return None
    if receipt_url and not order.receipt_url:
        order.receipt_url = receipt_url[:500]
    if reported_at is not None and _failed_since(session, order, reported_at):
        log.info("order.refund_report_stale", order=order.number)
        session.add(order)
        return order
    order.amount_refunded = max(order.amount_refunded, amount_refunded)
    if fully and order.status != OrderStatus.disputed:
        order.status = OrderStatus.refunded
    if fully:
        ended = _end_grants(session, order, GrantEnd.refunded)
        log.info("order.refunded", order=order.number, ended=ended)
    order.updated_at = utcnow()
    session.add(order)
    session.flush()
    return order


def _failed_since(session: Session, order: Order, moment: int) -> bool:
    return (
        session.exec(
            select(Refund.id).where(
                Refund.order_id == order.id,
                col(Refund.failed_at).is_not(None),
                col(Refund.failed_at) >= moment,
            )
        ).first()
        is not None
    )


REFUND_FAILED = ("failed", "canceled")


def apply_refund_status(
    *,
    session: Session,
    provider: str,
    payment_intent: str,
    refund_id: str,
    amount: int,
    status: str,
    reported_at: int,
) -> Order | None:
    """A refund's own status (from refund.* events or our request): a failed or canceled
    refund gives its amount back and restores the access the refund had ended."""
    order = _order_for_payment(session, payment_intent)
    if order is None:
        return None
    refund = session.exec(
        select(Refund).where(Refund.provider == provider, Refund.refund_id == refund_id)
    ).first()
    if refund is None:
        refund = Refund(
            provider=provider, refund_id=refund_id, order_id=order.id or 0, amount=amount, status=""
        )
    newly_failed = status in REFUND_FAILED and refund.status not in REFUND_FAILED
    refund.amount = amount
    if refund.status not in REFUND_FAILED:
        refund.status = status[:32]
    refund.updated_at = utcnow()
    if newly_failed:
        refund.failed_at = reported_at
        order.amount_refunded = max(0, order.amount_refunded - amount)
        if order.status == OrderStatus.refunded:
            order.status = OrderStatus.paid
        restored = _restore_grants(session, order, GrantEnd.refunded)
        order.flagged = True
        log.warning("order.refund_failed", order=order.number, refund=refund_id, restored=restored)
        order.updated_at = utcnow()
    session.add(refund)
    session.add(order)
    session.flush()
    return order


def record_receipt(*, session: Session, payment_intent: str, receipt_url: str) -> Order | None:
    """Keep the provider's receipt link for the buyer's orders page. None: order not known yet."""
    order = _order_for_payment(session, payment_intent)
    if order is None:
        return None
    order.receipt_url = receipt_url[:500]
    session.add(order)
    return order


# Inquiries and early fraud warnings withdraw no funds: the buyer keeps access meanwhile.
DISPUTE_WARNINGS = ("warning_needs_response", "warning_under_review", "warning_closed")


def apply_dispute(
    *,
    session: Session,
    payment_intent: str,
    dispute_id: str | None = None,
    status: str = "needs_response",
    amount: int = 0,
) -> Order | None:
    """A dispute opened or changed: a chargeback ends the order's grants and flags it; an
    inquiry is recorded and flagged only. None when no order matches yet."""
    order = _order_for_payment(session, payment_intent)
    if order is None:
        return None
    if order.dispute_status in ("won", "lost") and order.dispute_id == dispute_id:
        return order  # closed already: a late update changes nothing
    order.dispute_id = (dispute_id or order.dispute_id or "")[:255] or None
    order.dispute_status = status[:32]
    order.amount_disputed = amount or order.amount_disputed
    order.flagged = True
    if status not in DISPUTE_WARNINGS:
        order.status = OrderStatus.disputed
        ended = _end_grants(session, order, GrantEnd.disputed)
        log.warning("order.disputed", order=order.number, status=status, ended=ended)
    else:
        log.warning("order.dispute_inquiry", order=order.number, status=status)
    order.updated_at = utcnow()
    session.add(order)
    session.flush()
    return order


def apply_dispute_closed(
    *, session: Session, payment_intent: str, dispute_id: str | None, status: str, amount: int = 0
) -> Order | None:
    """A dispute's outcome: `won` gives access back (unless a refund ended it), `lost` keeps it
    ended for good. None when no order matches yet."""
    order = _order_for_payment(session, payment_intent)
    if order is None:
        return None
    order.dispute_id = (dispute_id or order.dispute_id or "")[:255] or None
    order.dispute_status = status[:32]
    order.amount_disputed = amount or order.amount_disputed
    if status == "won":
        if order.status == OrderStatus.disputed:
            order.status = (
                OrderStatus.refunded
                if order.amount_refunded >= charged(order)
                else OrderStatus.paid
            )
        restored = _restore_grants(session, order, GrantEnd.disputed)
        log.info("order.dispute_won", order=order.number, restored=restored)
    elif status == "lost":
        order.status = OrderStatus.disputed
        _end_grants(session, order, GrantEnd.disputed)
        log.warning("order.dispute_lost", order=order.number)
    order.updated_at = utcnow()
    session.add(order)
    session.flush()
    return order


def charged(order: Order) -> int:
    """What the provider charged for the order (the list price for orders before wave 2)."""
    return order.amount_total if order.amount_total is not None else order.amount


def net_amount(order: Order) -> int:
    """What the seller kept of an order: charged, less refunds, less a lost dispute."""
    if order.status not in (OrderStatus.paid, *FINAL) or order.paid_at is None:
        return 0
    lost = order.amount_disputed if order.dispute_status == "lost" else 0
    return max(0, charged(order) - order.amount_refunded - lost)


def pending_events_for(session: Session, provider: str, ref: str) -> list[WebhookEvent]:
    """Events about a payment that arrived before we knew its order, oldest first."""
    return list(
        session.exec(
            select(WebhookEvent)
            .where(
                WebhookEvent.provider == provider,
                WebhookEvent.ref == ref,
                col(WebhookEvent.handled_at).is_(None),
            )
            .order_by(col(WebhookEvent.id))
        )
    )


# Reading --------------------------------------------------------------------------------------

ATTENTION = (
    EventOutcome.foreign,
    EventOutcome.mismatch,
    EventOutcome.livemode,
    EventOutcome.notice,
)


def needs_attention(*, session: Session, limit: int = 50) -> list[WebhookEvent]:
    """Provider events the admin should see: payments we did not create, amounts that differ,
    events from the other mode, disputes and failed refunds; newest first."""
    return list(
        session.exec(
            select(WebhookEvent)
            .where(col(WebhookEvent.outcome).in_([str(o) for o in ATTENTION]))
            .order_by(col(WebhookEvent.id).desc())
            .limit(limit)
        )
    )


def active_entitlement(*, session: Session, user_id: int, product_id: int) -> Entitlement | None:
    """The user's live right to a product, if any."""
    return session.exec(
        select(Entitlement).where(
            Entitlement.user_id == user_id,
            Entitlement.product_id == product_id,
            col(Entitlement.revoked_at).is_(None),
        )
    ).first()


def library(*, session: Session, user: User) -> list[Product]:
    """Products the user may open now, most recently granted first."""
    rows = session.exec(
        select(Product)
        .join(Entitlement, col(Entitlement.product_id) == col(Product.id))
        .where(Entitlement.user_id == user.id, col(Entitlement.revoked_at).is_(None))
        .order_by(col(Entitlement.granted_at).desc())
    )
    return list(rows)


def orders_of(*, session: Session, user: User) -> list[tuple[Order, Product]]:
    """The user's orders with their products, newest first."""
    rows = session.exec(
        select(Order, Product)
        .join(Product, col(Product.id) == col(Order.product_id))
        .where(Order.user_id == user.id)
        .order_by(col(Order.created_at).desc(), col(Order.id).desc())
    )
    return list(rows)


def export_orders(*, session: Session, user: User) -> dict[str, object]:
    """Orders and entitlements for the personal-data export."""
    orders = [
        {
            "number": o.number,
            "product": p.slug,
            "status": o.status,
            "amount": o.amount,
            "currency": o.currency,
            "amount_refunded": o.amount_refunded,
            "created_at": o.created_at.isoformat(),
            "paid_at": o.paid_at.isoformat() if o.paid_at else None,
            "company_name": o.company_name,
            "vat_id": o.vat_id,
            "consent_text": o.consent_text,
            "consent_at": o.consent_at.isoformat() if o.consent_at else None,
            "attribution": o.attribution,
        }
        for o, p in orders_of(session=session, user=user)
    ]
    entitlements = [
        {
            "product": p.slug,
            "granted_at": e.granted_at.isoformat(),
            "revoked_at": e.revoked_at.isoformat() if e.revoked_at else None,
        }
        for e, p in session.exec(
            select(Entitlement, Product)
            .join(Product, col(Product.id) == col(Entitlement.product_id))
            .where(Entitlement.user_id == user.id)
        )
    ]
    return {"orders": orders, "entitlements": entitlements}


def anonymise_orders(*, session: Session, user: User) -> None:
    """Keep the user's orders for the books, without anything that identifies them."""
    intents = [
        pi
        for pi in session.exec(select(Order.payment_intent).where(Order.user_id == user.id))
        if pi
    ]
    if intents:
        # Provider events carry the buyer's email and name: keep only that they happened.
        for event in session.exec(select(WebhookEvent).where(col(WebhookEvent.ref).in_(intents))):
            event.payload = {"id": event.event_id, "type": event.type, "redacted": True}
            session.add(event)
    if user.email:
        needle = f"%{user.email.lower()}%"
        for event in session.exec(
            select(WebhookEvent).where(
                func.lower(cast(col(WebhookEvent.payload), Text)).like(needle)
            )
        ):
            event.payload = {"id": event.event_id, "type": event.type, "redacted": True}
            session.add(event)
    session.execute(
        update(Order)
        .where(col(Order.user_id) == user.id)
        .values(
            user_id=None,
            email=None,
            buyer_name=None,
            company_name=None,
            vat_id=None,
            attribution={},
        )
    )
    if user.email:
        session.execute(
            update(Order)
            .where(func.lower(col(Order.email)) == user.email.lower())
            .values(email=None, buyer_name=None, company_name=None, vat_id=None, attribution={})
        )
