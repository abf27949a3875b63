"""Orders, fulfilment, refunds and entitlements: grant once, revoke for good, lose nothing."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Text, cast, func, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.accounts import service as accounts
from app.accounts.models import Company, Role, User
from app.catalog.models import BundleItem, Price, Product, ProductKind, ProductStatus
from app.checkout.models import Entitlement, Order, OrderStatus, WebhookEvent
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


def _grant(session: Session, order: Order, user_id: int) -> None:
    now = utcnow()
    for product_id in _products_granted_by(session, order.product_id):
        current = session.exec(
            select(Entitlement).where(
                Entitlement.user_id == user_id, Entitlement.product_id == product_id
            )
        ).first()
        if current is None:
            try:
                with session.begin_nested():
                    session.add(
                        Entitlement(user_id=user_id, product_id=product_id, order_id=order.id)
                    )
            except IntegrityError:
                continue  # granted by another order at the same moment: access exists
        elif current.revoked_at is not None:
            current.revoked_at = None
            current.revoke_reason = None
            current.order_id = order.id
            current.granted_at = now
            session.add(current)


def _revoke(session: Session, order: Order, reason: str) -> int:
    result = session.execute(
        update(Entitlement)
        .where(col(Entitlement.order_id) == order.id, col(Entitlement.revoked_at).is_(None))
        .values(revoked_at=utcnow(), revoke_reason=reason)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


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
    company_name = details.business_name or order.company_name
    if company_name and user.company_id is None:
        company = Company(
            name=company_name[:200], vat_id=(details.tax_id or order.vat_id or "")[:32]
        )
        session.add(company)
        session.flush()
        user.company_id = company.id
        session.add(user)
    return user


def find_order(session: Session, provider: str, details: CheckoutDetails) -> Order | None:
    order = session.exec(
        select(Order)
        .where(Order.provider == provider, Order.provider_session_id == details.session_id)
        .with_for_update()
    ).first()
    if order is None and details.order_number:
        order = session.exec(
            select(Order)
            .where(Order.provider == provider, Order.number == details.order_number)
            .with_for_update()
        ).first()
    return order


def apply_checkout(
    *, session: Session, provider: str, details: CheckoutDetails, event: str
) -> Outcome:
    """Bring an order up to date with its checkout session (from a webhook or the success page).

    Grants at most once; a refunded or disputed order is never granted again.
    """
    outcome = Outcome()
    lock(session, details.payment_intent or details.session_id)
    order = find_order(session, provider, details)
    if order is None:
        return outcome
    outcome.order = order
    if details.payment_intent and not order.payment_intent:
        order.payment_intent = details.payment_intent
    if order.provider_session_id is None:
        order.provider_session_id = details.session_id
    if order.status in FINAL or order.status == OrderStatus.paid:
        session.add(order)
        return outcome
    if event == "expired":
        if order.status == OrderStatus.pending:
            order.status = OrderStatus.expired
    elif event == "async_failed":
        order.status = OrderStatus.failed
    elif details.payment_status in ("paid", "no_payment_required") or event == "async_succeeded":
        user = _buyer(session, order, details, outcome)
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
) -> Order | None:
    """Record a refund; a full refund revokes access for good. None when no order matches yet."""
    order = _order_for_payment(session, payment_intent)
    if order is None:
        return None
    order.amount_refunded = max(order.amount_refunded, amount_refunded)
    if receipt_url and not order.receipt_url:
        order.receipt_url = receipt_url[:500]
    if fully and order.status != OrderStatus.disputed:
        order.status = OrderStatus.refunded
    if fully:
        revoked = _revoke(session, order, "refunded")
        log.info("order.refunded", order=order.number, revoked=revoked)
    order.updated_at = utcnow()
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


def apply_dispute(*, session: Session, payment_intent: str) -> Order | None:
    """A chargeback: revoke access and flag the order. None when no order matches yet."""
    order = _order_for_payment(session, payment_intent)
    if order is None:
        return None
    order.status = OrderStatus.disputed
    order.flagged = True
    revoked = _revoke(session, order, "disputed")
    log.warning("order.disputed", order=order.number, revoked=revoked)
    order.updated_at = utcnow()
    session.add(order)
    session.flush()
    return order


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
